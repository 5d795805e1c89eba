"""The overlay data path: the program each node computes (`program.py`, pure) and the backends
that carry it out."""
