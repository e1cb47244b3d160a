"""White-box audit of the embedding release itself (``generator.kind = "embedding"``, and
its ridge form): the two-worlds test, repeated.

The mechanism under audit is :func:`common.privacy.embedding.release`, called as a site
calls it: per-class sums of the run's random features (with ``gram``: and the Gram matrix)
plus secret fresh Gaussian noise. The auditor fixes a small dataset D and a canary record
c, flips a fair coin per trial, releases from D or from D + c, and knows everything but the
noise (white box). Per trial the score is the release's projection on the canary's own
contribution Delta = release(D + c) - release(D) without noise, in the coordinates the
noise is drawn in (:func:`common.privacy.embedding.coordinates`: the sums, the Gram's
diagonal and sqrt(2) x each value above it; the values below are a mirror).

Each trial is an independent run of the mechanism, so the bounds of
:mod:`common.audit.whitebox` apply as they are: the family-free (eps, delta) bound, and the
mu-GDP bound, whose eps is the bound on the true eps: the release is one Gaussian
mechanism, exactly 1/sigma-GDP for a record that moves it by the full sensitivity. A
canary moves the sums by exactly 1 (every feature vector has norm 1); with the Gram
(sensitivity sqrt(2), noise sigma sqrt(2) on every coordinate) it moves the Gram's
coordinates by ||psi psi^T||_F = 1 too, so ``mu_canary`` (what this canary can show) is
the claim's 1/sigma: the audit can test the claim itself. (Before 2026-12-07 the Gram's
upper triangle was noised value by value, a record moving it by sqrt((1 + sum psi^4) / 2)
< 1: the audit said "not testable" there, the analysis' slack.)

What it catches: noise too small for the claim, noise repeated across releases (the OUT
world's score would not vary), a sensitivity the analysis got wrong.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from common.audit.whitebox import (
    gaussian_test_bound,
    gdp_epsilon,
    hypothesis_test_bound,
    perfect_test_bound,
)
from common.models.embedding import RandomFeatures
from common.models.scatter import Scattering
from common.privacy.accountant import compute_epsilon
from common.privacy.embedding import EVENT_SAMPLE_RATE, GRAM_SENSITIVITY, coordinates, release
from common.privacy.randomness import secret_numpy_generator

ReleaseFn = Callable[..., Tensor]  # the signature of common.privacy.embedding.release
# "consistent" only where the audit could have certified this share of the claim's exact
# epsilon; below it the verdict says "not testable" and names the audit's reach
REACH_SHARE = 0.95


@dataclass(frozen=True)
class ReleaseAudit:
    claimed_epsilon: float  # the ledger's epsilon of the release: (sigma, rate 1, 1 step)
    delta: float
    noise_multiplier: float
    gram: bool
    features: int
    trials: int
    confidence: float
    epsilon_lower_bound: float  # family-free
    reachable_epsilon: float  # the family-free bound a perfect score would give
    mu_lower_bound: float  # the release is not mu-GDP below it (family-free)
    mu_claimed: float  # 1 / sigma: the Gaussian mechanism at full sensitivity
    mu_canary: float  # this canary's shift over the noise: the most it can show
    epsilon_exact: float  # eps of the claim's 1/sigma-GDP at delta (the true epsilon)
    epsilon_lower_bound_gaussian: float  # eps of mu_lower_bound (the curve is Gaussian)

    @property
    def reach(self) -> float:
        """The most this audit can certify: no test exceeds the perfect score's bound, nor
        the true epsilon of what this canary moves (mu_canary-GDP; with the Gram a canary
        moves the release by less than its sensitivity)."""
        return min(self.reachable_epsilon, gdp_epsilon(self.mu_canary, delta=self.delta))

    @property
    def verdict(self) -> str:
        if max(self.epsilon_lower_bound, self.epsilon_lower_bound_gaussian) > (
            self.claimed_epsilon
        ):
            return "VIOLATION: the release leaks more than the claimed epsilon"
        if self.reach < REACH_SHARE * min(self.claimed_epsilon, self.epsilon_exact):
            return (
                f"not testable at this epsilon: this audit can certify at most "
                f"{self.reach:.3f}, below the claim's exact epsilon {self.epsilon_exact:.3f} "
                f"(claimed {self.claimed_epsilon:.3f}): its canary cannot move the release "
                "by the full sensitivity, or it has too few trials"
            )
        return "consistent with the claimed epsilon"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "release_audit",
            **asdict(self),
            "reach": self.reach,
            "verdict": self.verdict,
        }


def release_scores(
    include: np.ndarray,
    *,
    features: RandomFeatures,
    data: tuple[Tensor, Tensor],
    canary: tuple[Tensor, Tensor],
    classes: Sequence[int],
    sigma: float,
    gram: bool,
    release_fn: ReleaseFn = release,
) -> tuple[np.ndarray, float]:
    """Per trial, the release's projection on the canary's contribution (in units of its
    noise), from D + c where ``include``, else from D; and this canary's mu."""
    x, y = data
    x_in, y_in = torch.cat([x, canary[0]]), torch.cat([y, canary[1]])
    clean_out = coordinates(release(features, x, y, classes, sigma=None, gram=gram))
    clean_in = coordinates(release(features, x_in, y_in, classes, sigma=None, gram=gram))
    shift = clean_in - clean_out
    direction = shift / shift.norm()
    noise_std = sigma * (GRAM_SENSITIVITY if gram else 1.0)
    scores = np.empty(len(include))
    for j, inside in enumerate(include):
        xs, ys = (x_in, y_in) if inside else (x, y)
        r = release_fn(features, xs, ys, classes, sigma=sigma, gram=gram)
        scores[j] = float((coordinates(r) - clean_out) @ direction) / noise_std
    return scores, float(shift.norm()) / noise_std


