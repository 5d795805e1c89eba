"""A swarm of node processes on loopback, formed as a user would: `swarm init` on the first
manager, then `swarm join` with the manager or worker token on the others, all through the
Engine API.

Addresses: manager-i is 127.77.<lab>.(10+i), worker-j is 127.77.<lab>.(100+j), each with the
real ports (2375 API, 2377 swarm). Emulated Windows workers (`windows-k`, `--platform windows`)
are 127.77.<lab>.(200+k). With `datapath="kernel"` the nodes program their overlays in the
kernel, each data path in its own namespace on an underlay the lab makes
(`kernel_underlay.py`), joined with `--data-path-addr` on it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

from controlplane.lab.engine import EngineClient
from controlplane.lab.kernel_underlay import KernelUnderlay, default_prefix
from controlplane.lab.processes import NodeProcess

T = TypeVar("T")


HOST_BASE = {"manager": 10, "worker": 100, "windows": 200}
# How many nodes of each kind fit before their addresses would run into the next kind's
# (or past .254).
MOST_NODES = {"manager": 89, "worker": 99, "windows": 54}


def node_host(role: str, n: int, lab: int = 0) -> str:
    """The address of the `n`th node of `role` ("manager", "worker", "windows")."""
    return f"127.77.{lab}.{HOST_BASE[role] + n}"


async def until(
    check: Callable[[], Awaitable[T | Literal[False] | None]],
    timeout: float,
    what: str,
    interval: float = 0.1,
) -> T:
    """Poll `check` until it answers, or fail naming `what`. None and False both mean "not
    yet": a check written as a predicate (`return count >= 3`) would otherwise pass on its
    first False and the wait would check nothing. Other answers (an empty list, 0) are
    returned as they are."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = await check()
            if result is not None and result is not False:
                return result
        except NodeExited:
            raise
        except Exception as err:  # a node still starting: keep polling
            last = err
        await asyncio.sleep(interval)
    raise TimeoutError(
        f"timed out after {timeout:.0f} s waiting for {what}" + (f" ({last})" if last else "")
    )


class NodeExited(RuntimeError):
    """A node process ended while the lab waited for it: polling on cannot help."""


