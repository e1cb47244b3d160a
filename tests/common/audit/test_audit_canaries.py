"""The one-run canary audit (Steinke, Nasr & Jagielski 2023): bound values and validity."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest
import torch
from scipy.stats import binom

from common.audit.canaries import (
    best_lower_bound,
    canary_scores,
    count_correct,
    epsilon_from_guesses,
    epsilon_lower_bound,
    make_canaries,
    p_value,
)

CPU = torch.device("cpu")


def perfect_scores(m: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    included = rng.random(m) < 0.5
    return included + 0.1 * rng.random(m), included


def test_perfect_guesses_give_the_closed_form_bound() -> None:
    scores, included = perfect_scores(1000)
    # All r = 200 guesses right; delta = 0: q^200 = 0.05 at the bound, eps = logit(q).
    q = 0.05 ** (1 / 200)
    expected = math.log(q / (1 - q))
    assert expected == pytest.approx(4.1936, abs=1e-4)
    eps0 = epsilon_lower_bound(scores, included, delta=0.0, k_plus=100)
    assert eps0 == pytest.approx(expected, abs=1e-6)
    eps = epsilon_lower_bound(scores, included, delta=1e-5, k_plus=100)
    assert 4.0 < eps < expected  # the delta term costs a little
    # The grid's best pair: 400 + 400 right guesses, each of 8 pairs tested at 5 % / 8.
    best = best_lower_bound(scores, included, delta=0.0)
    assert best.rigorous and best.num_tested == 8 and best.correct == best.guesses == 800
    q = (0.05 / 8) ** (1 / 800)
    assert best.epsilon_lower_bound == pytest.approx(math.log(q / (1 - q)), abs=1e-6)
    assert 4.8 < best_lower_bound(scores, included, delta=1e-5).epsilon_lower_bound < 5.06
    optimistic = best_lower_bound(scores, included, delta=0.0, union_bound=False)
    assert not optimistic.rigorous and optimistic.epsilon_lower_bound > best.epsilon_lower_bound


def test_chance_guesses_give_zero() -> None:
    assert epsilon_from_guesses(1000, 200, 100, delta=1e-5) == 0.0
    rng = np.random.default_rng(0)
    included = rng.random(1000) < 0.5
    scores = rng.normal(size=1000)
    assert epsilon_lower_bound(scores, included, delta=1e-5, k_plus=100) < 0.2
    assert best_lower_bound(scores, included, delta=1e-5).epsilon_lower_bound == 0.0


def test_monotone_in_correct_guesses() -> None:
    bounds = [epsilon_from_guesses(1000, 200, v, delta=1e-5) for v in range(90, 201)]
    assert all(b >= a for a, b in itertools.pairwise(bounds))
    assert bounds[0] == 0.0 and bounds[-1] > 4.0


def test_p_value_reduces_to_the_binomial_tail() -> None:
    q = 1 / (1 + math.exp(-1.0))
    assert p_value(500, 100, 70, eps=1.0, delta=0.0) == pytest.approx(binom.sf(69, 100, q))
    assert p_value(500, 100, 70, eps=1.0, delta=1e-3) > p_value(500, 100, 70, eps=1.0, delta=0.0)
    assert p_value(500, 100, 0, eps=0.0, delta=0.0) == 1.0
    with pytest.raises(ValueError):
        p_value(10, 5, 6, eps=1.0, delta=0.0)


def test_bound_is_valid_for_randomised_response() -> None:
    """An eps = 1 mechanism (randomised response per canary) is rarely caught above 1."""
    eps, m, bounds = 1.0, 1000, []
    for seed in range(40):
        rng = np.random.default_rng(seed)
        included = rng.random(m) < 0.5
        truthful = rng.random(m) < math.exp(eps) / (1 + math.exp(eps))
        scores = np.where(truthful, included, ~included) + 1e-3 * rng.random(m)
        bounds.append(epsilon_lower_bound(scores, included, delta=0.0, k_plus=m // 2))
    assert np.mean(np.array(bounds) > eps) <= 0.15  # at most 5 % in expectation
    assert 0.6 < float(np.median(bounds)) <= eps  # and the audit is nearly tight


def test_count_correct_and_its_checks() -> None:
    scores = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    included = np.array([True, False, True, False, False])
    assert count_correct(scores, included, 2, 2) == (4, 3)
    with pytest.raises(ValueError):
        count_correct(scores, included, 3, 3)


def test_make_canaries_and_scores(problem: Any) -> None:
    c = make_canaries((1, 8, 8), 4, 200, seed=0)
    assert len(c.split) == 200 and c.include.dtype == bool
    assert 60 < int(c.include.sum()) < 140
    assert len(c.included) + len(c.excluded) == 200
    assert float(c.split.x.min()) >= 0.0 and float(c.split.x.max()) <= 1.0
    again = make_canaries((1, 8, 8), 4, 200, seed=0)
    assert torch.equal(again.split.x, c.split.x) and (again.include == c.include).all()
    relabelled = make_canaries((1, 8, 8), 4, 50, seed=1, source=problem.outsiders)
    assert len(relabelled.split) == 50
    scores = canary_scores(problem.overfit, c, device=CPU)
    assert scores.shape == (200,) and (scores <= 0).all()


def test_a_claim_above_the_audits_reach_is_not_testable() -> None:
    """200 canaries at delta 1e-5 certify at most 3.64, whatever the attack: a claimed
    epsilon of 8 can then never be contradicted, and the audit says so."""
    from common.audit.canaries import NOT_TESTABLE, reachable_epsilon

    include = np.random.default_rng(0).integers(0, 2, 200).astype(bool)
    perfect = best_lower_bound(include.astype(float), include, delta=1e-5, claimed_epsilon=8.0)
    assert perfect.reachable_epsilon == pytest.approx(3.64, abs=0.01)
    assert 3.0 < perfect.epsilon_lower_bound <= perfect.reachable_epsilon
    assert perfect.verdict == NOT_TESTABLE, "even a perfect attack cannot refute epsilon = 8"
    assert best_lower_bound(include.astype(float), include, delta=1e-5, claimed_epsilon=2.0)
    assert (
        best_lower_bound(include.astype(float), include, delta=1e-5, claimed_epsilon=2.0).verdict
    ).startswith("VIOLATION")
    assert 6.0 < reachable_epsilon(5000, delta=1e-5) < 6.3
    assert (
        "not testable"
        in best_lower_bound(
            include.astype(float), include, delta=1e-5, claimed_epsilon=8.0
        ).to_dict()["verdict"]
    )
