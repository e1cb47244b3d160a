"""Minibatches of a Split: shuffled epochs (plain) or Poisson sampling (DP-SGD)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from common.data.types import Split


def shuffled_batches(
    split: Split, batch_size: int, *, rng: torch.Generator
) -> Iterator[tuple[Tensor, Tensor]]:
    """Endless (x, y) batches; each epoch is a fresh permutation (last partial batch kept)."""
    n = len(split)
    if n == 0:
        raise ValueError("cannot draw batches from an empty split")
    while True:
        order = torch.randperm(n, generator=rng)
        for start in range(0, n, batch_size):
            yield split.batch(order[start : start + batch_size])


def poisson_batches(
    split: Split, *, sample_rate: float, rng: torch.Generator
) -> Iterator[tuple[Tensor, Tensor]]:
    """Endless batches where every record is in each batch independently with ``sample_rate``.

    This is the sampling the DP accountants assume; batches may be empty.
    """
    n = len(split)
    if n == 0:
        raise ValueError("cannot draw batches from an empty split")
    if not 0.0 < sample_rate <= 1.0:
        raise ValueError(f"sample_rate={sample_rate} must be in (0, 1]")
    while True:
        mask = torch.rand(n, generator=rng) < sample_rate
        yield split.batch(mask.nonzero(as_tuple=True)[0])
