"""Random Fourier features for a mean-embedding generator (DP-MERF, Harder et al. 2021).

``generator.kind = "embedding"``: a class's data is summarised by the mean of
psi(x) = [cos(W x), sin(W x), 1] / sqrt(pairs + 1) over its records, W ~ N(0, I / bandwidth^2)
(random features of a Gaussian kernel, Rahimi & Recht 2007). Every record's psi has norm 1,
so adding or removing one record moves a per-class *sum* of psi by at most 1 (L2
sensitivity 1): one Gaussian release per task makes the sums private
(:mod:`common.privacy.embedding`). The last coordinate, scale x count, counts the class.

W is public: drawn from the run's seed, the same at every site and at the server (only the
records' sums are private). A generator of any kind (here the AC-GAN's generator network)
is then fitted to the released means by minimising the squared distance between the mean
of psi over its samples and the target (:mod:`common.training.embedding`).
``embedding.base = "scatter"``: x is first mapped to its ScatterNet coefficients
(common.models.scatter; public and data-free too), for the ridge solver alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from common.config import ExperimentConfig
from common.data.types import Shape
from common.models.scatter import Scattering

Front = Callable[[Tensor], Tensor]  # (B, ...) -> (B, D): what the features are drawn on


class RandomFeatures:
    """psi: (B, *shape) -> (B, 2 pairs + 1), every row of norm 1."""

    def __init__(
        self,
        input_size: int,
        pairs: int,
        bandwidth: float,
        *,
        seed: int,
        front: Front | None = None,
    ) -> None:
        if bandwidth <= 0 or pairs <= 0:
            raise ValueError(f"bandwidth={bandwidth!r} and pairs={pairs!r} must be positive")
        g = torch.Generator().manual_seed(seed)
        self.w = torch.randn(input_size, pairs, generator=g) / bandwidth  # (D, P)
        self.scale = 1.0 / math.sqrt(pairs + 1)
        self.size = 2 * pairs + 1
        self.front = front  # None: the pixels, flattened

    @classmethod
    def from_weights(cls, w: Tensor, *, front: Front | None = None) -> RandomFeatures:
        """The map of a given (D, P) projection (e.g. a ridge solver's own)."""
        out = cls.__new__(cls)
        out.w, out.scale, out.size = w, 1.0 / math.sqrt(w.shape[1] + 1), 2 * w.shape[1] + 1
        out.front = front
        return out

    def to(self, device: torch.device) -> RandomFeatures:
        self.w = self.w.to(device)
        return self

    def __call__(self, x: Tensor) -> Tensor:  # (B, ...) -> (B, 2P + 1)
        base = self.front(x) if self.front is not None else x.flatten(1)
        proj = base.to(self.w.dtype) @ self.w  # (B, P)
        ones = torch.ones(x.shape[0], 1, device=proj.device, dtype=proj.dtype)
        return torch.cat([proj.cos(), proj.sin(), ones], dim=1) * self.scale

    def counts(self, sums: Tensor) -> Tensor:  # (C, 2P + 1) -> (C,): the count coordinate
        return sums[:, -1] / self.scale


def features_for(cfg: ExperimentConfig, shape: Shape) -> RandomFeatures:
    """The run's public features (seeded by ``seed``: the same at every site and server),
    on the pixels or on their ScatterNet coefficients (``embedding.base``)."""
    front = Scattering(shape) if cfg.embedding.base == "scatter" else None
    size = front.size if front is not None else math.prod(shape)
    bandwidth = cfg.embedding.bandwidth_for(size)
    return RandomFeatures(
        size, cfg.embedding.features, bandwidth, seed=cfg.seed + 424242, front=front
    )
