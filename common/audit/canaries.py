"""One-run privacy auditing with canaries (Steinke, Nasr & Jagielski, NeurIPS 2023).

"Privacy Auditing with One (1) Training Run" (arXiv:2305.08846). ``m`` canaries are made;
each is included in the training data by an independent fair coin S_i. After the single
training run, the auditor scores the canaries, guesses IN for the ``k+`` highest scores,
OUT for the ``k-`` lowest and abstains on the rest: r = k+ + k- guesses, v of them
correct. Their main theorem (Sec. 3; Thm. 3.1) says that if training is (eps, delta)-DP,

    P[V >= v] <= beta + 2 m delta alpha,      W ~ Binomial(r, q),  q = e^eps / (1 + e^eps)
    beta  = P[W >= v]
    alpha = max_{i = 1..v} P[v - i <= W < v] / i

(for delta = 0 this is stochastic dominance by Binomial(r, q): an eps-DP algorithm can do
no better than randomised response). This bound is the p-value of the observed v under the
null "the training is (eps, delta)-DP" (computed as in their Appendix D), and the reported
lower bound is the largest eps it rejects at the given confidence:

    eps_lb = sup { eps >= 0 : beta(eps) + 2 m delta alpha(eps) < 1 - confidence }   (0 if none)

found by bisection (the p-value grows with eps). Example: m = 1000 canaries, r = v = 200
perfect guesses, delta = 0, 95 %: q^200 = 0.05, so eps_lb = log(q / (1 - q)) = 4.19.

Choosing (k+, k-) after looking at the scores invalidates the confidence level unless the
choice is paid for: :func:`best_lower_bound` tests every pair of a fixed grid at level
(1 - confidence) / G (Bonferroni over the G pairs), so its maximum is a valid lower bound
at ``confidence``; ``union_bound=False`` reports the optimistic unadjusted maximum.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
from scipy.stats import binom  # scipy comes with scikit-learn
from torch import nn

from common.audit.membership import per_example_loss
from common.data.canaries import Canaries, make_canaries  # noqa: F401 (the audit API names it)
from common.data.types import Split

BISECTION_STEPS = 60


def canary_scores(
    model: nn.Module, canaries: Canaries | Split, *, device: torch.device
) -> np.ndarray:
    """Membership score of every canary: minus its loss (higher = guessed IN)."""
    split = canaries.split if isinstance(canaries, Canaries) else canaries
    return -per_example_loss(model, split, device=device)


def p_value(m: int, r: int, v: int, *, eps: float, delta: float) -> float:
    """P[>= v correct of r guesses] allowed by (eps, delta)-DP with m canaries (see above)."""
    if not 0 <= v <= r <= m:
        raise ValueError(f"need 0 <= v <= r <= m, got v={v}, r={r}, m={m}")
    if eps < 0 or not 0 <= delta <= 1:
        raise ValueError(f"need eps >= 0 and delta in [0, 1], got {eps}, {delta}")
    if v == 0:
        return 1.0
    q = 1.0 / (1.0 + math.exp(-eps))
    beta = float(binom.sf(v - 1, r, q))
    alpha = 0.0
    if delta > 0:
        below = binom.pmf(np.arange(v - 1, -1, -1), r, q)  # P[W = v-1], P[W = v-2], ...
        alpha = float((np.cumsum(below) / np.arange(1, v + 1)).max())
    return min(beta + 2.0 * m * delta * alpha, 1.0)


def epsilon_from_guesses(
    m: int, r: int, v: int, *, delta: float, confidence: float = 0.95
) -> float:
    """Largest eps that ``v`` correct of ``r`` guesses rejects at ``confidence`` (0 if none)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    level = 1.0 - confidence
    if p_value(m, r, v, eps=0.0, delta=delta) >= level:
        return 0.0
    lo, hi = 0.0, 1.0
    while p_value(m, r, v, eps=hi, delta=delta) < level:
        lo, hi = hi, 2.0 * hi
        if hi > 1e3:  # q == 1 in floating point long before this
            return lo
    for _ in range(BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        if p_value(m, r, v, eps=mid, delta=delta) < level:
            lo = mid
        else:
            hi = mid
    return lo


def count_correct(
    scores: np.ndarray, included: np.ndarray, k_plus: int, k_minus: int
) -> tuple[int, int]:
    """(r, v): guesses made and correct (IN for the top ``k_plus``, OUT for the bottom)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    inc = np.asarray(included, dtype=bool).ravel()
    if s.shape != inc.shape:
        raise ValueError(f"{s.size} scores for {inc.size} inclusion flags")
    if k_plus < 0 or k_minus < 0 or k_plus + k_minus > s.size:
        raise ValueError(f"k+={k_plus}, k-={k_minus} do not fit {s.size} canaries")
    order = np.argsort(-s, kind="stable")
    top, bottom = order[:k_plus], order[s.size - k_minus :]
    return k_plus + k_minus, int(inc[top].sum() + (~inc[bottom]).sum())


def epsilon_lower_bound(
    scores: np.ndarray,
    included: np.ndarray,
    *,
    delta: float,
    k_plus: int,
    k_minus: int | None = None,
    confidence: float = 0.95,
) -> float:
    """eps lower bound of one fixed guessing rule (``k_minus`` defaults to ``k_plus``)."""
    k_minus = k_plus if k_minus is None else k_minus
    r, v = count_correct(scores, included, k_plus, k_minus)
    return epsilon_from_guesses(len(scores), r, v, delta=delta, confidence=confidence)


NOT_TESTABLE = "not testable at this epsilon"


@dataclass(frozen=True)
class CanaryBound:
    """The result of :func:`best_lower_bound` (``rigorous``: Bonferroni-adjusted).

    ``reachable_epsilon`` is the largest lower bound this audit could certify at all: the
    bound if every guess were right (a perfect attack), with the same canaries, delta,
    confidence and grid. A claimed epsilon above it is *not testable* by this audit: even a
    broken mechanism could not be told apart from the claim, so "consistent" would carry
    no information.
    """

    epsilon_lower_bound: float
    k_plus: int
    k_minus: int
    guesses: int
    correct: int
    num_canaries: int
    delta: float
    confidence: float
    num_tested: int
    rigorous: bool
    reachable_epsilon: float = float("nan")
    claimed_epsilon: float | None = None

    @property
    def verdict(self) -> str:
        if self.claimed_epsilon is None:
            return "no DP guarantee claimed"
        if self.epsilon_lower_bound > self.claimed_epsilon:
            return "VIOLATION: the lower bound exceeds the claimed epsilon"
        if self.claimed_epsilon > self.reachable_epsilon:
            return NOT_TESTABLE
        return "consistent with the claimed epsilon"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "canary_bound", **asdict(self), "verdict": self.verdict}


def default_k_grid(m: int) -> list[tuple[int, int]]:
    """Symmetric (k, k) pairs at 1, 2, 5, 10, 20, 30, 40 and 50 % of the canaries."""
    ks = sorted({int(f * m) for f in (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5)} - {0})
    return [(k, k) for k in ks] or [(1, 0)]


def best_lower_bound(
    scores: np.ndarray,
    included: np.ndarray,
    *,
    delta: float,
    pairs: Sequence[tuple[int, int]] | None = None,
    confidence: float = 0.95,
    union_bound: bool = True,
    claimed_epsilon: float | None = None,
) -> CanaryBound:
    """Best bound over a grid of (k+, k-) pairs; see the module docstring for the rigour.
    The result also states the audit's reach (:attr:`CanaryBound.reachable_epsilon`) and,
    with ``claimed_epsilon``, its verdict."""
    m = len(scores)
    grid = list(pairs) if pairs is not None else default_k_grid(m)
    if not grid:
        raise ValueError("no (k+, k-) pairs to test")
    level = confidence if not union_bound else 1.0 - (1.0 - confidence) / len(grid)
    best: CanaryBound | None = None
    for kp, km in grid:
        r, v = count_correct(scores, included, kp, km)
        eps = epsilon_from_guesses(m, r, v, delta=delta, confidence=level)
        if best is None or eps > best.epsilon_lower_bound:
            best = CanaryBound(eps, kp, km, r, v, m, delta, confidence, len(grid), union_bound)
    assert best is not None
    return replace(
        best,
        reachable_epsilon=reachable_epsilon(
            m, delta=delta, pairs=grid, confidence=confidence, union_bound=union_bound
        ),
        claimed_epsilon=claimed_epsilon,
    )


def reachable_epsilon(
    m: int,
    *,
    delta: float,
    pairs: Sequence[tuple[int, int]] | None = None,
    confidence: float = 0.95,
    union_bound: bool = True,
) -> float:
    """The largest lower bound ``m`` canaries can certify: every guess of the grid right."""
    grid = list(pairs) if pairs is not None else default_k_grid(m)
    level = confidence if not union_bound else 1.0 - (1.0 - confidence) / len(grid)
    return max(
        epsilon_from_guesses(m, kp + km, kp + km, delta=delta, confidence=level) for kp, km in grid
    )
