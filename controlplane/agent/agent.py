"""One node's agent: its session with the managers, the worker that runs its tasks, the
emulated runtime they run in, and the log publisher that sends their lines to the leader's log
broker during each session. The node process builds one and starts it after joining."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from controlplane.agent.logs import LogPublisher
from controlplane.agent.network import Networking
from controlplane.agent.network_attach import NetworkAttacher
from controlplane.agent.runtime import Runtime
from controlplane.agent.session import ChannelFactory, Session
from controlplane.agent.worker import DEFAULT_STOP_GRACE, Worker
from controlplane.datapath.host_ports import HostPorts
from controlplane.pb.objects_pb2 import (
    EncryptionKey,
    Network,
    Node,
    NodeDescription,
    Task,
    TaskStatus,
)


class TaskObserver(Protocol):
    def assignments(self, tasks: dict[str, Task], networks: dict[str, Network]) -> None: ...

    def task_status(self, task_id: str, status: TaskStatus) -> None: ...


class Agent:
    def __init__(
        self,
        *,
        node_id: str,
        description: NodeDescription,
        managers: Sequence[str],
        channel_factory: ChannelFactory,
        addr: str = "",
        runtime: Runtime | None = None,
        stop_grace: float = DEFAULT_STOP_GRACE,
        max_backoff: float = 5.0,
        on_node: Callable[[Node], None] = lambda _node: None,
        on_keys: Callable[[list[EncryptionKey]], None] = lambda _keys: None,
        observer: TaskObserver | None = None,
        networking: Networking | None = None,
        bridge: HostPorts | None = None,
    ) -> None:
        """`observer` hears the assignments and every task state this agent reports (the
        node's data path publishes its endpoints from them); `networking` (the node's data
        path) gives the runtime's containers their network, `bridge` (the node's userspace
        docker0) the tasks on the swarm's `bridge` network theirs. A `runtime` given is shared
        (the node's, with its standalone containers): stopping the agent kills only its
        task containers in it."""
        self._owns_runtime = runtime is None
        self.runtime = runtime or Runtime(networking=networking)
        if networking is not None:
            self.runtime.networking = networking  # before the first task starts
        self._observer = observer
        self.attacher = NetworkAttacher(node_id)  # standalone containers' overlay attachments
        self.logs = LogPublisher(node_id, self.runtime, lambda: self.worker.task_containers())
        self.session = Session(
            node_id=node_id,
            description=description,
            managers=managers,
            channel_factory=channel_factory,
            on_assignments=self._assigned,
            statuses=lambda: self.worker.statuses(),
            companions=[self.logs.listen, self.attacher.listen],
            addr=addr,
            max_backoff=max_backoff,
            on_node=on_node,
            on_keys=on_keys,
        )
        self.worker = Worker(
            self.runtime, self._report, stop_grace, self.session.files, description, bridge
        )

    def _assigned(self, tasks: dict[str, Task], networks: dict[str, Network]) -> None:
        self.worker.reconcile(tasks, networks)
        if self._observer is not None:
            self._observer.assignments(tasks, networks)

    def _report(self, task_id: str, status: TaskStatus) -> None:
        if self._observer is not None:  # first: it may add what it did (host ports bound)
            self._observer.task_status(task_id, status)
        self.session.report(task_id, status)

    async def start(self) -> None:
        await self.session.start()

    async def stop(self) -> None:
        """Leave without a goodbye (as a node that dies): the managers see its heartbeats
        stop. Running containers are killed."""
        await self.session.stop()
        await self.worker.close()
        if self._owns_runtime:
            await self.runtime.close()
