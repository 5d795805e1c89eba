"""The `swarmlab` command line."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format

from controlplane.client import ManagerClient
from controlplane.lab.chaos_schedule import FAULT_KINDS
from controlplane.numbers import is_number
from controlplane.pb import raft_pb2

UDP_OFFLOADS_HELP = (
    "userspace data path: send and read one VXLAN datagram per system call, without UDP "
    "GSO/GRO (slower; a capture on lo then shows every frame as its own datagram, where a "
    "GSO run shows as one datagram of up to 64 KiB)"
)

if TYPE_CHECKING:
    from controlplane.gossip.service import Entry
    from controlplane.lab.control import LabState

DEFAULT_MANAGER = "127.77.0.11:2377"


class CommandError(Exception):
    """A user-facing failure: printed as `Error: ...` with exit status 1."""


def _address(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not is_number(port) or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT (e.g. 127.77.0.11:2377)")
    return value


def _host(value: str) -> str:
    """A node's own address: an IP address or a host name, without a port (every port of the
    node binds to it)."""
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if not value or ":" in value or value.replace(".", "").isdigit():
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an IP address or host name without a port (e.g. 127.77.0.11)"
        )
    return value


def _label(value: str) -> tuple[str, str]:
    key, sep, val = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{value!r} is not KEY=VALUE")
    return key, val


def _positive_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"{value!r}: give a positive number of seconds")
    return seconds


def _hex_key(value: str) -> bytes:
    try:
        key = bytes.fromhex(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a hex key") from None
    if len(key) not in (16, 24, 32):
        raise argparse.ArgumentTypeError(f"a key is 16, 24 or 32 bytes; this one is {len(key)}")
    return key


def _entry(value: str) -> Entry:
    from controlplane.gossip.service import Entry

    try:
        return Entry.parse(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host, int(port)


def _dns_upstreams(values: list[str] | None) -> list[tuple[str, int]] | None:
    if not values:
        return None
    if values == ["none"]:
        return []
    upstreams = []
    for value in values:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not is_number(port):
            raise CommandError(f"--dns-upstream {value!r}: give HOST:PORT (e.g. 127.0.0.53:53)")
        upstreams.append((host, int(port)))
    return upstreams


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="swarmlab", description="A Docker Swarm control-plane emulator."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log events to stderr")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    manager = commands.add_parser("manager", help="run a manager process")
    manager_cmds = manager.add_subparsers(dest="action", required=True, metavar="ACTION")
    run = manager_cmds.add_parser("run", help="run a manager (init, join or restart)")
    run.add_argument("--data-dir", type=Path, required=True, help="state directory")
    run.add_argument("--listen", type=_address, default="0.0.0.0:2377", help="gRPC address")
    run.add_argument("--advertise", type=_address, help="address others reach us at")
    run.add_argument("--join", type=_address, help="join the cluster of this manager")
    run.add_argument("--profile", choices=["lab", "swarm"], default="lab", help="Raft timing")
    run.add_argument(
        "--snapshot-interval", type=int, default=10_000, help="entries between snapshots"
    )
    run.add_argument(
        "--api-listen", type=_address, help="Docker Engine API address (default HOST:2375)"
    )
    run.add_argument("--hostname", help="the node's hostname in `docker node ls`")
    run.add_argument("--log-file", type=Path, help="write events here instead of stderr")

    node = commands.add_parser("node", help="run a swarm node (an emulated Docker engine)")
    node_cmds = node.add_subparsers(dest="action", required=True, metavar="ACTION")
    nrun = node_cmds.add_parser(
        "run", help="run a node; `docker swarm init/join` against its API makes it a member"
    )
    nrun.add_argument("--data-dir", type=Path, required=True, help="state directory")
    nrun.add_argument(
        "--address",
        type=_host,
        required=True,
        help="this host's address (2377, 7946, 4789 bind to it)",
    )
    nrun.add_argument(
        "--api-listen", type=_address, help="Docker Engine API address (default ADDRESS:2375)"
    )
    nrun.add_argument(
        "--api-socket",
        type=Path,
        metavar="PATH",
        help="serve the Engine API on this unix socket too (the docker CLI detaches from "
        "`run -it`/`attach` with Ctrl-P Ctrl-Q over a socket, not over tcp://)",
    )
    nrun.add_argument("--hostname", help="the node's hostname in `docker node ls`")
    nrun.add_argument("--profile", choices=["lab", "swarm"], default="lab", help="timings")
    nrun.add_argument(
        "--platform",
        choices=["linux", "windows"],
        default="linux",
        help="the emulated host's OS (windows: no overlay encryption, no talk with linux tasks "
        "on encrypted overlays)",
    )
    nrun.add_argument(
        "--key-rotation-interval",
        type=_positive_seconds,
        metavar="SECONDS",
        help="rotate the network keys this often while this manager leads "
        "(default: the profile's, 12 h for swarm)",
    )
    nrun.add_argument(
        "--dns-upstream",
        action="append",
        metavar="HOST:PORT|none",
        help="where containers' other names are resolved (default: the host's resolv.conf; "
        "'none': answer NXDOMAIN)",
    )
    nrun.add_argument(
        "--datapath",
        choices=["userspace", "kernel"],
        default="userspace",
        help="overlay data path: userspace (any OS, no privileges) or kernel (Linux, root: "
        "namespaces, bridges, VXLAN, nftables)",
    )
    nrun.add_argument(
        "--datapath-netns",
        metavar="NAME",
        help="kernel data path: the network namespace holding the data path address "
        "(default: the node's own)",
    )
    nrun.add_argument(
        "--datapath-prefix",
        default="swk-",
        metavar="PREFIX",
        help="kernel data path: the start of every namespace name it makes (unique per node)",
    )
    nrun.add_argument(
        "--no-udp-offloads",
        dest="udp_offloads",
        action="store_false",
        help=UDP_OFFLOADS_HELP,
    )
    nrun.add_argument("--log-file", type=Path, help="write events here instead of stderr")

    lab_dir = argparse.ArgumentParser(add_help=False)
    lab_dir.add_argument(
        "--lab-dir", type=Path, help="where the lab lives (default $SWARMLAB_HOME/lab)"
    )
    lup = commands.add_parser("up", parents=[lab_dir], help="start a lab swarm on loopback")
    lup.add_argument("--managers", type=int, default=3)
    lup.add_argument("--workers", type=int, default=2)
    lup.add_argument(
        "--windows-workers",
        type=int,
        default=0,
        help="emulated Windows workers (windows-1 is 127.77.LAB.201, ...)",
    )
    lup.add_argument("--profile", choices=["lab", "swarm"], default="lab", help="timings")
    lup.add_argument("--lab", type=int, default=0, help="use addresses 127.77.LAB.x")
    lup.add_argument(
        "--datapath",
        choices=["userspace", "kernel"],
        default="userspace",
        help="the nodes' overlay data path (kernel: Linux, root; each node's data path in its "
        "own namespace on an underlay bridge, 10.201.LAB.x)",
    )
    lup.add_argument(
        "--no-udp-offloads", dest="udp_offloads", action="store_false", help=UDP_OFFLOADS_HELP
    )
    lup.add_argument(
        "--key-rotation-interval",
        type=_positive_seconds,
        metavar="SECONDS",
        help="the managers rotate the network keys this often (default: the profile's); "
        "`swarmlab restart` keeps it",
    )
    commands.add_parser("down", parents=[lab_dir], help="stop the lab")
    lstatus = commands.add_parser("status", parents=[lab_dir], help="the lab's nodes")
    lstatus.add_argument("--json", action="store_true")
    lenv = commands.add_parser("env", parents=[lab_dir], help="point the docker CLI at a node")
    lenv.add_argument("node")
    lenv.add_argument(
        "--unix",
        action="store_true",
        help="over the node's unix socket (where `docker run -it` detaches with Ctrl-P Ctrl-Q)",
    )
    lkill = commands.add_parser("kill", parents=[lab_dir], help="SIGKILL a node")
    lkill.add_argument("node", nargs="?")
    lkill.add_argument("--leader", action="store_true", help="kill whichever manager leads")
    lrestart = commands.add_parser("restart", parents=[lab_dir], help="restart a node")
    lrestart.add_argument("node")
    ldatapath = commands.add_parser(
        "datapath", parents=[lab_dir], help="a node's programmed overlay data path"
    )
    ldatapath.add_argument("node")
    ldatapath.add_argument("--json", action="store_true")
    llogs = commands.add_parser("logs", parents=[lab_dir], help="a node's event log")
    llogs.add_argument("node")
    lpartition = commands.add_parser(
        "partition",
        parents=[lab_dir],
        help="cut groups of nodes from each other (nodes not named stay connected)",
    )
    lpartition.add_argument(
        "groups", nargs="+", metavar="GROUPS", help="e.g. manager-1,worker-1 / manager-2,manager-3"
    )
    commands.add_parser(
        "heal", parents=[lab_dir], help="remove every partition, delay and loss from the lab"
    )
    ldelay = commands.add_parser(
        "delay", parents=[lab_dir], help="delay what a node sends (0 removes the delay)"
    )
    ldelay.add_argument("node")
    ldelay.add_argument("duration", help="e.g. 200ms or 1.5s")
    ldelay.add_argument("--jitter", default="0", help="each delay varies by up to this, e.g. 50ms")
    ldelay.add_argument("--to", metavar="NODE", help="only what it sends to this node")
    lloss = commands.add_parser(
        "loss", parents=[lab_dir], help="lose a share of what a node sends (0%% removes it)"
    )
    lloss.add_argument("node")
    lloss.add_argument("percent", help="e.g. 10%%")
    lloss.add_argument("--to", metavar="NODE", help="only what it sends to this node")
    commands.add_parser(
        "failover",
        parents=[lab_dir],
        help="SIGKILL the leader; time the election and the first write after it",
    )

    chaos = commands.add_parser(
        "chaos", help="a seeded soak: random faults, a workload, then invariant checks"
    )
    chaos_cmds = chaos.add_subparsers(dest="action", required=True, metavar="ACTION")
    crun = chaos_cmds.add_parser(
        "run",
        parents=[lab_dir],
        help="play a seeded fault schedule on the running lab under a workload, then check it",
        description="Play a seeded random schedule of faults on the running lab (`swarmlab "
        "up`) while clients create and remove networks and services through the managers; "
        "then heal everything, wait for the swarm to converge and check the invariants "
        "(acknowledged writes kept, nothing allocated twice, one leader, equal Raft applied "
        "indexes, every node Ready, replicas running, gossip whole). Exit status 1 when a "
        "check fails, with the command that replays the seed. The same seed on a lab of the "
        "same shape gives the same schedule (which faults hit which nodes, in which order, "
        "for how long); the timing "
        "of the real processes under it is not deterministic, so a replay is not an exact "
        "rerun.",
    )
    crun.add_argument("--seed", type=int, help="the schedule's seed (default: a random one)")
    crun.add_argument("--duration", default="60s", help="how long faults go on, e.g. 60s or 2m")
    crun.add_argument(
        "--faults",
        default=",".join(FAULT_KINDS),
        help=f"the kinds of fault to draw from (default {','.join(FAULT_KINDS)})",
    )
    crun.add_argument(
        "--allow-quorum-loss",
        action="store_true",
        help="let a phase take away more managers than the swarm can lose and keep quorum",
    )
    crun.add_argument(
        "--converge-timeout",
        type=_positive_seconds,
        default=120.0,
        metavar="SECONDS",
        help="how long the healed swarm has to pass every check",
    )
    crun.add_argument(
        "--json", action="store_true", help="print a JSON report (the progress goes to stderr)"
    )

    raft = commands.add_parser("raft", help="inspect and change Raft membership")
    raft_cmds = raft.add_subparsers(dest="action", required=True, metavar="ACTION")
    status = raft_cmds.add_parser("status", help="one manager's view of Raft")
    status.add_argument("--manager", type=_address, default=DEFAULT_MANAGER)
    status.add_argument("--json", action="store_true")
    remove = raft_cmds.add_parser("remove", help="remove a manager from the cluster")
    remove.add_argument("node_id", help="Raft node id (hex, as `raft status` shows)")
    remove.add_argument("--manager", type=_address, default=DEFAULT_MANAGER)

    store = commands.add_parser("store", help="write and read the replicated store")
    store_cmds = store.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = store_cmds.add_parser("create-network", help="create a network object")
    create.add_argument("name")
    create.add_argument("--label", type=_label, action="append", default=[])
    create.add_argument("--manager", type=_address, default=DEFAULT_MANAGER)
    ls = store_cmds.add_parser("ls", help="list objects")
    ls.add_argument("kind", nargs="?", default="", help="node, network, service, task, cluster")
    ls.add_argument("--manager", type=_address, default=DEFAULT_MANAGER)
    ls.add_argument(
        "--linearizable", action="store_true", help="confirm with a quorum before answering"
    )
    ls.add_argument("--json", action="store_true")

    gossip = commands.add_parser("gossip", help="SWIM gossip and NetworkDB on 7946")
    gossip_cmds = gossip.add_subparsers(dest="action", required=True, metavar="ACTION")
    grun = gossip_cmds.add_parser("run", help="run a standalone gossip node")
    grun.add_argument("--name", required=True, help="node name (unique in the cluster)")
    grun.add_argument("--listen", type=_address, required=True, help="UDP+TCP address, :7946")
    grun.add_argument("--advertise", type=_address, help="address others reach us at")
    grun.add_argument("--join", type=_address, action="append", default=[], help="seed node")
    grun.add_argument("--profile", choices=["lab", "lan"], default="lab", help="gossip timing")
    grun.add_argument("--role", choices=["manager", "worker"], default="worker")
    grun.add_argument("--key", type=_hex_key, action="append", default=[], help="AES key, hex")
    grun.add_argument("--network", action="append", default=[], help="join this network")
    grun.add_argument(
        "--entry", type=_entry, action="append", default=[], help="NETWORK/TABLE/KEY=VALUE"
    )
    grun.add_argument("--log-file", type=Path, help="write events here instead of stderr")
    gview = gossip_cmds.add_parser(
        "view",
        help="one node's gossip view (a swarm node's 7946 is sealed with the managers' keys: "
        "see it with `swarmlab status` or GET /swarmlab/gossip on its Engine API)",
    )
    gview.add_argument("--node", type=_address, required=True, help="the node's 7946 address")
    gview.add_argument("--key", type=_hex_key, action="append", default=[], help="AES key, hex")
    gview.add_argument("--json", action="store_true")

    demo = commands.add_parser(
        "demo", help="the overlay scenario on a fresh 3+2 lab, narrated (make demo)"
    )
    demo.add_argument("--state-dir", type=Path, help="keep the managers' state here")
    return parser


def _setup_logging(verbose: bool, log_file: Path | None = None) -> None:
    handler: logging.Handler = (
        logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(
        level=logging.INFO if (verbose or log_file) else logging.WARNING, handlers=[handler]
    )


def format_status(status: raft_pb2.StatusResponse) -> str:
    lines = [
        f"node       {status.node_id:016x}",
        f"cluster    {status.cluster_id:016x}",
        f"role       {status.role}",
        f"term       {status.term}",
        f"leader     {status.leader:016x}" if status.leader else "leader     (none)",
        f"commit     {status.commit}    applied {status.applied}    last {status.last_index}"
        f"    snapshot {status.snapshot_index}",
        "",
        f"{'MEMBER':<18} {'ADDRESS':<22} {'SUFFRAGE':<9} MATCH",
    ]
    for member in status.members:
        match = status.match.get(member.node_id)
        suffrage = "learner" if member.learner else "voter"
        shown = "-" if match is None else str(match)
        lines.append(f"{member.node_id:<18x} {member.address:<22} {suffrage:<9} {shown}")
    return "\n".join(lines)


async def _run_client(args: argparse.Namespace) -> int:
    async with ManagerClient(args.manager) as client:
        if args.command == "raft" and args.action == "status":
            status = await client.status()
            if args.json:
                print(json_format.MessageToJson(status))
            else:
                print(format_status(status))
        elif args.command == "raft" and args.action == "remove":
            try:
                node_id = int(args.node_id, 16)
            except ValueError:
                raise CommandError(f"{args.node_id!r} is not a hex node id") from None
            await client.remove_manager(node_id)
            print(f"removed {node_id:016x}")
        elif args.command == "store" and args.action == "create-network":
            response = await client.create_network(args.name, dict(args.label))
            if not response.result.ok:
                raise CommandError(response.result.error)
            print(f"created network {args.name} at index {response.index}")
        elif args.command == "store" and args.action == "ls":
            listing = await client.list(args.kind, linearizable=args.linearizable)
            if args.json:
                print(json_format.MessageToJson(listing))
            else:
                print(_format_listing(listing.objects))
    return 0


def _gossip_keys_line(view: dict[str, Any]) -> str:
    """The key ids (hashes) a node gossips with: what a rotation changes."""
    if view.get("awaiting_keys"):
        return "keys: none yet (waiting for the managers' keys; joins nobody until then)"
    keys = view.get("keys", [])
    if not keys:
        return "keys: none (plaintext)"
    return f"keys: primary {keys[0]}" + (
        f"  also accepted {', '.join(keys[1:])}" if keys[1:] else ""
    )


def format_gossip_view(view: dict[str, Any]) -> str:
    lines = [
        f"node {view['name']}  incarnation {view['incarnation']}  "
        f"health {view['health_score']}  encrypted {'yes' if view['encrypted'] else 'no'}",
        _gossip_keys_line(view),
        "",
    ]
    width = max([14, *(len(m["name"]) + 1 for m in view["members"])])  # node ids are 25 long
    lines.append(f"{'MEMBER':<{width}} {'ADDRESS':<22} {'STATE':<8} {'INCARNATION':<14} ROLE")
    for m in view["members"]:
        lines.append(
            f"{m['name']:<{width}} {m['address']:<22} {m['state']:<8} "
            f"{m['incarnation']:<14} {m['role']}"
        )
    for network, info in sorted(view["networks"].items()):
        lines += ["", f"network {network}  peers: {', '.join(info['peers']) or '-'}"]
        lines.append(f"  {'TABLE':<12} {'KEY':<16} {'VALUE':<20} {'OWNER':<12} {'LTIME':<6} STATE")
        for e in info["entries"]:
            state = "deleted" if e["deleted"] else "hidden" if e["hidden"] else "live"
            lines.append(
                f"  {e['table']:<12} {e['key']:<16} {e['value']:<20} {e['owner']:<12} "
                f"{e['ltime']:<6} {state}"
            )
    if view["drops"]:
        dropped = ", ".join(f"{k}={v}" for k, v in sorted(view["drops"].items()))
        lines += ["", f"dropped: {dropped}"]
    for title, counters in (
        ("swim", view["swim_counters"]),
        ("networkdb", view["networkdb_stats"]),
    ):
        shown = ", ".join(f"{k}={v}" for k, v in sorted(counters.items()) if v)
        lines += ["", f"{title}: {shown or 'nothing yet'}"]
    return "\n".join(lines)


def _format_listing(objects: object) -> str:
    data = json_format.MessageToDict(objects)  # type: ignore[arg-type]
    lines = [f"{'KIND':<9} {'ID':<26} NAME"]
    for field, items in sorted(data.items()):
        for item in items:
            name = item.get("spec", {}).get("annotations", {}).get("name", "")
            lines.append(f"{field.rstrip('s'):<9} {item.get('id', ''):<26} {name}")
    return "\n".join(lines)


LAB_COMMANDS = frozenset(
    {
        "up",
        "down",
        "status",
        "env",
        "kill",
        "restart",
        "logs",
        "partition",
        "heal",
        "delay",
        "loss",
        "failover",
        "datapath",
        "chaos",
    }
)


async def _run_lab(args: argparse.Namespace) -> int:
    from controlplane.lab import control

    lab_dir = args.lab_dir or control.default_lab_dir()
    if args.command == "up":
        if args.managers < 1 or args.workers < 0 or args.windows_workers < 0:
            raise CommandError("a lab needs at least one manager and no negative worker count")
        state = await control.up(
            lab_dir,
            args.managers,
            args.workers,
            args.profile,
            args.lab,
            print,
            windows_workers=args.windows_workers,
            datapath=args.datapath,
            key_rotation_interval=args.key_rotation_interval,
            udp_offloads=args.udp_offloads,
        )
        print(control.format_status(await control.status_rows(state)))
        print(f"\n{control.env(state, state.nodes[0].name)}")
        return 0
    if args.command == "down":
        stopped = control.down(lab_dir)
        print(f"stopped {', '.join(stopped)}" if stopped else "no node was running")
        return 0
    state = control.LabState.load(lab_dir)
    if args.command == "chaos":
        return await _run_chaos_soak(args, lab_dir, state)
    if args.command == "status":
        rows = await control.status_rows(state)
        print(json.dumps(rows, indent=2) if args.json else control.format_status(rows))
    elif args.command == "env":
        print(control.env(state, args.node, unix=args.unix))
    elif args.command == "kill":
        if bool(args.node) == bool(args.leader):
            raise CommandError("name one node, or use --leader")
        name = await control.leader_name(state) if args.leader else args.node
        node = control.kill(state, name)
        print(f"killed {node.name} (pid {node.pid}) with SIGKILL")
    elif args.command == "restart":
        node = await control.restart(lab_dir, state, args.node)
        print(f"restarted {node.name} (pid {node.pid})")
    elif args.command == "logs":
        print((Path(state.node(args.node).data_dir) / "events.log").read_text(), end="")
    elif args.command == "datapath":
        from controlplane.lab.engine import EngineClient

        async with EngineClient(state.node(args.node).api, timeout=10) as engine:
            shown = await engine.datapath()
        print(json.dumps(shown, indent=2) if args.json else shown["text"])
    else:
        await _run_chaos(args, state)
    return 0


async def _run_chaos(args: argparse.Namespace, state: LabState) -> None:
    from controlplane.lab import chaos, control

    names = {n.address: n.name for n in state.nodes}
    if args.command == "partition":
        groups = chaos.parse_groups(args.groups, [n.name for n in state.nodes])
        skipped = await control.partition(state, groups)
        print("partitioned: " + " / ".join(",".join(g) for g in groups))
        if skipped:
            print(f"not running, so not partitioned: {', '.join(skipped)}")
    elif args.command == "heal":
        healed = await control.heal(state)
        print(f"healed {', '.join(healed)}: no partition, delay or loss left")
    elif args.command in ("delay", "loss"):
        if args.command == "delay":
            shaping = (chaos.parse_duration(args.duration), chaos.parse_duration(args.jitter))
            plan = await control.shape(state, args.node, delay=shaping, toward=args.to)
        else:
            loss = chaos.parse_percent(args.percent)
            plan = await control.shape(state, args.node, loss=loss, toward=args.to)
        print(f"{args.node}: {control.describe_plan(plan, names) or 'no fault'}")
    elif args.command == "failover":
        r = await control.failover(state)
        print(f"{r.old_leader} led (term {r.old_term}); killed it with SIGKILL")
        print(f"{r.new_leader} leads now (term {r.new_term})")
        print(f"new leader elected after     {r.elected_after:.2f} s")
        print(
            f"first write succeeded after  {r.written_after:.2f} s "
            f"(network create through {r.written_through})"
        )
        print(
            f"(timings of the {r.profile!r} profile; "
            f"`swarmlab restart {r.old_leader}` brings it back)"
        )


async def _run_chaos_soak(args: argparse.Namespace, lab_dir: Path, state: LabState) -> int:
    import random

    from controlplane.lab.chaos import parse_run_duration
    from controlplane.lab.chaos_run import ChaosOptions, run_chaos
    from controlplane.lab.chaos_schedule import parse_fault_kinds

    options = ChaosOptions(
        seed=args.seed if args.seed is not None else random.randrange(1, 1_000_000),
        duration=parse_run_duration(args.duration),
        kinds=parse_fault_kinds(args.faults),
        allow_quorum_loss=args.allow_quorum_loss,
        converge_timeout=args.converge_timeout,
    )

    def progress(line: str) -> None:
        print(line, file=sys.stderr if args.json else sys.stdout, flush=True)

    report = await run_chaos(
        lab_dir, state, options, progress, show_lab_dir=args.lab_dir is not None
    )
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    return 0 if report.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "manager":
            from controlplane import raft_lab

            _setup_logging(args.verbose, args.log_file)
            listen = args.listen
            advertise = args.advertise or (None if listen.startswith("0.0.0.0") else listen)
            if advertise is None:
                raise CommandError("--advertise is needed when listening on 0.0.0.0")
            options = raft_lab.ManagerOptions(
                data_dir=args.data_dir,
                listen=listen,
                advertise=advertise,
                join=args.join,
                profile=args.profile,
                snapshot_interval=args.snapshot_interval,
                api_listen=args.api_listen,
                **({"hostname": args.hostname} if args.hostname else {}),
            )
            raft_lab.main(options)
            return 0
        if args.command == "node":
            from controlplane.node import NodeOptions
            from controlplane.node import main as node_main

            _setup_logging(args.verbose, args.log_file)
            node_options = NodeOptions(
                dns_upstreams=_dns_upstreams(args.dns_upstream),
                data_dir=args.data_dir,
                address=args.address,
                api_listen=args.api_listen or "",
                api_socket=args.api_socket,
                profile=args.profile,
                platform=args.platform,
                key_rotation_interval=args.key_rotation_interval,
                datapath=args.datapath,
                datapath_netns=args.datapath_netns,
                datapath_prefix=args.datapath_prefix,
                udp_offloads=args.udp_offloads,
                **({"hostname": args.hostname} if args.hostname else {}),
            )
            node_main(node_options)
            return 0
        if args.command == "gossip" and args.action == "run":
            from controlplane.gossip.service import GossipRun, run_gossip_node

            _setup_logging(args.verbose, args.log_file)
            listen = _host_port(args.listen)
            advertise = _host_port(args.advertise) if args.advertise else listen
            run = GossipRun(
                name=args.name,
                listen=listen,
                advertise=advertise,
                seeds=[_host_port(a) for a in args.join],
                profile=args.profile,
                role=args.role,
                keys=args.key,
                networks=args.network,
                entries=args.entry,
            )
            asyncio.run(run_gossip_node(run))
            return 0
        _setup_logging(args.verbose)
        if args.command == "gossip" and args.action == "view":
            from controlplane.gossip.keyring import Keyring
            from controlplane.gossip.node import query_view

            keyring = Keyring(args.key[0], args.key[1:]) if args.key else None
            view = asyncio.run(query_view(_host_port(args.node), keyring))
            print(json.dumps(view, indent=2) if args.json else format_gossip_view(view))
            return 0
        if args.command in LAB_COMMANDS:
            return asyncio.run(_run_lab(args))
        if args.command == "demo":
            from controlplane.lab.demo import run_demo

            return asyncio.run(run_demo(args.state_dir))
        return asyncio.run(_run_client(args))
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # every failure reaches the user as one clear line
        if args.verbose:
            logging.exception("command failed")
        print(f"Error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
