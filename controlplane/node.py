"""The node process (`swarmlab node run`): one emulated host, a Docker-like engine.

It serves the Engine API on 2375 from the start, outside any swarm, and becomes a manager or a
worker through the API (`docker swarm init`, `docker swarm join --token ...`), as dockerd does.
Its state directory keeps its swarm membership (`swarm.json`), its key and certificates
(`certificates/`) and, on managers, the Raft log (`raft/`); after SIGKILL a restart resumes
from it. All 2377 traffic is mutual TLS with certificates of the swarm's root CA. (The
Raft-only `swarmlab manager run` is in `raft_lab.py`.)
"""

from __future__ import annotations

import asyncio
import logging
import platform
import shutil
import socket
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import grpc
import uvloop
from aiohttp import web

from controlplane.agent.agent import Agent
from controlplane.agent.attachment_ledger import ATTACHMENTS_FILE, AttachmentLedger
from controlplane.agent.host_stack import HostInterface, HostNetwork, bridge_port
from controlplane.agent.local_network_ids import LOCAL_NETWORKS_FILE, LocalNetworkIds
from controlplane.agent.network import Stack
from controlplane.agent.runtime import ContainerState, Runtime
from controlplane.agent.standalone import StandaloneContainers, Swarm
from controlplane.agent.task_files import remove_tree
from controlplane.api import containers as containers_api
from controlplane.api import events as events_api
from controlplane.api import lab as lab_api
from controlplane.api import logs as logs_api
from controlplane.api import networks as networks_api
from controlplane.api import system as system_api
from controlplane.api.app import create_app
from controlplane.api.backend import LocalState, NodeInfo, RaftMembers, SwarmInit, SwarmJoin
from controlplane.api.errors import (
    NO_SWARM_MESSAGE,
    NOT_IN_SWARM_MESSAGE,
    SWARM_EXISTS_MESSAGE,
    ApiError,
    not_a_manager,
)
from controlplane.api.manager_backend import ManagerBackend
from controlplane.api.predefined_networks import (
    BUILTIN,
    GWBRIDGE,
    LocalNetwork,
    bridge_interfaces,
    local_networks,
)
from controlplane.datapath.attachments import ENDPOINT_TABLE
from controlplane.datapath.host_ports import DEFAULT_BRIDGE, HostPorts
from controlplane.datapath.kernel import KernelBackend, kernel_datapath_unavailable
from controlplane.datapath.node_datapath import NodeDataPath
from controlplane.datapath.program import DataPathKey, NodeView
from controlplane.datapath.userspace import DataPathError
from controlplane.durable import write_atomic
from controlplane.event_hub import EventHub
from controlplane.faults import FAULTS
from controlplane.faults_grpc import FaultInterceptor, client_interceptors
from controlplane.gossip.node import GossipNode
from controlplane.gossip.service import GossipRun, build_options
from controlplane.ids import new_engine_id, new_object_id, raft_cluster_id
from controlplane.join import Joined, JoinError, join, renew
from controlplane.machine import this_machine
from controlplane.manager import ca, keymanager
from controlplane.manager import cluster as clusters
from controlplane.manager.authz import RoleInterceptor, caller_node_id
from controlplane.manager.ca_service import NodeCAService
from controlplane.manager.dispatcher import HEARTBEAT_PERIODS, DispatcherService, driver_raft_view
from controlplane.manager.keymanager import KeyManager
from controlplane.manager.leader import LeaderLoops
from controlplane.manager.log_subscriber import LogSubscriber
from controlplane.manager.logbroker import LogBroker
from controlplane.manager.predefined_networks import ensure_predefined
from controlplane.manager.removed_nodes import RemovedNodes
from controlplane.manager.role import ManagerRole, ManagerSettings, ManagerStartError
from controlplane.manager.role_manager import RoleManager
from controlplane.manager.store_events import StoreEvents
from controlplane.membership import Membership
from controlplane.node_local_networks import predefined_networks
from controlplane.numbers import is_number
from controlplane.pb import ca_pb2, objects_pb2, raft_pb2
from controlplane.pb.logbroker_pb2 import LogMessage, SubscribeLogsRequest
from controlplane.pb.objects_pb2 import Network, NetworkSpec, Node
from controlplane.process import NodeError, serve_api, until_signalled
from controlplane.raft.driver import PROFILES, RaftDriver, new_id
from controlplane.raft.recovery import force_new_cluster
from controlplane.raft.transport import TLS_OPTIONS, Credentials
from controlplane.raft.types import Role
from controlplane.raft_lab import keep_startup_objects_out_of_gc
from controlplane.store import Store, Transaction

log = logging.getLogger("controlplane.node")

SWARM_PORT = 2377
# Seconds a container gets between SIGTERM and SIGKILL: Docker's 10 s, shorter in the lab so a
# scale-down or an update does not wait on programs that ignore SIGTERM (sleep, sh).
STOP_GRACE = {"swarm": 10.0, "lab": 2.0}
GOSSIP_PORT = 7946
STATE_FILE = "swarm.json"
ENGINE_ID_FILE = "engine-id"
PLATFORMS = ("linux", "windows")
DATAPATHS = ("userspace", "kernel")


