"""The agent every node runs: a session to the managers, its assigned tasks, and the
emulated container runtime they run in."""
