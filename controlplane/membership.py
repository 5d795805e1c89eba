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
            return Membership(**raw)
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as err:
            raise NodeError(
                f"{path} is damaged ({err}); remove {path.parent} to start this node afresh"
            ) from err

    def save(self, path: Path) -> None:
        write_atomic(path, json.dumps(asdict(self), indent=2).encode())
