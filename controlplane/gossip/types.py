"""Plain value types of the SWIM gossip layer: members, wire messages and core outputs.

The sans-IO core (`swim.py`) works on these frozen dataclasses; `codec.py` turns them into the
protobuf messages of `protos/controlplane/v1/gossip.proto` at the transport edge. Every field a
peer needs is here, so the codec is a one-to-one mapping with no knowledge of the protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum

Address = tuple[str, int]
"""(host, port) of a member's gossip endpoint (UDP and TCP share it, 7946 in Swarm)."""


class MemberState(IntEnum):
    """SWIM member states. The order matters: at equal incarnation a higher state wins."""

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3  # dead by its own graceful leave: not a failure, its entries go immediately

    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class NodeMeta:
    """What a member tells the cluster about itself (Swarm's node record, as NetworkDB needs)."""

    node_id: str
    role: str  # "manager" or "worker"
    advertise_addr: str
    data_path_addr: str
    data_path_port: int = 4789
    platform: str = "linux/amd64"


@dataclass(frozen=True, slots=True)
class Member:
    """One node's view of a member; `state_change` is the local time of its last state change."""

    name: str
    addr: Address
    incarnation: int
    state: MemberState
    meta: NodeMeta
    state_change: float


# ---- wire messages (UDP packets) ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ping:
    """Direct probe. `target` lets a node that took over an address refuse a stale probe."""

    seq: int
    target: str
    source: str
    source_addr: Address


@dataclass(frozen=True, slots=True)
class IndirectPing:
    """Ask the receiver to probe `target` for `source`; with `nack` it answers Nack on failure
    (Lifeguard), so `source` can tell "target dead" from "my own links are bad"."""

    seq: int
    target: str
    target_addr: Address
    nack: bool
    source: str
    source_addr: Address


@dataclass(frozen=True, slots=True)
class Ack:
    seq: int


@dataclass(frozen=True, slots=True)
class Nack:
    seq: int


@dataclass(frozen=True, slots=True)
class Alive:
    name: str
    incarnation: int
    addr: Address
    meta: NodeMeta


@dataclass(frozen=True, slots=True)
class Suspect:
    """`source` is the member that suspects `name` (confirmations are counted per source)."""

    name: str
    incarnation: int
    source: str


@dataclass(frozen=True, slots=True)
class Dead:
    """`source == name` means a graceful leave (the member declared itself gone)."""

    name: str
    incarnation: int
    source: str


@dataclass(frozen=True, slots=True)
class UserMsg:
    """An opaque payload for the layer above (NetworkDB), piggybacked like membership news."""

    data: bytes


Message = Ping | IndirectPing | Ack | Nack | Alive | Suspect | Dead | UserMsg


@dataclass(frozen=True, slots=True)
class Packet:
    """One datagram: several messages from `sender` (a member name), processed in order."""

    sender: str
    messages: tuple[Message, ...]


# ---- push-pull (TCP) ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MemberRecord:
    """A member as exchanged in a full-state push-pull."""

    name: str
    addr: Address
    incarnation: int
    state: MemberState
    meta: NodeMeta


@dataclass(frozen=True, slots=True)
class PushPull:
    """A full-state exchange. `join` marks the one a joining node sends to its seeds (the layer
    above then sends its whole state back); `sender` is the member name of the side sending it."""

    join: bool
    members: tuple[MemberRecord, ...]
    user_state: bytes
    sender: str = ""


# ---- outputs of the core, drained by the driver with `SwimNode.take_outputs()` -----------------


class EventKind(StrEnum):
    JOIN = "join"  # first heard of, alive
    UPDATE = "update"  # alive, with new metadata or address
    SUSPECT = "suspect"
    ALIVE_AGAIN = "alive-again"  # refuted a suspicion, or came back from dead with a higher inc.
    DEAD = "dead"
    LEFT = "left"
    REAPED = "reaped"  # forgotten after GossipToTheDeadTime


@dataclass(frozen=True, slots=True)
class SendPacket:
    """Send `packet` over UDP (or TCP when it does not fit a datagram after encoding)."""

    dst: Address
    packet: Packet


@dataclass(frozen=True, slots=True)
class PushPullRequest:
    """Open a TCP push-pull with `dst`; report its answer (or None) to `push_pull_result`."""

    dst: Address
    request: PushPull


@dataclass(frozen=True, slots=True)
class TcpPing:
    """Send `ping` over a TCP connection to `dst` and wait up to `timeout` seconds for the Ack
    with its seq on the same connection; report to `tcp_ping_result` (memberlist's fallback
    probe: a member whose UDP is lossy or blocked but who is alive is not suspected)."""

    dst: Address
    ping: Ping
    timeout: float


@dataclass(frozen=True, slots=True)
class MemberEvent:
    kind: EventKind
    member: Member


@dataclass(frozen=True, slots=True)
class UserMessage:
    """A `UserMsg` payload received from member `sender`."""

    sender: str
    data: bytes


@dataclass(frozen=True, slots=True)
class UserState:
    """The layer above's state received in a push-pull from `sender` (a member name)."""

    sender: str
    data: bytes
    join: bool


Output = SendPacket | PushPullRequest | TcpPing | MemberEvent | UserMessage | UserState
