"""The white-box audit certifies a lower bound on the real private step, and catches a
deliberately broken one (noise off, noise repeated across steps)."""

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from common.audit.whitebox import MechanismAudit, audit_mechanism, hypothesis_test_bound
from common.privacy.calibrate import noise_for_budget
from common.privacy.dp_step import DPStepper

Q, T, DELTA, M = 0.5, 10, 1e-5, 40_000
SIGMA = noise_for_budget([(Q, T)], target_epsilon=2.0, delta=DELTA, accountant="rdp")


def audit(stepper: type[DPStepper] | None = None, **overrides: Any) -> MechanismAudit:
    """The audit of T steps at rate Q, claimed epsilon 2, with M canaries: of the real DP
    step, or of ``stepper`` built with ``overrides`` (a deliberately broken mechanism)."""

    def make(opt: torch.optim.Optimizer, module: nn.Module) -> DPStepper:
        assert stepper is not None
        settings = {"noise_multiplier": SIGMA, **overrides}
        return stepper(
            opt,
            module,
            max_grad_norm=1.0,
            expected_batch_size=round(Q * M / 2),
            on_step=lambda: None,
            **settings,
        )

    return audit_mechanism(
        noise_multiplier=SIGMA,
        sample_rate=Q,
        steps=T,
        delta=DELTA,
        num_canaries=M,
        make_stepper=make if stepper is not None else None,
    )


def test_an_honest_mechanism_is_consistent_and_the_audit_has_power() -> None:
    result = audit()
    assert result.claimed_epsilon == pytest.approx(2.0, abs=0.05)
    assert result.verdict.startswith("consistent")
    # power: a real fraction of the claim is certified, and never more than the truth (PRV)
    assert 0.4 < result.epsilon_lower_bound <= result.epsilon_prv <= result.claimed_epsilon
    assert result.reachable_epsilon > 5, "40,000 canaries could certify far more than 2"


def test_noise_switched_off_is_a_violation() -> None:
    result = audit(DPStepper, noise_multiplier=0.0)
    assert result.verdict.startswith("VIOLATION") and result.epsilon_lower_bound > 4


def test_noise_repeated_across_steps_is_a_violation() -> None:
    """The review's finding: the same noise every round (a public seed). Summed, repeated
    noise hides as well as fresh noise; the spread over steps gives it away."""

    class Repeating(DPStepper):
        def step(self, **kwargs):  # type: ignore[override]
            self.optimizer.generator.manual_seed(1234)  # the same draws every step
            return super().step(**kwargs)

    result = audit(Repeating, noise=torch.Generator())
    assert result.verdict.startswith("VIOLATION") and result.best_score == "spread"


def test_the_test_bound_is_zero_for_uninformative_scores() -> None:
    rng = np.random.default_rng(0)
    include = rng.integers(0, 2, 20_000).astype(bool)
    assert hypothesis_test_bound(rng.normal(size=20_000), include, delta=DELTA, alpha=0.05) < 0.2


def test_the_reach_does_not_depend_on_how_many_canaries_were_included() -> None:
    from common.audit.whitebox import perfect_test_bound

    few = np.zeros(20_000, dtype=bool)
    few[:9_000] = True
    many = ~few
    reach = perfect_test_bound(few, delta=DELTA, alpha=0.025)
    assert reach == pytest.approx(perfect_test_bound(many, delta=DELTA, alpha=0.025))
    assert 7 < reach < 10


def rate_one_audit(sigma_used: float, *, canaries: int = 100_000) -> MechanismAudit:
    """Full-batch audit (rate 1, 4 steps) of a step claiming epsilon 2, whose stepper
    really adds ``sigma_used`` (the claim's sigma for an honest one)."""
    sigma = noise_for_budget([(1.0, 4)], target_epsilon=2.0, delta=DELTA, accountant="rdp")

    def make(opt: torch.optim.Optimizer, module: nn.Module) -> DPStepper:
        return DPStepper(
            opt,
            module,
            noise_multiplier=sigma_used * sigma,
            max_grad_norm=1.0,
            expected_batch_size=round(canaries / 2),
            on_step=lambda: None,
        )

    return audit_mechanism(
        noise_multiplier=sigma,
        sample_rate=1.0,
        steps=4,
        delta=DELTA,
        num_canaries=canaries,
        make_stepper=None if sigma_used == 1.0 else make,
    )


