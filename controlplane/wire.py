"""Decoding helpers shared by the protobuf codecs (Raft, gossip): one error type for every
malformed input, with a message that says where and what."""

from __future__ import annotations

from enum import IntEnum
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

PbT = TypeVar("PbT", bound=Message)
EnumT = TypeVar("EnumT", bound=IntEnum)


class CodecError(ValueError):
    """Bytes or protobuf values that do not describe a valid message of ours."""


def parse_pb(cls: type[PbT], data: bytes, what: str) -> PbT:
    """Parse `data` as a `cls` message; `what` names it in the error."""
    msg = cls()
    try:
        msg.ParseFromString(data)
    except DecodeError as exc:
        raise CodecError(
            f"{what}: {len(data)} bytes do not parse as {cls.__name__}: {exc}"
        ) from exc
    return msg


def enum_value(cls: type[EnumT], value: int, what: str) -> EnumT:
    """`cls(value)`, or a CodecError naming the unknown value."""
    try:
        return cls(value)
    except ValueError:
        raise CodecError(f"{what}: unknown {cls.__name__} value {value}") from None


def varint(value: int) -> bytes:
    """Protobuf's base-128 varint encoding of a non-negative integer."""
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def length_delimited(number: int, data: bytes) -> bytes:
    """One length-delimited protobuf field (wire type 2): how a message, bytes or string
    field with field number `number` is framed, so encoded parts can be concatenated."""
    return varint(number << 3 | 2) + varint(len(data)) + data
