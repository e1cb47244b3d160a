"""Accountant, calibration and the persistent per-site budget."""

import json
from pathlib import Path

import pytest
from opacus.accountants import RDPAccountant

from common.config import load_config
from common.privacy.accountant import Accountant, compute_epsilon
from common.privacy.budget import BudgetExceeded, PrivacyStateError, SitePrivacy
from common.privacy.calibrate import noise_for_budget, planned_events

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
    sigma = noise_for_budget(PLAN, target_epsilon=3.0, delta=1e-5, accountant="rdp")
    eps = compute_epsilon([(sigma, q, n) for q, n in PLAN], delta=1e-5, kind="rdp")
    assert 2.8 < eps <= 3.0
    longer = [(q, 2 * n) for q, n in PLAN]
    assert noise_for_budget(longer, target_epsilon=3.0, delta=1e-5, accountant="rdp") > sigma


def test_prv_accountant_is_available_and_tighter_than_rdp() -> None:
    history = [(1.0, 0.02, 500)]
    assert compute_epsilon(history, delta=1e-5, kind="prv") < compute_epsilon(
        history, delta=1e-5, kind="rdp"
    )


def test_state_survives_a_restart_and_epsilon_never_decreases(tmp_path: Path) -> None:
    path = tmp_path / "site-0.json"
    first = SitePrivacy.open(path, dp=DP, plan=PLAN, num_samples=3800)
    sigma, q = first.noise_multiplier, PLAN[0][0]
    epsilons = [first.epsilon]
    for r in range(2):
        privacy = SitePrivacy.open(path, dp=DP, plan=PLAN, num_samples=3800)  # a new process
        assert privacy.noise_multiplier == sigma
        privacy.spend([(sigma, q, 50)], task=0, server_round=r + 1)
        epsilons.append(SitePrivacy.open(path, dp=DP, plan=PLAN, num_samples=3800).epsilon)
    assert epsilons[0] == 0.0 and epsilons[1] < epsilons[2]
    assert len(SitePrivacy.open(path, dp=DP, plan=PLAN, num_samples=3800).ledger) == 2


def test_a_step_beyond_the_budget_is_refused_and_nothing_is_recorded(tmp_path: Path) -> None:
    path = tmp_path / "site.json"
    privacy = SitePrivacy.open(path, dp=DP, plan=PLAN, num_samples=3800)
    sigma = privacy.noise_multiplier
    for (q, n), task in zip(PLAN, range(2), strict=True):  # the whole plan fits
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
