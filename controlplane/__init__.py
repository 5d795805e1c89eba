"""Swarmlab: a Docker Swarm control-plane emulator (Raft, SWIM gossip, overlay data path)."""

import os

# gRPC's fork support runs its handlers in a forked child, which aborts there (SIGABRT, exit
# 134) when the node spawns a kernel-mode container's process while gRPC threads are busy.
# The node only ever forks to exec a program, so it needs none of them. Set here, before any
# module imports grpc (which reads it once, at its first import).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
