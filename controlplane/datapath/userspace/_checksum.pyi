# The optional C extension built from _checksum.c (see checksum.py, which falls back to Python).

def word_sum(data: bytes, /) -> int:
    """The 16-bit ones' complement sum of data's big-endian 16-bit words (RFC 1071)."""
