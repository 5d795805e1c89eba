"""Deterministic simulation: a virtual clock and a simulated network with faults."""
