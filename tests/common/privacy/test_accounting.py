"""Accountant and calibration (the ledger is tested in test_ledger.py)."""

import pytest
from opacus.accountants import RDPAccountant

from common.config import load_config
from common.privacy.accountant import compute_epsilon
from common.privacy.calibrate import noise_for_budget, planned_events

PLAN = planned_events([2000, 1800], batch_size=64, rounds_per_task=2, steps_per_round=50)


def test_epsilon_matches_opacus_on_the_same_history() -> None:
    history = [(1.1, 0.01, 30), (0.9, 0.02, 10)]  # (sigma, rate, steps)
    reference = RDPAccountant()
    for _ in range(30):
        reference.step(noise_multiplier=1.1, sample_rate=0.01)
    for _ in range(10):
        reference.step(noise_multiplier=0.9, sample_rate=0.02)
    got = compute_epsilon(history, delta=1e-5, kind="rdp")
    assert got == pytest.approx(reference.get_epsilon(1e-5))
    more = compute_epsilon([*history, (0.9, 0.02, 10)], delta=1e-5, kind="rdp")
    assert more > got  # spending more never lowers epsilon


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


def test_exact_replay_is_refused_under_sample_level_dp() -> None:
    with pytest.raises(ValueError, match="exact"):
        load_config({"dp.enabled": True, "dp.delta": 1e-5, "method": "exact"})


def test_calibration_on_top_of_earlier_spending_ends_at_the_target() -> None:
    """What the records already spent (prior) is part of the budget: more noise is needed,
    and prior + plan ends at the target, recomputed with Opacus."""
    events = list(PLAN.values())
    prior = [(1.2, 0.03, 200)]
    fresh = noise_for_budget(events, target_epsilon=6.0, delta=1e-5, accountant="rdp")
    sigma = noise_for_budget(events, target_epsilon=6.0, delta=1e-5, accountant="rdp", prior=prior)
    assert sigma > fresh
    reference = RDPAccountant()
    for s, q, n in [*prior, *((sigma, q, n) for q, n in events)]:
        for _ in range(n):
            reference.step(noise_multiplier=s, sample_rate=q)
    assert 5.7 < reference.get_epsilon(1e-5) <= 6.0
    with pytest.raises(ValueError, match="already spent"):
        noise_for_budget(events, target_epsilon=0.5, delta=1e-5, accountant="rdp", prior=prior)
