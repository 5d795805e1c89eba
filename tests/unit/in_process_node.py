"""Engines in the test's own process (`SwarmNode`), started before a scenario and stopped
after it, whatever it raised."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from controlplane.api.backend import SwarmInit
from controlplane.node import NodeOptions, SwarmNode


def run_node(options: NodeOptions, scenario: Callable[[SwarmNode], Awaitable[None]]) -> None:
    async def main() -> None:
        node = SwarmNode(options)
        await node.start()
        try:
            await scenario(node)
        finally:
            await node.stop()

    asyncio.run(main())


def run_manager(data_dir: Path, address: str, scenario: Callable[[str], Awaitable[None]]) -> None:
    """An engine at `address` that made itself the manager of a new swarm; `scenario` gets
    its Engine API (host:2375)."""

    async def init_then(node: SwarmNode) -> None:
        await node.swarm_init(SwarmInit())
        await scenario(f"{address}:2375")

    run_node(NodeOptions(data_dir, address, dns_upstreams=[]), init_then)
