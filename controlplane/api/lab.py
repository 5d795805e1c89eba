"""The lab's admin API on each node's 2375, under `/swarmlab/` (no Docker path starts so):

- `GET /swarmlab/faults`: the fault plan this node runs with (`controlplane/faults.py`);
- `PUT /swarmlab/faults`: replace it (the body is a plan as GET returns it; absent fields mean
  no fault of that kind, `{}` heals);
- `GET /swarmlab/raft`: this manager's Raft state (role, term, commit, applied, leader,
  members); a worker has none and answers 404;
- `GET /swarmlab/gossip`: this node's gossip view (members and their state, NetworkDB
  tables, drops), as `swarmlab gossip view` prints it; 404 outside a swarm;
- `GET /swarmlab/datapath`: this node's data path program (`datapath/program.py`): segments,
  forwarding and neighbour entries, SAs, and the same as the kernel's tools would show it;
  then the backend's counters (frames in/out, drops by reason per segment).

`swarmlab partition/heal/delay/loss/status` drive these on every node of a lab.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web

from controlplane.api.common import json_body, json_response
from controlplane.api.errors import bad_request, not_found
from controlplane.datapath.node_datapath import render_counters
from controlplane.datapath.program import Program, render
from controlplane.faults import FAULTS, FaultPlan, FaultPlanError, Faults
from controlplane.pb import raft_pb2

log = logging.getLogger("controlplane.api.lab")


class RaftStatusSource(Protocol):
    """What `/swarmlab/raft` reads (the Raft driver of a manager)."""

    def status(self) -> raft_pb2.StatusResponse: ...


class ProgramSource(Protocol):
    """What `/swarmlab/datapath` reads (the node's data path state)."""

    @property
    def program(self) -> Program: ...

    def counters(self) -> dict[str, Any]: ...

    def vips_text(self) -> str: ...

    def kernel_view(self) -> str: ...


class GossipViewSource(Protocol):
    """What `/swarmlab/gossip` reads (the node's gossip member)."""

    def view(self) -> dict[str, Any]: ...


FAULTS_KEY: web.AppKey[Faults] = web.AppKey("lab_faults")
RAFT_KEY: web.AppKey[Callable[[], RaftStatusSource | None]] = web.AppKey("lab_raft")
GOSSIP_KEY: web.AppKey[Callable[[], GossipViewSource | None]] = web.AppKey("lab_gossip")
DATAPATH_KEY: web.AppKey[Callable[[], ProgramSource | None]] = web.AppKey("lab_datapath")


def register(
    app: web.Application,
    raft: Callable[[], RaftStatusSource | None],
    gossip: Callable[[], GossipViewSource | None],
    faults: Faults = FAULTS,
    datapath: Callable[[], ProgramSource | None] = lambda: None,
) -> web.Application:
    """Add the lab routes to `app`; `raft` gives the Raft driver while the node is a
    manager, `gossip` its gossip member while it is in a swarm (None otherwise)."""
    app[FAULTS_KEY] = faults
    app[RAFT_KEY] = raft
    app[GOSSIP_KEY] = gossip
    app[DATAPATH_KEY] = datapath
    app.router.add_get("/swarmlab/faults", _get_faults)
    app.router.add_put("/swarmlab/faults", _put_faults)
    app.router.add_get("/swarmlab/raft", _get_raft)
    app.router.add_get("/swarmlab/gossip", _get_gossip)
    app.router.add_get("/swarmlab/datapath", _get_datapath)
    return app


async def _get_faults(request: web.Request) -> web.Response:
    return json_response(request.app[FAULTS_KEY].plan.to_json())


async def _put_faults(request: web.Request) -> web.Response:
    try:
        plan = FaultPlan.from_json(await json_body(request))
    except FaultPlanError as err:
        raise bad_request(f"invalid fault plan: {err}") from None
    faults = request.app[FAULTS_KEY]
    faults.install(plan)
    shown = plan.to_json()
    log.info("event=faults_installed plan=%s", json.dumps(shown, separators=(",", ":")))
    return json_response(shown)


async def _get_raft(request: web.Request) -> web.Response:
    source = request.app[RAFT_KEY]()
    if source is None:
        raise not_found(
            "this node is not a manager: it holds no Raft state; ask a manager "
            "(`swarmlab status` shows which nodes are)"
        )
    return json_response(raft_json(source.status()))


async def _get_gossip(request: web.Request) -> web.Response:
    source = request.app[GOSSIP_KEY]()
    if source is None:
        raise not_found("this node is not in a swarm, so it does not gossip")
    return json_response(source.view())


async def _get_datapath(request: web.Request) -> web.Response:
    source = request.app[DATAPATH_KEY]()
    if source is None:
        raise not_found("this node is not in a swarm, so it has no overlay data path")
    program = source.program
    counters = source.counters()
    return json_response(
        {
            "node": program.node.node_id,
            "vtep": f"{program.node.vtep}:{program.node.port}",
            "platform": program.node.platform,
            "segments": [
                {
                    "network": seg.name,
                    "network_id": seg.network_id,
                    "vni": seg.vni,
                    "mtu": seg.mtu,
                    "encrypted": seg.encrypted,
                    "local": [ep.name for ep in seg.local],
                    "peers": list(seg.peers),
                    "fdb": len(seg.fdb),
                    "platform_note": seg.platform_note,
                    "unreachable": [
                        {"name": u.name, "ip": u.ip, "node": u.node_id, "platform": u.platform}
                        for u in seg.unreachable
                    ],
                }
                for seg in sorted(program.segments.values(), key=lambda s: s.vni)
            ],
            "sas": len(program.sas),
            "counters": counters,
            "text": render(program).rstrip("\n")
            + "\n\n"
            + render_counters(counters)
            + source.vips_text()
            + source.kernel_view(),
        }
    )


def raft_json(status: raft_pb2.StatusResponse) -> dict[str, Any]:
    return {
        "node_id": f"{status.node_id:016x}",
        "role": status.role,
        "term": status.term,
        "commit": status.commit,
        "applied": status.applied,
        "leader": f"{status.leader:016x}" if status.leader else "",
        "members": [
            {"node_id": f"{m.node_id:016x}", "address": m.address, "learner": m.learner}
            for m in status.members
        ],
    }
