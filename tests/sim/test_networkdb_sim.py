"""NetworkDB in deterministic simulation: convergence, failures, partitions, reaping.

A failure prints its seed; `python -m controlplane.sim.networkdb_cluster --nodes N --seed S`
replays it and prints the figures.
"""

from __future__ import annotations

import pytest

from controlplane.gossip.networkdb import NetworkDB, NetworkDBConfig
from controlplane.sim.networkdb_cluster import Figures, SimFailure, run_scenarios

CFG = NetworkDBConfig.lab()
DETECT = 0.5  # the simulated failure detector's delay (NetworkDBSim's default)


def check_figures(figures: Figures) -> None:
    assert figures.datagrams_to_outsiders == 0
    assert max(figures.convergence) < 20 * CFG.gossip_interval
    assert figures.bulk_sync_only < 10 * CFG.bulk_sync_interval
    # NetworkDB acts on a membership change at once: the detector's delay is all there is.
    assert DETECT <= figures.hide < DETECT + 0.05
    assert DETECT <= figures.restore < DETECT + 0.05
    assert figures.partition_repair < DETECT + CFG.bulk_sync_interval
    assert figures.restart_purge < DETECT + CFG.bulk_sync_interval
    assert figures.network_leave < 1.0
    reap = CFG.reap_entry_interval
    assert reap <= figures.tombstone_reaped <= reap + 2 * CFG.reap_period


@pytest.mark.parametrize("seed", range(8))
def test_networkdb_converges_and_repairs(seed: int) -> None:
    loss = [0.0, 0.1, 0.3][seed % 3]
    figures = run_scenarios(seed, members=24, outsiders=6, loss=loss, writes=8)
    check_figures(figures)


def test_an_entry_reaches_a_hundred_node_network_with_ten_percent_loss() -> None:
    figures = run_scenarios(1, members=100, outsiders=20, loss=0.1, writes=10)
    check_figures(figures)
    assert max(figures.convergence) < 0.25  # about five gossip rounds of 20 ms


def test_replay_is_deterministic() -> None:
    assert run_scenarios(5, members=12, outsiders=3, writes=5) == run_scenarios(
        5, members=12, outsiders=3, writes=5
    )


def test_checks_catch_entries_of_a_failed_owner_left_visible(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(NetworkDB, "_visible", lambda self, entry: not entry.deleted)
    with pytest.raises(SimFailure, match="disagrees"):
        run_scenarios(2, members=8, outsiders=2, writes=3)


def test_checks_catch_a_restart_that_leaves_old_entries_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(NetworkDB, "_reassert_entry", lambda self, now, local, event: None)
    with pytest.raises(SimFailure, match="previous run"):
        run_scenarios(3, members=8, outsiders=2, writes=3)
