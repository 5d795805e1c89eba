"""The MSS a peer's SYN announces, read from TCP options a container's peer may get wrong: a
well-formed MSS is found among other options; a malformed list yields None (the stack then
uses the default MSS), never an exception or a read past the options."""

from __future__ import annotations

import pytest

from controlplane.datapath.userspace.frames import tcp_mss_from, tcp_mss_option

NOP, END = b"\x01", b"\x00"
WINDOW_SCALE = b"\x03\x03\x07"
SACK_PERMITTED = b"\x04\x02"


@pytest.mark.parametrize(
    ("options", "mss"),
    [
        (tcp_mss_option(1460), 1460),
        (NOP + NOP + WINDOW_SCALE + tcp_mss_option(1410), 1410),
        (SACK_PERMITTED + NOP + NOP + tcp_mss_option(536) + END, 536),
        (b"", None),
        (NOP * 4, None),
        (END + tcp_mss_option(1460), None),  # after the end of the list
        (WINDOW_SCALE + NOP, None),  # no MSS
        (b"\x02", None),  # kind without its length
        (b"\x02\x04\x05", None),  # MSS cut short
        (b"\x02\x03\x05\xb4", None),  # MSS with the wrong length
        (b"\x08\x00" + tcp_mss_option(1460), None),  # a zero length would loop forever
        (b"\x08\x01" + tcp_mss_option(1460), None),  # as would a length below 2
        (b"\x08\x28" + tcp_mss_option(1460), None),  # a length past the options
    ],
)
def test_the_mss_is_read_from_well_formed_options_only(options: bytes, mss: int | None) -> None:
    assert tcp_mss_from(options) == mss