def test_at_rate_one_the_gaussian_bound_certifies_most_of_the_true_epsilon() -> None:
    """Full batch, the claim is exactly sqrt(T)/sigma-GDP: the mu test reads the middle of
    the trade-off curve, which 10^5 trials measure well, and lands near the true epsilon
    while the (eps, delta) test, decided in the tails, certifies half of it."""
    result = rate_one_audit(1.0)
    assert result.verdict.startswith("consistent")
    assert result.mu_claimed is not None and result.epsilon_exact is not None
    assert result.mu_lower_bound <= result.mu_claimed
    gaussian = result.epsilon_lower_bound_gaussian
    assert gaussian is not None
    assert 0.85 * result.epsilon_exact < gaussian <= result.epsilon_exact
    assert result.epsilon_lower_bound < 0.7 * result.epsilon_exact


def test_noise_too_small_is_caught_by_the_gaussian_bound_alone() -> None:
    """A stepper adding 60% of the calibrated noise (epsilon about 3.3 claimed as 2): the
    tails cannot show it with 10^5 canaries, the trade-off curve's middle does."""
    result = rate_one_audit(0.6)
    assert result.verdict.startswith("VIOLATION")
    assert result.epsilon_lower_bound_gaussian is not None
    assert result.epsilon_lower_bound_gaussian > result.claimed_epsilon
    assert result.epsilon_lower_bound < result.claimed_epsilon


def test_the_gaussian_bound_never_exceeds_the_truth_on_gaussian_scores() -> None:
    """Soundness: on exactly mu-GDP scores the certified mu stays below mu (95% each, so a
    failure in 30 draws would mean a wrong bound), and is 0-ish for pure noise."""
    from common.audit.whitebox import gaussian_test_bound

    rng = np.random.default_rng(0)
    mu = 0.5
    for _ in range(30):
        include = rng.integers(0, 2, 20_000).astype(bool)
        scores = rng.normal(size=20_000) + mu * include
        assert gaussian_test_bound(scores, include, alpha=0.05) <= mu
    include = rng.integers(0, 2, 20_000).astype(bool)
    assert gaussian_test_bound(rng.normal(size=20_000), include, alpha=0.05) < 0.05


def test_gdp_epsilon_matches_the_prv_accountant_at_rate_one() -> None:
    from common.audit.whitebox import gdp_epsilon
    from common.privacy.accountant import compute_epsilon

    for sigma, steps in ((5.0, 4), (1.5, 10), (0.8, 1)):
        prv = compute_epsilon([(sigma, 1.0, steps)], delta=DELTA, kind="prv")
        assert gdp_epsilon(steps**0.5 / sigma, delta=DELTA) == pytest.approx(prv, rel=0.03)
    assert gdp_epsilon(0.0, delta=DELTA) == 0.0


def test_masks_from_a_public_seed_at_rate_one_half_are_flagged() -> None:
    """The audit's scores do not use the masks; what it checks of the sampling is that two
    fresh plans draw different masks. Masks a public seed reproduces are a violation."""

    def public() -> torch.Generator:
        return torch.Generator().manual_seed(0)

    flagged = audit_mechanism(
        noise_multiplier=1.0,
        sample_rate=0.5,
        steps=2,
        delta=DELTA,
        num_canaries=2_000,
        make_sampling=public,
    )
    assert flagged.masks_fresh is False and flagged.verdict.startswith("VIOLATION")
    assert "masks repeat" in flagged.verdict
    honest = audit_mechanism(
        noise_multiplier=1.0, sample_rate=0.5, steps=2, delta=DELTA, num_canaries=2_000
    )
    assert honest.masks_fresh is True and not honest.verdict.startswith("VIOLATION")
