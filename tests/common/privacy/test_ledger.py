"""The lifetime ledger: budgets belong to a site and its records, not to a run."""

import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
from opacus.accountants import RDPAccountant

from common.config import load_config
from common.privacy.calibrate import planned_events
from common.privacy.ledger import (
    BACKUP,
    LEDGER,
    BudgetExceeded,
    PrivacyStateError,
    SiteLedger,
)
from common.privacy.operator import raise_budget, read_ledgers

DP = load_config({"dp.enabled": True, "dp.target-epsilon": 3.0, "dp.delta": 1e-5}).dp
PLAN = planned_events([2000, 1800], batch_size=64, rounds_per_task=2, steps_per_round=50)
TASK0 = np.arange(0, 2000, dtype=np.uint64)
TASK1 = np.arange(5000, 6800, dtype=np.uint64)
PER_TASK = {"task-0": TASK0, "task-1": TASK1}


def dp(target: float = 3.0, **kw: object):
    return load_config({"dp.enabled": True, "dp.target-epsilon": target, "dp.delta": 1e-5, **kw}).dp


def run_all(
    root: Path,
    run_key: str,
    *,
    target: float = 3.0,
    partitions=PER_TASK,
    composition: str = "per-task",
    site: str = "site-a",
) -> SiteLedger:
    """A whole run of the plan, one round (one ``open``, as a new process would) at a time."""
    for task, (q, steps) in PLAN.items():
        for r in range(2):
            with SiteLedger.open(root, site, dp=dp(target)) as ledger:
                ledger.join_run(
                    run_key,
                    composition=composition,
                    partitions=partitions,
                    plan=PLAN,
                    run_target=target,
                    max_grad_norm=1.0,
                )
                sigma = ledger.noise_multiplier(run_key, task)
                ledger.spend(
                    run_key, task=task, events=[(sigma, q, steps // 2)], server_round=2 * task + r
                )
    return ledger


def test_a_run_ends_each_task_at_the_target_recomputed_independently(tmp_path: Path) -> None:
    ledger = run_all(tmp_path, "run-1")
    state = json.loads((tmp_path / "site-a" / LEDGER).read_text())
    references = {}
    for row in state["ledger"]:
        acc = references.setdefault(row["lifetime_partition"], RDPAccountant())
        for sigma, q, n in row["events"]:
            for _ in range(int(n)):
                acc.step(noise_multiplier=sigma, sample_rate=q)
    assert len(references) == 2, "one lifetime partition per task"
    expected = max(acc.get_epsilon(1e-5) for acc in references.values())
    assert ledger.epsilon == pytest.approx(expected, rel=1e-9)
    assert 2.9 < expected <= 3.0
    epsilons = [row["epsilon"] for row in state["ledger"]]
    assert epsilons == sorted(epsilons), "a site's epsilon never decreases"


def test_a_second_run_on_the_same_records_starts_from_the_first_runs_epsilon(
    tmp_path: Path,
) -> None:
    first = run_all(tmp_path, "run-1")
    spent = first.epsilon
    # Same records, same target: nothing is left, the run is refused before any step.
    with pytest.raises(BudgetExceeded, match="nothing useful is left"):
        run_all(tmp_path, "run-2")
    # A higher target than the lifetime budget is refused until an operator raises it ...
    with pytest.raises(PrivacyStateError, match="raise-budget"):
        run_all(tmp_path, "run-3", target=6.0)
    entry = raise_budget(tmp_path, "site-a", to=6.0, reason="second study, approved by DPO")
    assert entry["from"] == 3.0 and entry["to"] == 6.0 and entry["by"]
    # ... then the new run composes on top of what the records spent: lifetime ends at 6,
    # its own share is below 6, and the lifetime is above what the first run spent.
    second = run_all(tmp_path, "run-3", target=6.0)
    assert spent < second.epsilon <= 6.0
    assert second.epsilon > 5.7
    assert 0 < second.run_epsilon("run-3") < second.epsilon
    state = json.loads((tmp_path / "site-a" / LEDGER).read_text())
    assert state["budget_log"][0]["reason"] == "second study, approved by DPO"
    assert {row["run"] for row in state["ledger"]} == {"run-1", "run-3"}


def test_a_missing_or_unreadable_ledger_after_training_is_refused(tmp_path: Path) -> None:
    run_all(tmp_path, "run-1")
    site = tmp_path / "site-a"
    (site / LEDGER).unlink()  # an attacker (or an accident) deletes the state file
    with pytest.raises(PrivacyStateError, match="refusing to start it from epsilon 0"):
        run_all(tmp_path, "run-2")
    (site / BACKUP).unlink()  # and the backup: the TRAINED marker still tells
    with pytest.raises(PrivacyStateError, match="TRAINED"):
        run_all(tmp_path, "run-2")
    (site / LEDGER).write_text("{not json")
    with pytest.raises(PrivacyStateError, match="unreadable"):
        run_all(tmp_path, "run-2")
    assert (site / LEDGER).read_text() == "{not json", "a corrupt ledger is never overwritten"


def test_a_restored_backup_continues_the_lifetime(tmp_path: Path) -> None:
    first = run_all(tmp_path, "run-1")
    site = tmp_path / "site-a"
    (site / LEDGER).unlink()
    (site / LEDGER).write_text((site / BACKUP).read_text())  # the fix the error names
    with SiteLedger.open(tmp_path, "site-a", dp=dp()) as ledger:
        assert ledger.epsilon == pytest.approx(first.epsilon)


def test_delta_and_accountant_are_fixed_for_a_sites_lifetime(tmp_path: Path) -> None:
    run_all(tmp_path, "run-1")
    other = load_config({"dp.enabled": True, "dp.delta": 1e-6}).dp
    with (
        pytest.raises(PrivacyStateError, match="fixed for its lifetime"),
        SiteLedger.open(tmp_path, "site-a", dp=other),
    ):
        pass


def test_records_added_or_regrouped_merge_their_histories(tmp_path: Path) -> None:
    """A run whose partition overlaps earlier ones (more data, another task split) is
    charged with everything spent on any of its records: never under-counted."""
    first = run_all(tmp_path, "run-1")
    raise_budget(tmp_path, "site-a", to=10.0, reason="test")
    grown = {"run": np.union1d(np.union1d(TASK0, TASK1), np.arange(9000, 9100, dtype=np.uint64))}
    with SiteLedger.open(tmp_path, "site-a", dp=dp(10.0)) as ledger:
        ledger.join_run(
            "run-2",
            composition="sequential",
            partitions=grown,
            plan=PLAN,
            run_target=10.0,
            max_grad_norm=1.0,
        )
        live = [k for k, p in ledger.partitions.items() if p.merged_into is None]
        assert len(live) == 1
        merged = ledger.partitions[live[0]]
        assert len(merged.history) == sum(len(p.history) for p in first.partitions.values())
        assert merged.records.size == TASK0.size + TASK1.size + 100
        # both tasks' histories now compose: the lifetime is above either task's alone
        assert ledger.epsilon > first.epsilon


def test_a_spent_site_refuses_a_new_runs_count_release_before_paying_for_it(
    tmp_path: Path,
) -> None:
    """A new run's first act is to release its record counts (a Gaussian mechanism paid
    for first). On records with under a tenth of the budget left, the site refuses with
    the reason (nothing useful is left), pays nothing, and releases nothing; a count
    release that would cross the budget is not called 'DP-SGD steps'. (CI saw the spend
    error instead of the reason when the first run ended closer to the target.)"""
    run_all(tmp_path, "run-1")
    before = (tmp_path / "site-a" / LEDGER).read_text()
    with SiteLedger.open(tmp_path, "site-a", dp=dp()) as ledger:
        ledger.join_run(
            "run-2",
            composition="per-task",
            partitions=PER_TASK,
            plan=None,
            run_target=3.0,
            max_grad_norm=1.0,
        )
        with pytest.raises(BudgetExceeded, match="nothing useful is left"):
            ledger.release_counts("run-2", {0: 2000, 1: 1800}, sigma=50.0, server_round=1)
        assert ledger.released_counts("run-2") is None
        with pytest.raises(BudgetExceeded, match="1 record-count release on task 0"):
            ledger.spend(
                "run-2", task=0, events=[(0.01, 1.0, 1)], server_round=1, kind="count release"
            )
    state = json.loads((tmp_path / "site-a" / LEDGER).read_text())
    assert state["ledger"] == json.loads(before)["ledger"], "nothing was paid"


def test_a_round_beyond_the_budget_is_refused_and_nothing_is_recorded(tmp_path: Path) -> None:
    run_all(tmp_path, "run-1")
    before = (tmp_path / "site-a" / LEDGER).read_text()
    with (
        pytest.raises(BudgetExceeded, match=r"budget 3.0.*delta=1.00e-05.*rdp"),
        SiteLedger.open(tmp_path, "site-a", dp=dp()) as ledger,
    ):
        ledger.spend("run-1", task=1, events=[(1.0, 0.05, 50)], server_round=9)
    assert (tmp_path / "site-a" / LEDGER).read_text() == before


def _spend_rounds(root: str, site: str, rounds: int) -> None:
    for r in range(rounds):
        with SiteLedger.open(Path(root), site, dp=dp(20.0)) as ledger:
            ledger.join_run(
                "shared",
                composition="per-task",
                partitions=PER_TASK,
                plan={0: (0.03, 1000), 1: (0.03, 1000)},
                run_target=20.0,
                max_grad_norm=1.0,
            )
            sigma = ledger.noise_multiplier("shared", 0)
            ledger.spend("shared", task=0, events=[(sigma, 0.03, 1)], server_round=r)


def test_concurrent_processes_of_one_site_lose_no_spending(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_spend_rounds, args=(str(tmp_path), "site-a", 8)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(read_ledgers(tmp_path)["site-a"]["ledger"]) == 24, "a read-modify-write was lost"


def test_site_ids_are_validated(tmp_path: Path) -> None:
    with (
        pytest.raises(ValueError, match="site id"),
        SiteLedger.open(tmp_path, "../escape", dp=dp()),
    ):
        pass
