"""Raft consensus for the managers: a sans-IO core, durable storage, gRPC transport, driver."""