class SwarmLab:
    def __init__(
        self,
        root: Path,
        managers: int = 3,
        workers: int = 2,
        lab: int = 0,
        profile: str = "lab",
        *,
        windows_workers: int = 0,
        key_rotation_interval: float | None = None,
        datapath: str = "userspace",
        kernel_prefix: str = "",
        api_sockets: bool = False,
        udp_offloads: bool = True,
    ) -> None:
        """`kernel_prefix` starts the kernel mode's namespace names (default `swk<lab>`);
        `api_sockets` serves each node's Engine API on `<its data dir>/docker.sock` too;
        `udp_offloads=False` starts the nodes with `--no-udp-offloads`."""
        if managers < 1:
            raise ValueError("a swarm needs at least one manager")
        if workers < 0 or windows_workers < 0:
            raise ValueError("worker counts cannot be negative")
        if datapath not in ("userspace", "kernel"):
            raise ValueError(f"unknown data path {datapath!r}; use userspace or kernel")
        if not 0 <= lab <= 255:
            raise ValueError(f"lab {lab}: a lab number is the third byte of 127.77.LAB.x, 0-255")
        kinds = (("manager", managers), ("worker", workers), ("windows", windows_workers))
        for kind, count in kinds:
            if count > MOST_NODES[kind]:
                raise ValueError(
                    f"{count} {kind} nodes do not fit in the lab's addresses: at most "
                    f"{MOST_NODES[kind]} (127.77.{lab}.{HOST_BASE[kind] + 1} onwards)"
                )
        self.root = root
        self.lab = lab
        self.underlay = (
            KernelUnderlay(lab, kernel_prefix or default_prefix(lab))
            if datapath == "kernel"
            else None
        )
        self.nodes: list[NodeProcess] = [
            NodeProcess(
                f"{kind}-{n}",
                node_host(kind, n, lab),
                root / f"{kind}-{n}",
                profile,
                # Only managers rotate keys; Windows workers are emulated by a platform flag.
                key_rotation_interval=key_rotation_interval if kind == "manager" else None,
                platform="windows" if kind == "windows" else "linux",
                api_socket=api_sockets,
                extra=self._kernel_arguments(f"{kind}-{n}")
                + ([] if udp_offloads else ["--no-udp-offloads"]),
            )
            for kind, count in kinds
            for n in range(1, count + 1)
        ]

    def _kernel_arguments(self, name: str) -> list[str]:
        return self.underlay.node_arguments(name) if self.underlay else []

    def data_path_spec(self, node: NodeProcess) -> dict[str, str]:
        """The swarm init/join fields putting the node's overlay on the kernel underlay."""
        if self.underlay is None:
            return {}
        return {"DataPathAddr": self.underlay.datapath_address(node.address)}

    @property
    def managers(self) -> list[NodeProcess]:
        return [n for n in self.nodes if n.name.startswith("manager-")]

    def node(self, name: str) -> NodeProcess:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(
            f"no node named {name!r}; the lab has {', '.join(n.name for n in self.nodes)}"
        )

    def engine(self, node: NodeProcess | str) -> EngineClient:
        target = self.node(node) if isinstance(node, str) else node
        return EngineClient(target.api)

    async def wait_api(self, node: NodeProcess, timeout: float = 30.0) -> None:
        async def answering() -> bool | None:
            if not node.alive():
                raise NodeExited(f"{node.name} exited: {node.startup_error()}")
            async with self.engine(node) as engine:
                return True if await engine.ping() else None

        await until(answering, timeout, f"{node.name}'s Engine API")

    async def up(self, progress: Callable[[str], None] = lambda _line: None) -> None:
        """Start every node, init the swarm on manager-1 and join the others."""
        if self.underlay is not None:
            self.underlay.create([(n.name, n.address) for n in self.nodes])
            progress(f"kernel underlay 10.201.{self.lab}.0/24 made")
        for node in self.nodes:
            node.start()
        await asyncio.gather(*(self.wait_api(n) for n in self.nodes))
        progress("engines answering")
        first = self.nodes[0]
        async with self.engine(first) as engine:
            await engine.swarm_init(first.address, **self.data_path_spec(first))
            progress(f"{first.name}: swarm initialized")
            tokens = await engine.join_tokens()
        manager_addr = f"{first.address}:2377"
        for node in self.nodes[1:]:
            role = "Manager" if node.name.startswith("manager-") else "Worker"
            async with self.engine(node) as engine:
                await engine.swarm_join(
                    manager_addr, tokens[role], node.address, **self.data_path_spec(node)
                )
            progress(f"{node.name}: joined as a {role.lower()}")
        await until(self.gossip_converged, 60, "every node's gossip to see every node alive")
        progress("gossip converged")

    async def gossip_converged(self) -> bool | None:
        """True once every node's gossip sees all the lab's nodes alive: until then a
        container started on a node may miss names its peers published (Docker's nodes are
        long in the cluster by the time a user runs one)."""
        for node in self.nodes:
            async with self.engine(node) as engine:
                view = await engine.gossip()
            alive = [m for m in view.get("members", []) if m["state"] == "alive"]
            if len(alive) < len(self.nodes):
                return None
        return True

    async def node_list(self, via: NodeProcess | None = None) -> list[dict[str, Any]]:
        for node in [via] if via else self.managers:
            if not node.alive():
                continue
            try:
                async with self.engine(node) as engine:
                    return await engine.nodes()
            except Exception:
                continue
        raise RuntimeError("no manager answered")

    async def leader_view(self) -> tuple[NodeProcess, list[dict[str, Any]]] | None:
        """The leader and its `/nodes`, or None while there is no leader. Only the leader's
        list is complete: a follower answers from its own Raft view, where the other
        followers' reachability is "unknown"."""
        for manager in self.managers:
            if not manager.alive():
                continue
            try:
                async with self.engine(manager) as engine:
                    rows = await engine.nodes()
            except Exception:
                continue
            leaders = [
                r["Description"]["Hostname"]
                for r in rows
                if r.get("ManagerStatus", {}).get("Leader")
            ]
            if leaders == [manager.name]:
                return manager, rows
        return None

    async def all_ready(self) -> NodeProcess | None:
        """The leader once every node is Ready and every manager reachable, a Raft voter and
        a follower of that leader by its own account, else None. A manager that just joined
        is reachable while still a learner: killing the leader then would leave the voters
        without a majority (chaos waits for this)."""
        view = await self.leader_view()
        if view is None:
            return None
        leader, rows = view
        ready = len(rows) == len(self.nodes) and all(r["Status"]["State"] == "ready" for r in rows)
        reachable = all(
            r.get("ManagerStatus", {}).get("Reachability") == "reachable"
            for r in rows
            if r["Spec"]["Role"] == "manager"
        )
        if not (ready and reachable):
            return None
        async with self.engine(leader) as engine:
            status = await engine.raft()
        voters = [m for m in status["members"] if not m["learner"]]
        if len(voters) != len(self.managers):
            return None
        for manager in self.managers:
            if manager is not leader and not await self._follows(manager, status["leader"]):
                return None
        return leader

    async def _follows(self, manager: NodeProcess, leader_id: str) -> bool:
        """Whether `manager` answers and names `leader_id` as its leader. A new leader counts
        every peer as reachable for an election timeout, even one whose process is still
        starting: killing the leader then would leave no majority for seconds."""
        try:
            async with self.engine(manager) as engine:
                return bool((await engine.raft())["leader"] == leader_id)
        except Exception:
            return False

    def start(self) -> None:
        """Restart processes of an existing lab (they resume from their state directories)."""
        for node in self.nodes:
            if not node.alive():
                node.start()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.remove_underlay()

    def kill_all(self) -> None:
        for node in self.nodes:
            node.kill()
        self.remove_underlay()

    def remove_underlay(self) -> None:
        if self.underlay is not None:
            self.underlay.remove()
