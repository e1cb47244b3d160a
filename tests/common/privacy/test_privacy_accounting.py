"""Accountant, calibration and the persistent per-site budget."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from opacus.accountants import RDPAccountant

from common.config import load_config
from common.data.types import Split, concat
from common.privacy.accountant import Accountant, compute_epsilon
from common.privacy.budget import BudgetExceeded, PrivacyStateError, SitePrivacy
from common.privacy.calibrate import noise_for_budget, planned_events
from common.privacy.composition import (
    PER_TASK,
    SEQUENTIAL,
    CompositionError,
    resolve_composition,
    shared_records,
)

DP = load_config({"dp.enabled": True, "dp.target-epsilon": 3.0, "dp.delta": 1e-5}).dp
PLAN = planned_events([2000, 1800], batch_size=64, rounds_per_task=2, steps_per_round=50)


def test_epsilon_matches_opacus_on_the_same_history() -> None:
    acc = Accountant("rdp")
    for _ in range(30):
        acc.step(1.1, 0.01)
    acc.step(0.9, 0.02, 10)
    reference = RDPAccountant()
    for _ in range(30):
        reference.step(noise_multiplier=1.1, sample_rate=0.01)
    for _ in range(10):
        reference.step(noise_multiplier=0.9, sample_rate=0.02)
    assert acc.epsilon(1e-5) == pytest.approx(reference.get_epsilon(1e-5))
    assert Accountant.from_dict(json.loads(json.dumps(acc.to_dict()))) == acc


def test_noise_is_calibrated_for_the_whole_plan() -> None:
    events = list(PLAN.values())
    sigma = noise_for_budget(events, target_epsilon=3.0, delta=1e-5, accountant="rdp")
    eps = compute_epsilon([(sigma, q, n) for q, n in events], delta=1e-5, kind="rdp")
    assert 2.8 < eps <= 3.0
    longer = [(q, 2 * n) for q, n in events]
    assert noise_for_budget(longer, target_epsilon=3.0, delta=1e-5, accountant="rdp") > sigma


def test_prv_accountant_is_available_and_tighter_than_rdp() -> None:
    history = [(1.0, 0.02, 500)]
    assert compute_epsilon(history, delta=1e-5, kind="prv") < compute_epsilon(
        history, delta=1e-5, kind="rdp"
    )


def test_state_survives_a_restart_and_epsilon_never_decreases(tmp_path: Path) -> None:
    path = tmp_path / "site-0.json"
    first = SitePrivacy.open(path, dp=DP, plan=PLAN, num_samples=3800)
    sigma, q = first.noise_multiplier(0), PLAN[0][0]
    epsilons = [first.epsilon]
    for r in range(2):
        privacy = SitePrivacy.open(path, dp=DP, plan=PLAN, num_samples=3800)  # a new process
        assert privacy.noise_multiplier(0) == sigma
        privacy.spend([(sigma, q, 50)], task=0, server_round=r + 1)
        epsilons.append(SitePrivacy.open(path, dp=DP, plan=PLAN, num_samples=3800).epsilon)
    assert epsilons[0] == 0.0 and epsilons[1] < epsilons[2]
    assert len(SitePrivacy.open(path, dp=DP, plan=PLAN, num_samples=3800).ledger) == 2


def test_a_step_beyond_the_budget_is_refused_and_nothing_is_recorded(tmp_path: Path) -> None:
    path = tmp_path / "site.json"
    privacy = SitePrivacy.open(path, dp=DP, plan=PLAN, num_samples=3800)
    sigma = privacy.noise_multiplier(0)
    for task, (q, n) in PLAN.items():  # the whole plan fits
        privacy.spend([(sigma, q, n)], task=task, server_round=task + 1)
    assert privacy.epsilon <= DP.target_epsilon
    before = path.read_text()
    with pytest.raises(BudgetExceeded, match=r"budget 3.0.*delta=1.00e-05.*rdp"):
        privacy.spend([(sigma, PLAN[0][0], 50)], task=1, server_round=5)
    assert path.read_text() == before


def test_changed_privacy_settings_or_corrupt_state_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "site.json"
    SitePrivacy.open(path, dp=DP, plan=PLAN, num_samples=3800)
    other = load_config({"dp.enabled": True, "dp.target-epsilon": 8.0, "dp.delta": 1e-5}).dp
    with pytest.raises(PrivacyStateError, match="refusing to mix budgets"):
        SitePrivacy.open(path, dp=other, plan=PLAN, num_samples=3800)
    path.write_text("{not json")
    with pytest.raises(PrivacyStateError, match="unreadable"):
        SitePrivacy.open(path, dp=DP, plan=PLAN, num_samples=3800)
    assert path.read_text() == "{not json", "a corrupt state must not be overwritten"


def test_exact_replay_is_refused_under_sample_level_dp() -> None:
    with pytest.raises(ValueError, match="exact"):
        load_config({"dp.enabled": True, "method": "exact"})


def test_per_task_composition_calibrates_each_task_to_the_budget(tmp_path: Path) -> None:
    """Parallel composition: every task's records get the whole budget, so each task needs
    less noise than one sequential budget for all of them, and the site's epsilon is the
    largest task's, recomputed here independently of the code under test."""
    per_task = SitePrivacy.open(
        tmp_path / "a.json", dp=DP, plan=PLAN, num_samples=3800, composition=PER_TASK
    )
    sequential = SitePrivacy.open(tmp_path / "b.json", dp=DP, plan=PLAN, num_samples=3800)
    assert sequential.noise_multiplier(0) == sequential.noise_multiplier(1)
    for task, (q, n) in PLAN.items():
        assert per_task.noise_multiplier(task) < sequential.noise_multiplier(task)
        per_task.spend([(per_task.noise_multiplier(task), q, n)], task=task, server_round=task)
    reference = []
    for task, (q, n) in PLAN.items():
        acc = RDPAccountant()
        for _ in range(n):
            acc.step(noise_multiplier=per_task.noise_multiplier(task), sample_rate=q)
        reference.append(acc.get_epsilon(per_task.delta))
        assert per_task.epsilon_of(task) == pytest.approx(reference[-1], rel=1e-9)
        assert 2.9 < reference[-1] <= 3.0
    assert per_task.epsilon == pytest.approx(max(reference), rel=1e-9)
    assert [row["partition"] for row in per_task.ledger] == ["task-0", "task-1"]
    # A restarted site with another composition must not reuse the state.
    with pytest.raises(PrivacyStateError, match="composition"):
        SitePrivacy.open(tmp_path / "a.json", dp=DP, plan=PLAN, num_samples=3800)
    # Spending on a task outside the plan is refused.
    with pytest.raises(BudgetExceeded, match="not in this site's privacy plan"):
        per_task.spend([(1.0, 0.1, 1)], task=5, server_round=9)


def test_composition_is_per_task_only_when_every_record_is_in_one_task() -> None:
    x = torch.rand(30, 1, 4, 4)
    data = Split.from_tensors(x, torch.arange(30) % 3)
    tasks = [data.where_label_in([c]) for c in range(3)]
    assert shared_records(tasks) == 0
    assert resolve_composition("auto", tasks, where="site 0") == PER_TASK
    # The same records under a pixel permutation (permuted streams) are the same records.
    permuted = [tasks[0], dataclasses.replace(tasks[0], permutation=torch.randperm(16))]
    assert shared_records(permuted) == len(tasks[0])
    # A canary copied into two tasks (new tensors, same content) is one record in two tasks.
    canary = Split.from_tensors(x[:1].clone(), torch.tensor([2]))
    with_canary = [concat([tasks[0], canary]), concat([tasks[1], canary])]
    assert shared_records(with_canary) == 1
    assert resolve_composition("auto", with_canary, where="site 0") == SEQUENTIAL
    with pytest.raises(CompositionError, match="1 records are in several"):
        resolve_composition("per-task", with_canary, where="site 0")
    assert resolve_composition("sequential", tasks, where="site 0") == SEQUENTIAL