# ---- swarm node ----------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeOptions:
    data_dir: Path
    address: str  # this host's address: 2377, 7946 and 4789 bind to it unless told otherwise
    api_listen: str = ""  # default: address:2375
    api_socket: Path | None = None  # the Engine API on this unix socket too
    hostname: str = field(default_factory=socket.gethostname)
    profile: str = "lab"
    # Where containers' names that no swarm holds are forwarded: None means the host's
    # /etc/resolv.conf (as Docker), an empty list answers NXDOMAIN (a self-contained lab).
    dns_upstreams: list[tuple[str, int]] | None = None
    # The emulated host's OS ("linux" or "windows"): `docker node inspect` Platform.OS,
    # `/info` OSType, placement constraints, and the data path's platform rule.
    platform: str = "linux"
    # Seconds between rotations of the network keys while this manager leads; None: the
    # profile's (Swarm's 12 hours, minutes in the lab).
    key_rotation_interval: float | None = None
    # "userspace" (any OS) or "kernel" (Linux, root: devices in namespaces named after
    # `datapath_prefix`; the data path address lives in namespace `datapath_netns`).
    datapath: str = "userspace"
    datapath_netns: str | None = None
    datapath_prefix: str = "swk-"
    udp_offloads: bool = True  # userspace data path: UDP GSO/GRO where the kernel has them

    @property
    def api(self) -> str:
        return self.api_listen or f"{self.address}:2375"


