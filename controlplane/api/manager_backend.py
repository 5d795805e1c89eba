"""The Engine API's backend in a manager process: the Raft driver and this replica's store."""

from __future__ import annotations

import socket

from controlplane.api.backend import ManagerInfo, NodeInfo
from controlplane.raft.driver import RaftDriver
from controlplane.raft.types import Role
from controlplane.store import Store

WRITE_TIMEOUT = 30.0  # Swarm's API blocks a write while a new leader is being elected
READ_TIMEOUT = 10.0


class ManagerBackend:
    def __init__(self, driver: RaftDriver, store: Store, advertise_host: str) -> None:
        self._driver = driver
        self._store = store
        self._host = advertise_host
        self._hostname = socket.gethostname()

    @property
    def store(self) -> Store:
        return self._store

    async def propose(self, data: bytes) -> bytes:
        _index, result = await self._driver.propose(data, WRITE_TIMEOUT)
        return result

    async def linearizable_read(self) -> None:
        await self._driver.linearizable_read(READ_TIMEOUT)

    def node_info(self) -> NodeInfo:
        driver = self._driver
        members = driver.members
        return NodeInfo(
            node_id=f"{driver.node_id:x}",
            hostname=self._hostname,
            addr=self._host,
            role="manager",
            is_leader=driver.core.role is Role.LEADER,
            cluster_id=f"{driver.cluster_id:x}",
            managers=tuple(
                ManagerInfo(node_id=f"{node:x}", addr=address)
                for node, address in sorted(members.items())
            ),
            nodes=len(members),
        )
