"""Swarmlab: a Docker Swarm control-plane emulator (Raft, SWIM gossip, overlay data path)."""

import os

# gRPC's fork support runs its handlers in a forked child, which aborts there (SIGABRT, exit
# 134) when the node spawns a kernel-mode container's process while gRPC threads are busy.
# The node only ever forks to exec a program, so it needs none of them. Set here, before any
# module imports grpc (which reads it once, at its first import).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

# gRPC's `pollset_alternative` experiment: the thread grpc.aio runs to take gRPC's completions
# for the event loop waits on them without an I/O pollset, which gRPC's EventEngine threads (they
# do the I/O) had to kick for every completion. Measured A/B with 64 writers (bench/README.md,
# `bench/raft.py`, session 8): the leader's context switches per write -28%. Like the line
# above, it must be set before grpc is first imported.
os.environ.setdefault("GRPC_EXPERIMENTS", "pollset_alternative")
