"""`swarmlab gossip run`: a standalone gossip node process, until SIGTERM.

Workers and managers embed a `GossipNode` in the node process (`node.py`); this runs one on
its own, for labs and tests of the gossip layer: it joins the networks and writes the NetworkDB
entries it is given, and answers `swarmlab gossip view`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, field

from controlplane.gossip.config import PROFILES
from controlplane.gossip.keyring import Keyring
from controlplane.gossip.networkdb import NetworkDBConfig
from controlplane.gossip.node import GossipNode, GossipOptions
from controlplane.gossip.types import Address, NodeMeta

log = logging.getLogger("controlplane.gossip")


@dataclass(frozen=True)
class Entry:
    network: str
    table: str
    key: str
    value: str

    @classmethod
    def parse(cls, text: str) -> Entry:
        """NETWORK/TABLE/KEY=VALUE"""
        path, sep, value = text.partition("=")
        parts = path.split("/")
        if not sep or len(parts) != 3 or not all(parts):
            raise ValueError(f"{text!r} is not NETWORK/TABLE/KEY=VALUE")
        return cls(parts[0], parts[1], parts[2], value)


@dataclass(frozen=True)
class GossipRun:
    name: str
    listen: Address
    advertise: Address
    seeds: list[Address]
    profile: str = "lab"
    role: str = "worker"
    keys: list[bytes] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    data_path_addr: str = ""  # default: the advertise host
    data_path_port: int = 4789
    platform: str = "linux/amd64"  # OS/arch, as the data path tells Windows nodes apart
    await_keys: bool = False  # a swarm member: gossip only once the managers' keys arrive


def build_options(run: GossipRun) -> GossipOptions:
    if run.profile not in PROFILES:
        raise ValueError(
            f"unknown gossip profile {run.profile!r}; use one of {', '.join(PROFILES)}"
        )
    keyring = Keyring(run.keys[0], run.keys[1:]) if run.keys else None
    meta = NodeMeta(
        node_id=run.name,
        role=run.role,
        advertise_addr=run.advertise[0],
        data_path_addr=run.data_path_addr or run.advertise[0],
        data_path_port=run.data_path_port,
        platform=run.platform,
    )
    networkdb = NetworkDBConfig.lab() if run.profile == "lab" else NetworkDBConfig()
    return GossipOptions(
        name=run.name,
        listen=run.listen,
        advertise=run.advertise,
        meta=meta,
        config=PROFILES[run.profile],
        networkdb=networkdb,
        keyring=keyring,
        await_keys=run.await_keys,
    )


async def run_gossip_node(run: GossipRun) -> None:
    node = GossipNode(build_options(run))
    await node.start(run.seeds)
    for network in sorted({*run.networks, *(e.network for e in run.entries)}):
        node.join_network(network)
    for entry in run.entries:
        node.create_entry(entry.network, entry.table, entry.key, entry.value.encode())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("event=gossip_leaving name=%s", run.name)
    await node.stop(leave=True)
