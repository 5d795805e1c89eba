"""The CPU time of charged tasks, measured per step (`agent/cpu_meter.py`): a task and the
tasks it starts are charged to its account, others are not."""

from __future__ import annotations

import asyncio
import time

from controlplane.agent.cpu_meter import CpuAccount, charged_to, metering

WORK_NS = 50_000_000  # each busy step: 50 ms of this thread's CPU time


async def busy(steps: int) -> None:
    for _ in range(steps):
        started = time.thread_time_ns()
        while time.thread_time_ns() - started < WORK_NS:
            pass
        await asyncio.sleep(0)


async def parent() -> None:
    await asyncio.create_task(busy(2))  # a child task: charged to the same account
    await busy(1)


def test_charged_tasks_and_their_children_are_metered_others_not() -> None:
    async def main() -> CpuAccount:
        assert metering()
        charged = CpuAccount()
        with charged_to(charged):
            task = asyncio.create_task(parent())
        with charged_to(None):  # nothing charged: not metered
            uncharged = asyncio.create_task(busy(2))
        await asyncio.gather(task, uncharged)
        return charged

    charged = asyncio.run(main())
    assert charged.ns >= 3 * WORK_NS  # its three busy steps, its child's included
    assert charged.ns < 4 * WORK_NS  # not the uncharged task's two


def test_a_loop_with_another_task_factory_is_left_alone() -> None:
    async def main() -> bool:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(lambda loop, coro, **kw: asyncio.Task(coro, loop=loop, **kw))
        return metering()

    assert asyncio.run(main()) is False
