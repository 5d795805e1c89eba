"""A swarm node's membership as it keeps it in `swarm.json`: enough to resume its role after a
restart (written atomically, with fsync)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from controlplane.durable import write_atomic
from controlplane.process import NodeError


@dataclass
class Membership:
    """What `swarm.json` keeps: enough to resume the node's role after a restart."""

    node_id: str
    cluster_id: str
    role: str  # "manager" | "worker"
    listen_addr: str
    advertise_addr: str
    data_path_addr: str
    managers: list[str]  # 2377 addresses known to this node
    data_path_port: int = 4789  # the swarm's VXLAN port

    @staticmethod
    def load(path: Path) -> Membership | None:
        try:
            raw = json.loads(path.read_text())
            return Membership(**raw)._checked()
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as err:
            raise NodeError(
                f"{path} is damaged ({err}); remove {path.parent} to start this node afresh"
            ) from err

    def _checked(self) -> Membership:
        """Itself, if every field has its type: a hand-edited file with `"managers": "a:2377"`
        would otherwise resume the node with nonsense (a manager address per character)."""
        texts = (self.node_id, self.cluster_id, self.listen_addr, self.advertise_addr)
        if not all(isinstance(t, str) for t in (*texts, self.data_path_addr)):
            raise TypeError("an id or address is not a string")
        if self.role not in ("manager", "worker"):
            raise TypeError(f"role {self.role!r} is neither manager nor worker")
        if not isinstance(self.managers, list) or not all(
            isinstance(a, str) for a in self.managers
        ):
            raise TypeError("managers is not a list of addresses")
        if isinstance(self.data_path_port, bool) or not isinstance(self.data_path_port, int):
            raise TypeError("data_path_port is not a number")
        return self

    def save(self, path: Path) -> None:
        write_atomic(path, json.dumps(asdict(self), indent=2).encode())
