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