def audit_release(
    *,
    noise_multiplier: float,
    delta: float,
    gram: bool = False,
    trials: int = 100_000,
    pairs: int = 32,
    records: int = 16,
    confidence: float = 0.95,
    release_fn: ReleaseFn = release,
    base: str = "pixels",
) -> ReleaseAudit:
    """Audit ``trials`` releases at noise ``noise_multiplier`` (module docstring): D is
    ``records`` random 28x28 images of two classes, the canary another of the first class,
    the features ``pairs`` random Fourier pairs (the mechanism is the same at any size;
    few features keep a trial cheap), on the pixels or on their ScatterNet coefficients
    (``base = "scatter"``, as ``embedding.base``). ``release_fn`` lets a test substitute a
    broken one."""
    gen = torch.Generator().manual_seed(0)  # D and c are the auditor's, public
    x = torch.rand(records + 1, 1, 28, 28, generator=gen)
    y = torch.arange(records + 1) % 2
    if base == "scatter":  # the coefficients' auto width (common.config: embedding.bandwidth)
        # computed once: a fixed, public map of each image alone, so the release is the same
        # function of the coefficients as of the images, and a trial costs no transform
        front = Scattering((1, 28, 28))
        x = front(x)
        features = RandomFeatures(front.size, pairs, bandwidth=0.5, seed=1)
    elif base == "pixels":
        features = RandomFeatures(28 * 28, pairs, bandwidth=math.sqrt(28 * 28 / 6), seed=1)
    else:
        raise ValueError(f"base={base!r}: the release is audited on 'pixels' or 'scatter'")
    include = secret_numpy_generator().integers(0, 2, trials).astype(bool)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only contend (30x slower beside a run)
    try:
        scores, mu_canary = release_scores(
            include,
            features=features,
            data=(x[:records], y[:records]),
            canary=(x[records:], torch.zeros(1, dtype=torch.long)),
            classes=[0, 1],
            sigma=noise_multiplier,
            gram=gram,
            release_fn=release_fn,
        )
    finally:
        torch.set_num_threads(threads)
    alpha = (1 - confidence) / 2  # the (eps, delta) test and the mu test
    mu_lb = gaussian_test_bound(scores, include, alpha=alpha)
    return ReleaseAudit(
        claimed_epsilon=compute_epsilon(
            [(noise_multiplier, EVENT_SAMPLE_RATE, 1)], delta=delta, kind="rdp"
        ),
        delta=delta,
        noise_multiplier=noise_multiplier,
        gram=gram,
        features=features.size,
        trials=trials,
        confidence=confidence,
        epsilon_lower_bound=hypothesis_test_bound(scores, include, delta=delta, alpha=alpha),
        reachable_epsilon=perfect_test_bound(include, delta=delta, alpha=alpha),
        mu_lower_bound=mu_lb,
        mu_claimed=1.0 / noise_multiplier,
        mu_canary=mu_canary,
        epsilon_exact=gdp_epsilon(1.0 / noise_multiplier, delta=delta),
        epsilon_lower_bound_gaussian=gdp_epsilon(mu_lb, delta=delta),
    )
