"""Numbers as users type them (query parameters, ports, versions) and the ranges protobuf
fields hold, checked before `int()` or a protobuf setter raises on them."""

from __future__ import annotations

INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1


def is_number(text: str) -> bool:
    """Only ASCII digits, as Go's strconv.ParseUint takes them: `str.isdigit()` also says yes
    to '²', which `int()` refuses, so a check with it alone lets a ValueError through."""
    return text.isascii() and text.isdigit()
