"""Swarmlab: a Docker Swarm control-plane emulator (Raft, SWIM gossip, overlay data path)."""
