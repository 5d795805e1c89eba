"""The `swarmlab` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from google.protobuf import json_format

from controlplane.client import ManagerClient
from controlplane.pb import raft_pb2

DEFAULT_MANAGER = "127.77.0.11:2377"


class CommandError(Exception):
    """A user-facing failure: printed as `Error: ...` with exit status 1."""


def _address(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT (e.g. 127.77.0.11:2377)")
    return value


def _label(value: str) -> tuple[str, str]:
    key, sep, val = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{value!r} is not KEY=VALUE")
    return key, val


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
    run.add_argument("--log-file", type=Path, help="write events here instead of stderr")

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

    demo = commands.add_parser("demo", help="three managers, writes, SIGKILL of the leader")
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
        f"node       {status.node_id:x}",
        f"cluster    {status.cluster_id:x}",
        f"role       {status.role}",
        f"term       {status.term}",
        f"leader     {status.leader:x}" if status.leader else "leader     (none)",
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
            print(f"removed {node_id:x}")
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


def _format_listing(objects: object) -> str:
    data = json_format.MessageToDict(objects)  # type: ignore[arg-type]
    lines = [f"{'KIND':<9} {'ID':<26} NAME"]
    for field, items in sorted(data.items()):
        for item in items:
            name = item.get("spec", {}).get("annotations", {}).get("name", "")
            lines.append(f"{field.rstrip('s'):<9} {item.get('id', ''):<26} {name}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "manager":
            from controlplane.node import ManagerOptions, run_manager

            _setup_logging(args.verbose, args.log_file)
            listen = args.listen
            advertise = args.advertise or (None if listen.startswith("0.0.0.0") else listen)
            if advertise is None:
                raise CommandError("--advertise is needed when listening on 0.0.0.0")
            options = ManagerOptions(
                data_dir=args.data_dir,
                listen=listen,
                advertise=advertise,
                join=args.join,
                profile=args.profile,
                snapshot_interval=args.snapshot_interval,
            )
            asyncio.run(run_manager(options))
            return 0
        _setup_logging(args.verbose)
        if args.command == "demo":
            from controlplane.lab.raft_demo import run_demo

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
