"""A site's record count per class of a task, released once per task with Gaussian noise
(``dp.class-histogram``).

With ``train.solver-data = "synthetic"`` a site's solver learns the current task from its
own generator's samples, of classes taken from the configuration: under label skew it
would learn classes the site holds few or no records of from a generator that never saw
them. The noised counts let it draw each class in proportion to what the site holds.

Privacy: adding or removing one record changes one count by one (L2 sensitivity 1), so
counts plus N(0, sigma^2) noise per class is the Gaussian mechanism with noise multiplier
sigma: in the accountant, one step at sampling rate 1. The ledger plans it with the task's
DP-SGD steps (calibrated together, same sigma) and records it before the counts exist;
the noise comes from a fresh secret generator (:mod:`common.privacy.randomness`), each
value a sum of 4 Gaussians as in Opacus' secure mode. The
counts stay at the site; what it releases (its solver) is post-processing of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from common.privacy.randomness import secret_gaussian

EVENT_SAMPLE_RATE = 1.0  # the accountant's view: every record, one step


def noised_class_counts(
    labels: torch.Tensor, classes: Sequence[int], *, sigma: float
) -> dict[int, float]:
    """Class -> count of ``labels`` equal to it, plus N(0, sigma^2) secret noise."""
    if sigma <= 0:
        raise ValueError(f"sigma={sigma!r}: the histogram's noise must be positive")
    noise = secret_gaussian(len(classes), sigma=sigma)
    return {
        int(c): float((labels == c).sum().item()) + float(z)
        for c, z in zip(classes, noise, strict=True)
    }


def class_weights(histogram: Mapping[int, float], classes: Sequence[int]) -> list[float]:
    """Sampling weights of ``classes`` from a noised histogram (post-processing): negative
    counts count as none; no positive count at all: uniform."""
    w = [max(0.0, float(histogram.get(int(c), 0.0))) for c in classes]
    return w if sum(w) > 0 else [1.0] * len(classes)
