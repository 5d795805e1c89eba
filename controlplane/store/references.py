"""References between objects that must hold at every applied index: a service, or a
standalone container's network attachment, names only networks that exist, and a network goes
only once no service names it and no live attachment holds it.

They are checked where a transaction is applied, the same on every replica, because the
API's own checks (`api/services.py`, `api/networks.py`, `manager/network_attachments.py`)
read the store at one moment and propose at a later one: a service create (or a `docker run
--network`) and the remove of its network, in flight together, could each pass them and both
commit, leaving a service or a container whose network is gone.
"""

from __future__ import annotations

from collections.abc import Mapping

from controlplane.manager.tasks import is_attachment, is_terminal, wants_running
from controlplane.pb import objects_pb2
from controlplane.pb.objects_pb2 import Network, Service, Task
from controlplane.store.errors import ErrorKind, StoreError
from controlplane.store.kinds import StoreObject
from controlplane.store.table import Table


def network_in_use_message(network_id: str, user: str, user_id: str) -> str:
    """swarmkit's refusal of a network remove, as the CLI prints it (`user`: service|task)."""
    return (
        f"rpc error: code = FailedPrecondition desc = network {network_id} is in use by "
        f"{user} {user_id}"
    )


def check_references(
    tables: Mapping[type[StoreObject], Table],
    action: int,
    obj: StoreObject,
    current: StoreObject | None,
) -> None:
    """Refuse the action (`objects_pb2.STORE_ACTION_*` on `obj`, replacing `current`) if it
    would break a reference."""
    if isinstance(obj, Service) and action != objects_pb2.STORE_ACTION_DELETE:
        _check_service_networks(tables[Network], obj, current)
    elif isinstance(obj, Task) and action == objects_pb2.STORE_ACTION_CREATE:
        if is_attachment(obj):
            _check_attachment_networks(tables[Network], obj)
    elif isinstance(current, Network) and action == objects_pb2.STORE_ACTION_DELETE:
        _check_network_unused(tables[Service], current)
        _check_network_unattached(tables[Task], current)


def _check_service_networks(networks: Table, service: Service, current: StoreObject | None) -> None:
    """Every network a service names exists (by id, or by name as a spec may say it); an
    update is judged on the networks it adds only, so that a record from before this rule
    can still be updated."""
    kept = {a.target for a in current.spec.networks} if isinstance(current, Service) else set()
    for attachment in service.spec.networks:
        target = attachment.target
        if target in kept or networks.get(target) is not None:
            continue
        if networks.owner_of_name(target) is None:
            raise StoreError(ErrorKind.NOT_FOUND, f"network {target} not found")


def _check_attachment_networks(networks: Table, task: Task) -> None:
    """A new attachment names its network by id (`network_attachments.attachment_task`)."""
    for attachment in task.spec.networks:
        if networks.get(attachment.target) is None:
            raise StoreError(ErrorKind.NOT_FOUND, f"network {attachment.target} not found")


def _check_network_unattached(tasks: Table, network: Network) -> None:
    """No live attachment holds the network (counted as the API counts it: meant to run and
    not finished)."""
    for task in tasks.sorted_rows():
        assert isinstance(task, Task)
        if not is_attachment(task) or is_terminal(task) or not wants_running(task):
            continue
        if any(a.target == network.id for a in task.spec.networks):
            raise StoreError(ErrorKind.IN_USE, network_in_use_message(network.id, "task", task.id))


def _check_network_unused(services: Table, network: Network) -> None:
    names = (network.id, network.spec.annotations.name)
    for service in services.sorted_rows():
        assert isinstance(service, Service)
        if any(a.target in names for a in service.spec.networks):
            raise StoreError(
                ErrorKind.IN_USE, network_in_use_message(network.id, "service", service.id)
            )
