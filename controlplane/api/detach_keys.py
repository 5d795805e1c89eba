"""Detach keys: the key sequence that, typed into an attached TTY, detaches the client and
leaves the process running (dockerd's default Ctrl-P Ctrl-Q; `--detach-keys` on `docker run`,
`attach` and `exec`, sent as the `detachKeys` query parameter or an exec's `DetachKeys`).

The format is Docker's: keys separated by commas, each a single character or `ctrl-<c>` with
<c> one of `@`, `a`-`z`, `[`, `\\`, `]`, `^`, `_` (lower case, as Docker's parser wants).

`DetachWatch` follows a client's input as dockerd's escape proxy does: bytes that could begin
the sequence are held back until it is complete (detach: they are never delivered) or broken
(they are delivered late), so a sequence split across reads is found and no half of it leaks.
"""

from __future__ import annotations

import string

DEFAULT_DETACH_KEYS = b"\x10\x11"  # Ctrl-P Ctrl-Q
_CONTROLS = "@" + string.ascii_lowercase + "[\\]^_"  # ctrl-@ is 0, ctrl-a 1, ... ctrl-_ 31


def parse_detach_keys(text: str) -> bytes:
    """The bytes of a `--detach-keys` value (the default for ""); ValueError naming the key
    Docker's parser would refuse."""
    if not text:
        return DEFAULT_DETACH_KEYS
    codes = bytearray()
    for key in text.split(","):
        if len(key) == 1:
            codes += key.encode()
        elif key.startswith("ctrl-") and len(key) == 6 and key[5] in _CONTROLS:
            codes.append(_CONTROLS.index(key[5]))
        else:
            raise ValueError(f"Unknown character: '{key}'")
    return bytes(codes)


class DetachWatch:
    """One attached client's input, watched for the detach sequence."""

    def __init__(self, keys: bytes = DEFAULT_DETACH_KEYS) -> None:
        self._keys = keys
        self._held = b""  # the start of the sequence, typed so far
        self.detached = False

    def feed(self, data: bytes) -> bytes:
        """What of `data` goes on to the process; sets `detached` once the sequence is
        complete (nothing after it is delivered)."""
        out = bytearray()
        for byte in data:
            if self.detached:
                break
            candidate = self._held + bytes((byte,))
            if self._keys.startswith(candidate):
                self._held = candidate
                self.detached = candidate == self._keys
                continue
            out += self._held
            self._held = b""
            if self._keys.startswith(bytes((byte,))):  # a broken sequence may restart here
                self._held = bytes((byte,))
            else:
                out.append(byte)
        return bytes(out)
