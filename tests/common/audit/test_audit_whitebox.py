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
