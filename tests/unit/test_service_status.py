"""`docker service ls` REPLICAS (`GET /services?status=true`) counted as a real dockerd 20.10
swarm counts them (side by side): a task still running while it is being stopped counts,
so a scale to 0 shows `1/0` until the task has stopped."""

from __future__ import annotations

from controlplane.pb.objects_pb2 import Task
from controlplane.store import Transaction
from tests.unit.swarm_fixture import wait_for
from tests.unit.test_api import Api
from tests.unit.test_services_api import cli_body, create, create_net, inspect, run


async def service_status(api: Api) -> dict[str, int]:
    status, services = await api.call(
        "GET", "/v1.41/services", "/services", params={"status": "true"}
    )
    assert status == 200, services
    [service] = services
    return service["ServiceStatus"]  # type: ignore[no-any-return]


def test_a_task_being_stopped_still_counts_as_running() -> None:
    async def t(api: Api) -> None:
        body = cli_body(await create_net(api))
        body["Mode"] = {"Replicated": {"Replicas": 1}}
        await create(api, body)
        await wait_for(lambda: len(api.backend.store.list(Task)) == 1)
        [task] = api.backend.store.list(Task)
        task.status.state, task.status.message = "running", "started"  # as its agent says
        await api.backend.propose(Transaction().update(task).encode())
        assert await service_status(api) == {
            "RunningTasks": 1,
            "DesiredTasks": 1,
            "CompletedTasks": 0,
        }
        spec = await inspect(api, body["Name"])
        scaled = {**spec["Spec"], "Mode": {"Replicated": {"Replicas": 0}}}
        status, answer = await api.call(
            "POST",
            f"/v1.41/services/{spec['ID']}/update",
            "/services/{id}/update",
            body=scaled,
            params={"version": str(spec["Version"]["Index"])},
        )
        assert status == 200, answer
        await wait_for(lambda: api.backend.store.list(Task)[0].desired_state != "running")
        # No agent here stops it: it still runs, as dockerd's `service ls` shows `1/0`.
        assert await service_status(api) == {
            "RunningTasks": 1,
            "DesiredTasks": 0,
            "CompletedTasks": 0,
        }

    run(t, agent=False)