class SwarmNode:
    """One engine; see the module docstring. It is its own Engine API backend and swarm
    control: the API's answers follow the role the node plays at that moment."""

    def __init__(self, options: NodeOptions) -> None:
        if options.profile not in PROFILES:
            raise NodeError(
                f"unknown timing profile {options.profile!r}; use one of {', '.join(PROFILES)}"
            )
        if options.platform not in PLATFORMS:
            raise NodeError(
                f"unknown platform {options.platform!r}; use one of {', '.join(PLATFORMS)}"
            )
        if options.key_rotation_interval is not None and not options.key_rotation_interval > 0:
            raise NodeError(
                f"the key rotation interval must be a positive number of seconds,"
                f" got {options.key_rotation_interval}"
            )
        if options.datapath not in DATAPATHS:
            raise NodeError(
                f"unknown data path {options.datapath!r}; use one of {', '.join(DATAPATHS)}"
            )
        if options.datapath == "kernel":
            missing = kernel_datapath_unavailable()
            if missing:
                raise NodeError(f"--datapath kernel: {missing}; run with --datapath userspace")
        self.options = options
        self.machine = this_machine()
        FAULTS.local_host = options.address  # named in this node's calls (faults_grpc.py)
        self.membership: Membership | None = None
        self.engine_id = ""  # `docker info`'s ID, read or made at `start`
        self.manager: ManagerRole | None = None
        self._manager_backend: ManagerBackend | None = None
        self.dispatcher: DispatcherService | None = None
        self.log_broker: LogBroker | None = None
        self._log_subscriber: LogSubscriber | None = None
        self.agent: Agent | None = None
        self._leader_watch: asyncio.Task[None] | None = None
        self._store_events: asyncio.Task[None] | None = None
        self._role_change: asyncio.Task[None] | None = None
        self._error = ""  # why the node could not resume its swarm role
        self.gossip: GossipNode | None = None
        self.datapath: NodeDataPath | None = None
        # `docker events`: what the runtime, the exec sessions and (on a manager) the store do.
        self.events = EventHub()
        self.events.network_names = self._network_name
        # `docker run` containers: they outlive role changes, not the process.
        self.containers = StandaloneContainers(
            Runtime(
                files_root=options.data_dir / "task-files",
                events=self.events,
                volumes_root=options.data_dir / "volumes",
                containers_root=options.data_dir / "containers",
            ),
            AttachmentLedger(options.data_dir / ATTACHMENTS_FILE),
            # userspace: the node's docker0 (kernel mode has a real one in a swarm)
            None if options.datapath == "kernel" else HostPorts(options.address, DEFAULT_BRIDGE),
            LocalNetworkIds(options.data_dir / LOCAL_NETWORKS_FILE),
        )
        for name in BUILTIN:  # made at the engine's start, as dockerd makes them
            self.containers.local_network_ids.get(name)
        self._empty = Store()
        self._api_runner: web.AppRunner | None = None
        self._busy = asyncio.Lock()  # init, join and leave one at a time

    @property
    def _state_path(self) -> Path:
        return self.options.data_dir / STATE_FILE

    @property
    def _cert_dir(self) -> Path:
        return self.options.data_dir / "certificates"

    def _engine_id(self) -> str:
        """The engine's id, made at its first start and kept in its state directory (as
        dockerd keeps its key), whatever swarm it joins or leaves."""
        path = self.options.data_dir / ENGINE_ID_FILE
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            engine_id = new_engine_id()
            write_atomic(path, engine_id.encode())
            return engine_id

    async def start(self) -> None:
        self.options.data_dir.mkdir(parents=True, exist_ok=True)
        self.engine_id = self._engine_id()
        # Containers do not outlive the process: the secrets and configs that kernel-mode
        # containers of a killed one (SIGKILL, no exit path ran) left on disk go now.
        remove_tree(self.containers.runtime.files_root)
        self.membership = Membership.load(self._state_path)
        if self.membership is not None:
            try:
                await self._resume(self.membership)
            except (ApiError, NodeError) as err:
                # As dockerd: the engine stays up with the swarm in "error" state, so the user
                # can see why (`docker info`) and `docker swarm leave --force`.
                await self._stop_roles()
                self._error = str(err)
                log.error("event=swarm_resume_failed error=%s", err)
        app = lab_api.register(
            logs_api.register(
                system_api.register(
                    containers_api.register(
                        events_api.register(create_app(self, self), self.events), self.containers
                    ),
                    self.containers,
                ),
                self,
            ),
            self._raft_driver,
            lambda: self.gossip,
            datapath=lambda: self.datapath,
        )
        app[networks_api.LOCAL_NETWORKS] = lambda: self.datapath

        def node_networks() -> list[LocalNetwork]:
            return local_networks(
                swarm=self.datapath is not None,
                kernel=self.options.datapath == "kernel",
                ids=self.containers.local_network_ids,
            )

        app[networks_api.NODE_NETWORKS] = node_networks
        self.containers.runtime.host = HostNetwork(
            self.options.address,
            self.options.hostname,
            lambda: bridge_interfaces(node_networks()),
            self._bridge_gateways,
            self._bridge_ports,
        )
        self._api_runner = await serve_api(app, self.options.api, self.options.api_socket)

    def _bridge_gateways(self) -> list[Stack]:
        """The node's interfaces on its userspace bridges (docker0, and docker_gwbridge in a
        swarm), through which its host-mode containers reach the containers there."""
        return [bridge.gateway() for _, bridge in self._userspace_bridges()]

    def _userspace_bridges(self) -> list[tuple[str, HostPorts]]:
        """The node's userspace bridges by device name (kernel mode has real ones)."""
        bridges = []
        if self.containers.bridge is not None:
            bridges.append(("docker0", self.containers.bridge))
        if self.datapath is not None and self.options.datapath != "kernel":
            bridges.append((GWBRIDGE, self.datapath.host_ports))
        return bridges

    def _bridge_ports(self) -> list[HostInterface]:
        """The veths of what is on the node's userspace bridges now, each after the index of
        its container's end (`ethN` is 2N+2 in an emulated container; the ingress sandbox's
        is its eth1, 4, its eth0 being on ingress)."""
        indexes: dict[int, int] = {}
        runtime = self.containers.runtime
        for container in runtime.containers():
            if container.state is ContainerState.RUNNING:
                for n, stack in enumerate(runtime.process(container.id).net.stacks):
                    indexes[id(stack)] = 2 * n + 2
        return [
            bridge_port(name, owner, indexes.get(id(end), 4))
            for name, bridge in self._userspace_bridges()
            for owner in bridge.owners()
            if (end := bridge.stack_of(owner)) is not None
        ]

    def _raft_driver(self) -> RaftDriver | None:
        return self.manager.driver if self.manager is not None else None

    async def stop(self) -> None:
        if self._api_runner is not None:
            await self._api_runner.cleanup()
        if self.options.api_socket is not None:
            self.options.api_socket.unlink(missing_ok=True)
        await self.containers.close()
        await self._stop_roles()

    async def _stop_roles(self) -> None:
        await self._stop_agent()
        await self._stop_manager()
        await self._stop_gossip()

    async def _start_gossip(self, m: Membership) -> None:
        """Every member gossips on its address's port 7946 (SWIM membership and NetworkDB, as
        Swarm's memberlist), seeded with the managers it knows, sealed with the managers'
        gossip keys: it joins nobody until its first dispatcher session message brings them
        (`_on_keys`), as a Docker node sets up its network agent only once it has the keys."""
        if self.gossip is not None:
            return
        host = m.advertise_addr.rpartition(":")[0]
        seeds = [(a.rpartition(":")[0], GOSSIP_PORT) for a in m.managers if a != m.advertise_addr]
        run = GossipRun(
            name=m.node_id,
            listen=(self.options.address, GOSSIP_PORT),
            advertise=(host, GOSSIP_PORT),
            seeds=seeds,
            profile="lab" if self.options.profile == "lab" else "lan",
            role=m.role,
            data_path_addr=self._vtep(m),
            data_path_port=m.data_path_port,
            platform=f"{self.options.platform}/{self._architecture()}",
            await_keys=True,
        )
        gossip = GossipNode(build_options(run))
        try:
            await gossip.start(seeds)
        except OSError as err:
            raise ApiError(500, f"cannot gossip on {host}:{GOSSIP_PORT}: {err}") from err
        self.gossip = gossip

    @staticmethod
    def _architecture() -> str:
        return platform.machine() or "x86_64"

    def _platform_warnings(self) -> tuple[str, ...]:
        """What `docker info` warns about on an emulated Windows node (Docker's documented
        limits of encrypted overlays there)."""
        if self.options.platform != "windows":
            return ()
        return (
            "WARNING: overlay network encryption is not applied on this Windows node: its"
            " traffic on encrypted overlays is not encrypted, and its containers cannot talk"
            " with Linux containers on them",
        )

    def _platform(self) -> Literal["linux", "windows"]:
        return "windows" if self.options.platform == "windows" else "linux"

    @staticmethod
    def _vtep(m: Membership) -> str:
        return m.data_path_addr or m.advertise_addr.rpartition(":")[0]

    async def _start_member(
        self, m: Membership, identity: ca.NodeIdentity, root: ca.RootCA
    ) -> None:
        """What every member runs: gossip, the data path (fed by its agent, carrying its
        containers' traffic), the agent."""
        await self._start_gossip(m)
        assert self.gossip is not None
        if self.datapath is None:
            view = NodeView(m.node_id, self._vtep(m), m.data_path_port, self._platform())
            datapath = NodeDataPath(
                view,
                self.gossip,
                upstreams=self.options.dns_upstreams,
                publish_address=self.options.address,
                backend=self._kernel_backend(view) if self.options.datapath == "kernel" else None,
                udp_offloads=self.options.udp_offloads,
            )
            try:
                await datapath.start()
            except DataPathError as err:
                raise ApiError(500, str(err)) from err
            self.datapath = datapath
            self.gossip.networkdb.watch(ENDPOINT_TABLE, on_event=datapath.endpoint_event)
        await self._start_agent(m, identity, root)

    def _kernel_backend(self, view: NodeView) -> KernelBackend:
        return KernelBackend(
            view.vtep,
            view.port,
            node_netns=self.options.datapath_netns,
            prefix=self.options.datapath_prefix,
        )

    async def _stop_gossip(self, leave: bool = True) -> None:
        self.containers.swarm = None
        self.containers.runtime.networking = None
        if self.datapath is not None:
            self.datapath.stop()
            self.datapath = None
        if self.gossip is not None:
            await self.gossip.stop(leave=leave)
            self.gossip = None

    async def _stop_agent(self) -> None:
        if self.agent is not None:
            await self.agent.stop()
            self.agent = None

    async def _stop_manager(self) -> None:
        if self._leader_watch is not None:
            self._leader_watch.cancel()
            self._leader_watch = None
        if self._store_events is not None:
            self._store_events.cancel()
            self._store_events = None
        if self.dispatcher is not None:
            await self.dispatcher.stop()
            self.dispatcher = None
        if self.log_broker is not None:
            await self.log_broker.stop()
            self.log_broker = None
            self._log_subscriber = None
        if self.manager is not None:
            await self.manager.stop()
            self.manager = None
            self._manager_backend = None

    # ---- resuming and starting roles -------------------------------------------------------

    async def _resume(self, m: Membership) -> None:
        try:
            identity, root = ca.load_identity(self._cert_dir)
        except ca.IdentityStoreError as err:
            raise NodeError(str(err)) from err
        if m.role == "manager":
            await self._start_manager(m, identity, root, join_via=None)
        await self._start_member(m, identity, root)
        log.info("event=node_resumed node=%s role=%s", m.node_id, m.role)

    def _credentials(
        self, identity: ca.NodeIdentity, root: ca.RootCA, cluster: str, store: Store
    ) -> Credentials:
        """mTLS on 2377, each call authorized by role, and refused for nodes removed from
        the swarm (as recorded in `store`)."""
        authz = RoleInterceptor(root, cluster, removed=RemovedNodes(store))
        return Credentials(
            server=ca.server_credentials(identity, root),
            channel=ca.channel_credentials(identity, root),
            interceptors=[FaultInterceptor(), authz],
        )

    async def _start_manager(
        self,
        m: Membership,
        identity: ca.NodeIdentity,
        root: ca.RootCA,
        *,
        join_via: str | None,
        first: Transaction | None = None,
    ) -> None:
        store = Store()
        settings = ManagerSettings(
            raft_dir=self.options.data_dir / "raft",
            listen=m.listen_addr,
            advertise=m.advertise_addr,
            profile=self.options.profile,
            credentials=self._credentials(identity, root, m.cluster_id, store),
            hostname=self.options.hostname,
        )
        role = ManagerRole(settings, store)
        dispatcher = DispatcherService(
            role.store,
            role.propose,
            role.raft_view,
            HEARTBEAT_PERIODS[self.options.profile],
            node_identity=caller_node_id,
        )
        log_broker = LogBroker(role.store, role.raft_view, node_identity=caller_node_id)
        try:
            driver = await role.start(
                join=join_via,
                first=(lambda _cluster: first) if first is not None else None,
                services=[
                    NodeCAService(role.store, role.write).register,
                    dispatcher.register,
                    log_broker.register,
                ],
                node_id=m.node_id,
                cluster_id=raft_cluster_id(m.cluster_id),
            )
        except ManagerStartError as err:
            await role.stop()
            raise ApiError(500, str(err)) from err
        self.manager = role
        self._manager_backend = ManagerBackend(
            driver,
            role.store,
            m.advertise_addr.rpartition(":")[0],
            self.options.hostname,
            leader_calls=role.leader_calls,
            leadership=role.leadership,
        )
        self.dispatcher = dispatcher
        await dispatcher.start()
        self.log_broker = log_broker
        await log_broker.start()
        self._log_subscriber = LogSubscriber(
            driver_raft_view(driver), self._channel_factory(identity, root)
        )
        self._leader_watch = asyncio.create_task(self._run_leader_loops(role, driver))
        replayed = driver.status().last_index  # a restart applies its own log again
        self._store_events = asyncio.create_task(
            StoreEvents(role.store, self.events, replayed).run()
        )

    async def _run_leader_loops(self, role: ManagerRole, driver: RaftDriver) -> None:
        """The allocator, orchestrator and scheduler run on the leader only: started when this
        manager wins an election, cancelled when it loses the leadership."""
        loops: asyncio.Task[None] | None = None
        try:
            while True:
                leading = driver.core.role is Role.LEADER
                if leading and loops is None:
                    loops = asyncio.create_task(self._leader_work(role, driver))
                    log.info("event=leader_loops_started")
                elif not leading and loops is not None:
                    loops.cancel()
                    loops = None
                    log.info("event=leader_loops_stopped")
                elif loops is not None and loops.done() and not loops.cancelled():
                    log.error("event=leader_loops_failed error=%r", loops.exception())
                    loops = None
                await asyncio.sleep(0.1)
        finally:
            if loops is not None:
                loops.cancel()

    async def _leader_work(self, role: ManagerRole, driver: RaftDriver) -> None:
        """The leader's loops, its role manager and its key manager, side by side until
        cancelled (and, once, the predefined networks a store made without them lacks)."""
        key_interval = (
            self.options.key_rotation_interval
            or keymanager.ROTATION_INTERVALS[self.options.profile]
        )
        async with asyncio.TaskGroup() as group:
            loops = LeaderLoops(role.store, role.write, settle=role.leadership.settle)
            group.create_task(loops.run())
            group.create_task(RoleManager(role.store, driver).run())
            group.create_task(KeyManager(role.store, role.write, key_interval).run())
            group.create_task(ensure_predefined(role.store, role.write, role.leadership.settle))

    @staticmethod
    def _channel_factory(
        identity: ca.NodeIdentity, root: ca.RootCA
    ) -> Callable[[str], grpc.aio.Channel]:
        """Channels to other managers' 2377, with this node's certificate (and the lab's
        faults)."""
        credentials = ca.channel_credentials(identity, root)

        def channel(address: str) -> grpc.aio.Channel:
            return grpc.aio.secure_channel(
                address, credentials, TLS_OPTIONS, interceptors=client_interceptors(address)
            )

        return channel

    async def _start_agent(self, m: Membership, identity: ca.NodeIdentity, root: ca.RootCA) -> None:
        """Every node, managers included, runs tasks: its agent keeps a session with the
        leader's dispatcher over mutual TLS."""
        description = objects_pb2.NodeDescription(
            hostname=self.options.hostname,
            os=self.options.platform,
            architecture=self._architecture(),
            engine_version=clusters.NodeDescription.engine_version,
            data_path_addr=m.data_path_addr or m.advertise_addr.rpartition(":")[0],
            nano_cpus=self.machine.nano_cpus,
            memory_bytes=self.machine.memory_bytes,
        )
        self.agent = Agent(
            node_id=m.node_id,
            description=description,
            managers=m.managers,
            channel_factory=self._channel_factory(identity, root),
            addr=m.advertise_addr.rpartition(":")[0],
            on_node=self._on_node_record,
            stop_grace=STOP_GRACE[self.options.profile],
            observer=self.datapath,
            networking=self.datapath,
            on_keys=self._on_keys,
            runtime=self.containers.runtime,  # one view of the node's containers: `docker ps`
            bridge=self.containers.bridge,
        )
        await self.agent.start()
        if self.datapath is not None:
            self.containers.runtime.networking = self.datapath
            self.containers.swarm = Swarm(
                m.node_id, self.agent.attacher, self.datapath.state, self.datapath
            )

    def _network_name(self, network_id: str) -> tuple[str, str] | None:
        """A network's name and driver for this node's network events, from its data path."""
        for network in self.datapath.networks() if self.datapath is not None else ():
            if network.id == network_id:
                return network.spec.annotations.name, network.spec.driver or "overlay"
        return None

    def _on_keys(self, keys: list[objects_pb2.EncryptionKey]) -> None:
        """The managers' current keys, from the dispatcher session: gossip seals with the
        primary gossip key and opens with all of them (the first keys let it join), the data
        path does the same with the IPsec ones."""
        if self.gossip is not None:
            gossip_keys = keymanager.keys_of(keys, "networking:gossip")
            if gossip_keys:
                self.gossip.set_keys([k.key for k in gossip_keys])
        if self.datapath is not None:
            ipsec = keymanager.keys_of(keys, "networking:ipsec")
            self.datapath.set_keys([DataPathKey(k.lamport_time, k.key) for k in ipsec])

    # ---- promotion and demotion ------------------------------------------------------------

    def _on_node_record(self, node: Node) -> None:
        """The managers' record of this node, from its dispatcher session: its ingress sandbox
        address goes to the data path; a role that differs from the one this process plays
        means it was promoted or demoted."""
        if self.datapath is not None:
            self.datapath.state.node_attachments(node.attachments)
        m = self.membership
        if m is None or not node.role or node.role == m.role or self._role_change is not None:
            return
        self._role_change = asyncio.create_task(self._change_role(node.role))

    async def _change_role(self, role: str) -> None:
        """Get a certificate for the new role, then start or stop the Raft replica, as a
        dockerd node does when `docker node promote/demote` reaches it."""
        try:
            async with self._busy:
                m = self.membership
                if m is None or m.role == role:
                    return
                known = list(self.agent.session.managers) if self.agent is not None else []
                managers = [a for a in [*known, *m.managers] if a != m.advertise_addr]
                identity, root = ca.load_identity(self._cert_dir)
                renewed = await self._renew(managers, identity, root)
                ca.save_identity(self._cert_dir, renewed.identity, renewed.root)
                await self._stop_agent()
                if role == "manager":
                    m.role = "manager"
                    await self._start_manager(
                        m, renewed.identity, renewed.root, join_via=managers[0]
                    )
                else:
                    await self._stop_manager()
                    shutil.rmtree(self.options.data_dir / "raft", ignore_errors=True)
                    m.role = "worker"
                    m.managers = managers
                m.save(self._state_path)
                if self.gossip is not None:
                    self.gossip.set_role(role)
                await self._start_agent(m, renewed.identity, renewed.root)
                log.info("event=role_changed node=%s role=%s", m.node_id, role)
        except Exception as err:
            log.error("event=role_change_failed role=%s error=%r", role, err)
        finally:
            self._role_change = None

    async def _renew(
        self, managers: list[str], identity: ca.NodeIdentity, root: ca.RootCA
    ) -> Joined:
        if not managers:
            raise NodeError(
                "no other manager is known to renew this node's certificate for its new role"
            )
        last: JoinError | None = None
        for address in managers:
            try:
                return await renew(address, identity, root)
            except JoinError as err:
                last = err
        raise NodeError(f"no manager renewed this node's certificate: {last}")

    # ---- addresses, as dockerd resolves --listen-addr / --advertise-addr -------------------

    def _listen(self, requested: str) -> str:
        """`0.0.0.0:2377` (the CLI's default) means this host's address in a lab, where every
        node has its own loopback address; a port alone keeps the host."""
        host, _, port = (requested or f"0.0.0.0:{SWARM_PORT}").rpartition(":")
        if host in ("", "0.0.0.0", "::"):
            host = self.options.address
        return f"{host}:{port or SWARM_PORT}"

    def _advertise(self, requested: str, listen: str) -> str:
        if not requested:
            return listen
        host, sep, port = requested.rpartition(":")
        if not sep or not is_number(port):  # an address without a port: the listen port
            return f"{requested}:{listen.rpartition(':')[2]}"
        return f"{host}:{port}"

    # ---- SwarmControl ----------------------------------------------------------------------

    async def swarm_init(self, request: SwarmInit) -> str:
        async with self._busy:
            if self.membership is not None and request.force_new_cluster:
                return await self._force_new_cluster(self.membership)
            if self.membership is not None:
                raise ApiError(503, SWARM_EXISTS_MESSAGE)
            listen = self._listen(request.listen_addr)
            advertise = self._advertise(request.advertise_addr, listen)
            cluster_id = new_object_id()  # Docker's shape: 25 base-36 characters
            node_id = new_object_id()
            root = ca.RootCA.create()
            settings = clusters.ClusterSettings(
                default_addr_pool=tuple(request.default_addr_pool),
                subnet_size=request.subnet_size or clusters.DEFAULT_SUBNET_SIZE,
                data_path_port=request.data_path_port or clusters.DEFAULT_DATA_PATH_PORT,
                snapshot_interval=request.snapshot_interval or 10_000,
                election_tick=request.election_tick or 10,
                heartbeat_tick=request.heartbeat_tick or 1,
                heartbeat_period_ns=request.heartbeat_period_ns
                or int(HEARTBEAT_PERIODS[self.options.profile] * 1e9),
                labels=request.labels,
                task_history_limit=request.task_history_limit,
                node_cert_expiry_ns=request.node_cert_expiry_ns,
            )
            cluster = clusters.new_cluster(cluster_id, settings, root)
            identity = ca.NodeIdentity.create(node_id)
            validity = clusters.node_cert_validity(cluster)
            identity = identity.with_certificate(
                root.issue(
                    identity.csr_pem, node_id, ca.MANAGER_ROLE, cluster_id, validity=validity
                ),
                root,
            )
            desc = self._description(advertise, request.data_path_addr, request.availability)
            node = clusters.node_object(node_id, "manager", desc, settings.data_path_port)
            node.status.state = "ready"
            m = Membership(
                node_id=node_id,
                cluster_id=cluster_id,
                role="manager",
                listen_addr=listen,
                advertise_addr=advertise,
                data_path_addr=request.data_path_addr,
                managers=[advertise],
                data_path_port=settings.data_path_port,
            )
            ca.save_identity(self._cert_dir, identity, root)
            first = Transaction().create(cluster).create(node)
            first.create(clusters.ingress_network(cluster))
            for predefined in predefined_networks(cluster.meta.created_at_ns):
                first.create(predefined)
            try:
                await self._start_manager(m, identity, root, join_via=None, first=first)
            except ApiError:
                self._forget()
                raise
            m.save(self._state_path)
            self.membership = m
            await self._until_registered(node_id)
            await self._start_member(m, identity, root)
            log.info("event=swarm_initialized node=%s cluster=%s", node_id, cluster_id)
            return node_id

    async def _force_new_cluster(self, m: Membership) -> str:
        """`swarm init --force-new-cluster` on a manager that lost its quorum: keep the state it
        has applied, as the only manager of a new Raft cluster (see `raft/recovery.py`); other
        managers can then join it again, and the old ones cannot come back into it."""
        if self.manager is None or self.manager.driver is None:
            raise not_a_manager()
        driver = self.manager.driver
        store = self.manager.store
        state, applied, term = store.snapshot(), store.applied_index, driver.core.term
        await self._stop_roles()
        kept = force_new_cluster(
            self.options.data_dir / "raft", state, applied, term, m.advertise_addr, new_id()
        )
        log.warning("event=forced_new_cluster node=%s old_raft_dir=%s", m.node_id, kept)
        identity, root = ca.load_identity(self._cert_dir)
        await self._start_manager(m, identity, root, join_via=None)
        await self._start_member(m, identity, root)
        return m.node_id

    async def _until_registered(self, node_id: str, timeout: float = 15.0) -> None:
        """`swarm init` and a manager's `swarm join` answer once this replica holds its own
        Node object naming its Raft id, so the CLI's next request (it inspects the node,
        found through that id) finds it; the allocator's write of the node's ingress address
        may delay the Raft id's write by a retry."""
        store = self.store

        def registered() -> bool:
            node = store.get(Node, node_id)
            return node is not None and node.manager_status.raft_id != 0

        async with asyncio.timeout(timeout):
            while not registered():
                await asyncio.sleep(0.05)

    def _description(
        self, advertise: str, data_path_addr: str, availability: str
    ) -> clusters.NodeDescription:
        return clusters.NodeDescription(
            hostname=self.options.hostname,
            advertise_addr=advertise,
            data_path_addr=data_path_addr,
            availability=availability or "active",
            os=self.options.platform,
            architecture=self._architecture(),
        )

    async def swarm_join(self, request: SwarmJoin) -> None:
        async with self._busy:
            if self.membership is not None:
                raise ApiError(503, SWARM_EXISTS_MESSAGE)
            listen = self._listen(request.listen_addr)
            advertise = self._advertise(request.advertise_addr, listen)
            remote = request.remote_addrs[0]
            if ":" not in remote:
                remote = f"{remote}:{SWARM_PORT}"
            desc = self._description(advertise, request.data_path_addr, request.availability)
            ask = ca_pb2.IssueNodeCertificateRequest(
                hostname=desc.hostname,
                advertise_addr=advertise,
                data_path_addr=desc.data_path_addr,
                availability=desc.availability,
                os=desc.os,
                architecture=desc.architecture,
            )
            try:
                joined = await join(remote, request.join_token, ca.NodeIdentity.create("new"), ask)
            except JoinError as err:
                raise ApiError(err.status, str(err)) from err
            m = Membership(
                node_id=joined.identity.node_id,
                cluster_id=joined.cluster_id,
                role=joined.role,
                listen_addr=listen,
                advertise_addr=advertise,
                data_path_addr=request.data_path_addr,
                managers=[remote],
                data_path_port=joined.data_path_port or clusters.DEFAULT_DATA_PATH_PORT,
            )
            ca.save_identity(self._cert_dir, joined.identity, joined.root)
            if joined.role == "manager":
                try:
                    await self._start_manager(m, joined.identity, joined.root, join_via=remote)
                except ApiError:
                    self._forget()
                    raise
            m.save(self._state_path)
            self.membership = m
            if self.manager is not None:
                await self._until_registered(m.node_id)
            await self._start_member(m, joined.identity, joined.root)
            log.info("event=swarm_joined node=%s role=%s via=%s", m.node_id, m.role, remote)

    async def swarm_leave(self, force: bool) -> None:
        async with self._busy:
            m = self.membership
            if m is None:
                raise ApiError(503, NOT_IN_SWARM_MESSAGE)
            if self.manager is not None and self.manager.driver is not None:
                await self._leave_raft(self.manager.driver, force)
            await self._stop_roles()
            self._forget()
            self.membership = None
            self._error = ""
            log.info("event=swarm_left node=%s", m.node_id)

    async def _leave_raft(self, driver: RaftDriver, force: bool) -> None:
        """As dockerd: a manager leaves only with --force (demote it first otherwise), and
        then it still tries to leave the Raft membership so the others keep their quorum."""
        voters = len(driver.core.voters)
        if not force:
            message = (
                "You are attempting to leave the swarm on a node that is participating as a "
                "manager. "
            )
            if voters <= 1:
                message += (
                    "Removing the last manager erases all current state of the swarm. Use "
                    "`--force` to ignore this message. "
                )
            else:
                message += (
                    f"Removing this node leaves {voters - 1} managers out of {voters}. Without a "
                    "Raft quorum your swarm will be inaccessible. The only way to restore a "
                    "swarm that has lost consensus is to reinitialize it with "
                    "`--force-new-cluster`. Use `--force` to suppress this message."
                )
            raise ApiError(503, message)
        if voters <= 1:
            return
        try:
            await driver.leave(raft_pb2.LeaveRequest(node_id=driver.node_id))
        except Exception as err:  # no leader, lost quorum: --force leaves anyway, as dockerd
            log.warning("event=raft_leave_failed error=%r", err)

    def _forget(self) -> None:
        """A node that left (or failed to enter) keeps nothing of the swarm."""
        for name in ("raft", "certificates"):
            shutil.rmtree(self.options.data_dir / name, ignore_errors=True)
        self._state_path.unlink(missing_ok=True)

    # ---- EngineBackend ---------------------------------------------------------------------

    def _manager_or_refuse(self) -> ManagerBackend:
        """This node's manager backend; outside a swarm or on a worker, Docker's refusal."""
        if self._manager_backend is None:
            raise self._no_manager()
        return self._manager_backend

    @property
    def store(self) -> Store:
        b = self._manager_backend
        return b.store if b is not None else self._empty

    async def propose(self, data: bytes) -> bytes:
        return await self._manager_or_refuse().propose(data)

    async def linearizable_read(self) -> None:
        await self._manager_or_refuse().linearizable_read()

    async def prepare_write(self) -> None:
        await self._manager_or_refuse().prepare_write()

    async def create_network(self, spec: NetworkSpec) -> Network:
        return await self._manager_or_refuse().create_network(spec)

    async def raft_members(self) -> RaftMembers:
        return await self._manager_or_refuse().raft_members()

    async def subscribe_logs(
        self, request: SubscribeLogsRequest
    ) -> AsyncGenerator[list[LogMessage], None]:
        """The Engine API's log source (api/logs.py): the leader's broker, through this
        manager."""
        if self._log_subscriber is None:
            raise self._no_manager()
        return await self._log_subscriber.subscribe_logs(request)

    def _no_manager(self) -> ApiError:
        return ApiError(503, NO_SWARM_MESSAGE) if self.membership is None else not_a_manager()

    def local_state(self) -> LocalState:
        if self._manager_backend is not None:
            return self._manager_backend.local_state()
        m = self.membership
        if m is None:
            return LocalState(local_node_state="inactive", role="")
        return LocalState("error" if self._error else "active", m.role, self._error)

    def node_info(self) -> NodeInfo:
        if self._manager_backend is not None:
            return replace(
                self._manager_backend.node_info(),
                engine_id=self.engine_id,
                ncpu=self.machine.cpus,
                mem_total=self.machine.memory_bytes,
            )
        m = self.membership
        if m is None:
            return NodeInfo(
                node_id="",
                engine_id=self.engine_id,
                hostname=self.options.hostname,
                addr="",
                role="",
                local_node_state="inactive",
                os=self.options.platform,
                architecture=self._architecture(),
                warnings=self._platform_warnings(),
                ncpu=self.machine.cpus,
                mem_total=self.machine.memory_bytes,
            )
        state = self.local_state()
        return NodeInfo(
            node_id=m.node_id,
            engine_id=self.engine_id,
            hostname=self.options.hostname,
            addr=m.advertise_addr.rpartition(":")[0],
            role=state.role,
            cluster_id=m.cluster_id,
            local_node_state=state.local_node_state,
            error=state.error,
            os=self.options.platform,
            architecture=self._architecture(),
            warnings=self._platform_warnings(),
            ncpu=self.machine.cpus,
            mem_total=self.machine.memory_bytes,
        )


# ---- process entry points ------------------------------------------------------------------


def main(options: NodeOptions) -> None:
    """The `swarmlab node run` process, on uvloop as `swarmlab manager run` is: the Engine
    API, Raft, the dispatcher and the leader's loops share this one event loop, and most of a
    write's CPU is the loop running aiohttp's and grpc.aio's callbacks."""
    uvloop.run(run_node(options))


async def run_node(options: NodeOptions) -> None:
    """Run a swarm node until SIGTERM or SIGINT."""
    node = SwarmNode(options)
    await node.start()
    # As `swarmlab manager run`: a full collection walks every object alive, and one that
    # fell during an API call (about 40 ms of CPU for the modules alone) was its latency.
    keep_startup_objects_out_of_gc()
    await until_signalled()
    log.info("event=node_stopping")
    await node.stop()
