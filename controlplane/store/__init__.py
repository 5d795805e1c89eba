"""Replicated cluster store: typed tables of Swarm objects, transactions applied from Raft."""
