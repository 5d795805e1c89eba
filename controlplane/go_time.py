"""Times as dockerd writes them (Go's time.RFC3339Nano): in API bodies and in json-file logs."""

from __future__ import annotations

from datetime import UTC, datetime


def go_time(ns: int) -> str:
    """RFC 3339 with nanoseconds and trailing zeros dropped, as Go's time.RFC3339Nano."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    base = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    frac = f"{nanos:09d}".rstrip("0")
    return f"{base}.{frac}Z" if frac else f"{base}Z"
