"""A site's per-class sums of random features of one task, released once per task
(``generator.kind = "embedding"``; :mod:`common.models.embedding`).

Privacy: every record's feature vector has L2 norm 1, and a record belongs to one class,
so adding or removing one record changes the (classes x features) matrix of sums by at
most 1 in Frobenius norm: the sums plus N(0, sigma^2) noise on every value is the Gaussian
mechanism with noise multiplier sigma (in the accountant: one step at sampling rate 1, as
:mod:`common.privacy.histogram`). The ledger plans and records it before the sums exist
(:class:`common.privacy.session.PrivacySession`); the noise comes from a fresh secret
generator (:mod:`common.privacy.randomness`), each value a sum of 4 Gaussians as in Opacus'
secure mode. The count coordinate of each row is then a noised count of the class.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from common.models.embedding import RandomFeatures
from common.privacy.randomness import secret_generator

EVENT_SAMPLE_RATE = 1.0  # the accountant's view: every record, one step
CHUNK = 1024  # records per feature computation (memory: CHUNK x features)


@torch.no_grad()
def class_sums(features: RandomFeatures, x: Tensor, y: Tensor, classes: Sequence[int]) -> Tensor:
    """(len(classes), features.size): the sum of psi over the records of each class."""
    out = torch.zeros(len(classes), features.size, dtype=torch.float64)
    for start in range(0, len(x), CHUNK):
        xs, ys = x[start : start + CHUNK], y[start : start + CHUNK]
        psi = features(xs).double().cpu()  # (b, F)
        for row, c in enumerate(classes):
            out[row] += psi[ys.cpu() == c].sum(0)
    return out


def noised(sums: Tensor, *, sigma: float) -> Tensor:
    """``sums`` plus N(0, sigma^2) secret noise on every value (float32, as it travels)."""
    if sigma <= 0:
        raise ValueError(f"sigma={sigma!r}: the embedding's noise must be positive")
    gen = secret_generator()
    noise = torch.randn(4, *sums.shape, generator=gen, dtype=torch.float64).sum(0) * sigma / 2
    return (sums.double() + noise).float()


def release(
    features: RandomFeatures,
    x: Tensor,
    y: Tensor,
    classes: Sequence[int],
    *,
    sigma: float | None,
) -> Tensor:
    """The task's release: per-class sums, noised when ``sigma`` is given (DP)."""
    sums = class_sums(features, x, y, classes)
    return noised(sums, sigma=sigma) if sigma is not None else sums.float()
