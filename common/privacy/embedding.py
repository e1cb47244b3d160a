"""A site's per-class sums of random features of one task, released once per task
(``generator.kind = "embedding"``; :mod:`common.models.embedding`).

Privacy: every record's feature vector has L2 norm 1, and a record belongs to one class,
so adding or removing one record changes the (classes x features) matrix of sums by at
most 1 in Frobenius norm: the sums plus N(0, sigma^2) noise on every value is the Gaussian
mechanism with noise multiplier sigma (in the accountant: one step at sampling rate 1,
``common.privacy.ledger.TASK_RELEASE_RATE``). The ledger plans and records it before the sums exist
(:class:`common.privacy.session.PrivacySession`); the noise comes from a fresh secret
generator (:mod:`common.privacy.randomness`), each value a sum of 4 Gaussians as in Opacus'
secure mode. The count coordinate of each row is then a noised count of the class.

With ``solver.arch = "ridge"`` (:mod:`common.models.ridge`) the release also carries the
task's second moment sum_i psi_i psi_i^T (F x F) below the sums. One record changes it by
psi psi^T, of Frobenius norm ||psi||^2 = 1; sums and Gram together move by at most sqrt(2)
(:data:`GRAM_SENSITIVITY`). The Gram is symmetric, so its noise is drawn in the
coordinates where the Frobenius norm is the plain L2 norm (:func:`coordinates`: the
diagonal, and each off-diagonal value times sqrt(2), once): N(0, (sigma sqrt(2))^2) on
every coordinate is the Gaussian mechanism with noise multiplier sigma, one event in the
ledger. Back in the matrix: the sums and the diagonal get noise of std sigma sqrt(2), each
off-diagonal value (mirrored: the matrix stays symmetric) std sigma. (Until 2026-12-07 the
upper triangle's values each got std sigma sqrt(2), as if one could move by the whole
sensitivity: twice the variance the Gram needs off its diagonal.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from common.models.embedding import RandomFeatures
from common.privacy.randomness import secret_generator

GRAM_SENSITIVITY = math.sqrt(2.0)  # sums (L2) and the Gram (Frobenius), each moved <= 1
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


@torch.no_grad()
def gram_sum(features: RandomFeatures, x: Tensor) -> Tensor:
    """(F, F): sum over the records of psi psi^T (float64)."""
    out = torch.zeros(features.size, features.size, dtype=torch.float64)
    for start in range(0, len(x), CHUNK):
        psi = features(x[start : start + CHUNK]).double().cpu()  # (b, F)
        out += psi.T @ psi
    return out


def _secret_normal(shape: tuple[int, ...], std: float) -> Tensor:
    """N(0, std^2) from a fresh secret generator, each value a sum of 4 Gaussians."""
    gen = secret_generator()
    return torch.randn(4, *shape, generator=gen, dtype=torch.float64).sum(0) * std / 2


def noised(sums: Tensor, *, sigma: float) -> Tensor:
    """``sums`` plus N(0, sigma^2) secret noise on every value (float32, as it travels)."""
    if sigma <= 0:
        raise ValueError(f"sigma={sigma!r}: the embedding's noise must be positive")
    return (sums.double() + _secret_normal(tuple(sums.shape), sigma)).float()


def noised_gram(gram: Tensor, *, sigma: float) -> Tensor:
    """A symmetric Gram matrix plus secret noise, N(0, sigma^2) on its diagonal and
    N(0, sigma^2 / 2) on each value above it, mirrored below: N(0, sigma^2) on every one of
    its :func:`coordinates` (float32)."""
    if sigma <= 0:
        raise ValueError(f"sigma={sigma!r}: the embedding's noise must be positive")
    draw = _secret_normal(tuple(gram.shape), sigma)
    above = torch.triu(draw, diagonal=1) / math.sqrt(2.0)
    noise = torch.diag(torch.diagonal(draw)) + above + above.T
    return (gram.double() + noise).float()


def coordinates(values: Tensor) -> Tensor:
    """A release's values in the coordinates its noise is drawn in, flattened (float64): the
    sums; with the Gram below them, its diagonal and sqrt(2) x each value above it, where
    the Frobenius norm of a symmetric matrix is the L2 norm of these coordinates. One record
    moves them by at most :data:`GRAM_SENSITIVITY`; each carries the same noise."""
    v = values.double()
    classes = class_rows(tuple(v.shape))
    if classes == v.shape[0]:
        return v.flatten()
    gram = v[classes:]
    size = gram.shape[0]
    rows, cols = torch.triu_indices(size, size, offset=1)
    return torch.cat(
        [v[:classes].flatten(), torch.diagonal(gram), math.sqrt(2.0) * gram[rows, cols]]
    )


def release_shape(classes: int, size: int, *, gram: bool) -> tuple[int, int]:
    """A task's release: (classes [+ size, the Gram's rows]) x size features
    (:func:`class_rows` undoes it)."""
    return classes + (size if gram else 0), size


def class_rows(shape: Sequence[int]) -> int:
    """How many rows of a release of ``shape`` are per-class sums: all of them, or all but
    the F rows of the Gram below them (a release with the Gram has more rows than columns)."""
    rows, cols = shape
    return rows - cols if rows > cols else rows


def noise_only(classes: int, size: int, *, sigma: float, gram: bool) -> Tensor:
    """A release of no record: the noise of :func:`release` alone, (classes [+ size]) x size
    (distributed noise: the share a site that sits a task out adds to a secure sum)."""
    std = sigma * GRAM_SENSITIVITY if gram else sigma
    sums = noised(torch.zeros(classes, size, dtype=torch.float64), sigma=std)
    if not gram:
        return sums
    return torch.cat([sums, noised_gram(torch.zeros(size, size, dtype=torch.float64), sigma=std)])


def release(
    features: RandomFeatures,
    x: Tensor,
    y: Tensor,
    classes: Sequence[int],
    *,
    sigma: float | None,
    gram: bool = False,
) -> Tensor:
    """The task's release, noised when ``sigma`` is given (DP): per-class sums,
    (len(classes), F); with ``gram``, the Gram matrix below them, (len(classes) + F, F),
    every one of its :func:`coordinates` noised at sigma x :data:`GRAM_SENSITIVITY`."""
    sums = class_sums(features, x, y, classes)
    if not gram:
        return noised(sums, sigma=sigma) if sigma is not None else sums.float()
    second = gram_sum(features, x)
    if sigma is None:
        return torch.cat([sums, second]).float()
    std = sigma * GRAM_SENSITIVITY
    return torch.cat([noised(sums, sigma=std), noised_gram(second, sigma=std)])
