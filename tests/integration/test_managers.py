"""Real manager processes on loopback: Raft over gRPC on 2377, fsync, SIGKILL.

Each test runs its own lab on its own 127.77.<lab>.0/24 addresses so tests can run in parallel.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from controlplane.client import ManagerClient
from controlplane.lab.processes import ManagerLab, ManagerProcess
from controlplane.pb import raft_pb2
from controlplane.raft.core import QuorumLossError
from controlplane.raft.errors import NO_LEADER_MESSAGE, NoLeaderError, ProposalTimeoutError

pytestmark = pytest.mark.integration


async def names(manager: ManagerProcess, linearizable: bool = False) -> set[str]:
    async with ManagerClient(manager.address) as client:
        listing = await client.list("network", linearizable=linearizable)
    return {n.spec.annotations.name for n in listing.objects.networks}


async def create(manager: ManagerProcess, name: str, timeout: float = 10.0) -> int:
    async with ManagerClient(manager.address) as client:
        response = await client.create_network(name, timeout=timeout)
    assert response.result.ok, response.result.error
    return response.index


async def wait_for(predicate: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not reached in time")


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def test_failover_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = ManagerLab(tmp_path, 3, lab=101)
        try:
            await lab.start()
            leader, status = await lab.wait_leader()
            acked = []
            for i, manager in enumerate(lab.managers * 3):  # through every manager
                await create(manager, f"before-{i}")
                acked.append(f"before-{i}")
            leader.kill()
            survivors = [m for m in lab.managers if m.alive()]
            _new_leader, new_status = await lab.wait_leader(exclude=status.node_id)
            assert new_status.term > status.term
            for i, manager in enumerate(survivors * 2):
                await create(manager, f"after-{i}")
                acked.append(f"after-{i}")
            for manager in survivors:
                assert set(acked) <= await names(manager, linearizable=True)
            # The killed leader restarts from its WAL and catches up.
            leader.start()
            await leader.wait_ready()

            async def caught_up() -> bool:
                return set(acked) <= await names(leader)

            await wait_for(caught_up)
            status_after = await leader.status()
            assert status_after.node_id == status.node_id
            assert status_after.role == "follower"
        finally:
            lab.stop()

    run(scenario())


def test_without_quorum_writes_fail_and_reads_answer(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = ManagerLab(tmp_path, 3, lab=102)
        try:
            await lab.start()
            await create(lab.managers[0], "kept")
            leader, _ = await lab.wait_leader()
            follower = next(m for m in lab.managers if m is not leader)
            for manager in lab.managers:
                if manager is not follower:
                    manager.kill()
            with pytest.raises((NoLeaderError, ProposalTimeoutError)) as err:
                await create(follower, "lost", timeout=15.0)
            if isinstance(err.value, NoLeaderError):
                assert str(err.value) == NO_LEADER_MESSAGE
            # Once the survivor knows it has no leader, writes fail fast with Docker's words.
            await asyncio.sleep(2.5)
            with pytest.raises(NoLeaderError, match="does not have a leader"):
                await create(follower, "lost-again", timeout=15.0)
            assert "kept" in await names(follower)  # local reads still answer
            with pytest.raises((NoLeaderError, ProposalTimeoutError)):
                await names(follower, linearizable=True)
        finally:
            lab.stop()

    run(scenario())


def test_new_manager_catches_up_by_snapshot_and_removal_rules(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = ManagerLab(tmp_path, 3, lab=103, snapshot_interval=20)
        try:
            await lab.start()
            for i in range(60):
                await create(lab.managers[i % 3], f"net-{i}")
            leader, status = await lab.wait_leader()
            assert status.snapshot_index >= 20
            newcomer = lab.add_manager()
            newcomer.start(join=lab.managers[1].address)
            await newcomer.wait_ready()
            await lab.wait_voters(4)

            async def caught_up() -> bool:
                return len(await names(newcomer)) == 60

            await wait_for(caught_up)

            async def snapshotted() -> bool:
                # Its snapshot index moves once the snapshot file is saved, a moment after
                # the entries it covers are applied (the save runs in a thread).
                return (await newcomer.status()).snapshot_index > 0

            await wait_for(snapshotted)
            new_status = await newcomer.status()
            # Remove the newcomer again; then, with one of three down, removing another
            # live manager would leave one of two: refused.
            async with ManagerClient(leader.address) as client:
                await client.remove_manager(new_status.node_id)
            await lab.wait_voters(3)
            newcomer.stop()
            victim = next(m for m in lab.managers[:3] if m is not leader)
            victim.kill()
            other = next(m for m in lab.managers[:3] if m not in (leader, victim))
            other_id = (await other.status()).node_id
            await asyncio.sleep(2.5)  # the leader notices the dead manager
            async with ManagerClient(leader.address) as client:
                with pytest.raises(QuorumLossError, match="loss of quorum"):
                    await client.remove_manager(other_id)
        finally:
            lab.stop()

    run(scenario())


def test_data_dir_of_another_cluster_is_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        first = ManagerLab(tmp_path / "a", 1, lab=104)
        second = ManagerLab(tmp_path / "b", 1, lab=105)
        try:
            await first.start()
            await second.start()
            stranger = second.managers[0]
            stranger.stop()
            # Restart the second cluster's manager, asking it to join the first: refused.
            stranger.start(join=first.managers[0].address)
            with pytest.raises(RuntimeError, match="use a fresh --data-dir"):
                await stranger.wait_ready(timeout=15)
        finally:
            first.stop()
            second.stop()

    run(scenario())


def test_garbage_and_foreign_messages_do_not_hurt(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = ManagerLab(tmp_path, 3, lab=106)
        try:
            await lab.start()
            leader, status = await lab.wait_leader()
            target = next(m for m in lab.managers if m is not leader)
            async with grpc.aio.insecure_channel(target.address) as channel:
                raw = channel.stream_unary(
                    "/controlplane.v1.Raft/Stream",
                    request_serializer=lambda b: b,
                    response_deserializer=lambda b: b,
                )

                async def garbage() -> AsyncIterator[bytes]:
                    yield b"\xff\xfe not a protobuf"

                with pytest.raises(grpc.aio.AioRpcError):
                    await raw(garbage())
                stub_stream = channel.stream_unary(
                    "/controlplane.v1.Raft/Stream",
                    request_serializer=raft_pb2.MessageBatch.SerializeToString,
                    response_deserializer=raft_pb2.Ack.FromString,
                )

                async def foreign() -> AsyncIterator[raft_pb2.MessageBatch]:
                    # A vote request from another cluster with a huge term.
                    vote = raft_pb2.Message(
                        type=raft_pb2.MSG_VOTE,
                        to=(await target.status()).node_id,
                        term=10**6,
                        cluster_id=12345,
                        index=10**6,
                        log_term=10**6,
                        **{"from": 99},
                    )
                    yield raft_pb2.MessageBatch(messages=[vote])

                await stub_stream(foreign())
                chunks = channel.stream_unary(
                    "/controlplane.v1.Raft/InstallSnapshot",
                    request_serializer=raft_pb2.SnapshotChunk.SerializeToString,
                    response_deserializer=raft_pb2.Ack.FromString,
                )

                async def out_of_order() -> AsyncIterator[raft_pb2.SnapshotChunk]:
                    header = raft_pb2.Message(type=raft_pb2.MSG_SNAPSHOT, cluster_id=1)
                    yield raft_pb2.SnapshotChunk(message=header, offset=0, data=b"abc")
                    yield raft_pb2.SnapshotChunk(offset=10, data=b"def", last=True)

                with pytest.raises(grpc.aio.AioRpcError, match="out of order"):
                    await chunks(out_of_order())

                async def oversized() -> AsyncIterator[bytes]:
                    yield b"\x5a" + b"\x00" * (17 << 20)  # past the 16 MiB message limit

                with pytest.raises(grpc.aio.AioRpcError) as too_big:
                    await raw(oversized())
                assert too_big.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            await create(target, "still-works")
            _, after = await lab.wait_leader()
            assert after.term == status.term, "a foreign vote request must not disturb the term"
            assert all(m.alive() for m in lab.managers)
        finally:
            lab.stop()

    run(scenario())


def test_cli_reports_bad_flags_clearly() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "controlplane.cli", "raft", "status", "--manager", "nonsense"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "is not HOST:PORT" in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "controlplane.cli", "raft", "status", "--manager", "127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("Error: ")
