"""Fit a conditional generator to released per-class feature sums (DP-MERF's generator
step): post-processing of the release, done by a site for its own solver and by the
server for the task's replay.

For each class c with target mean m_c (released sums / released count), minimise
||mean_i psi(G(z_i, c)) - m_c||^2 over a batch of fresh z per step: the squared MMD with the
random-feature kernel, up to a constant (Harder et al. 2021).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from common.models.embedding import RandomFeatures
from common.models.generator import Generator
from common.training.optim import adam


def class_targets(
    features: RandomFeatures, sums: Tensor, classes: Sequence[int]
) -> dict[int, Tensor]:
    """Class -> target mean embedding, from (noised) sums; a class whose (noised) count is
    not positive has no target (nothing to fit; its sampling weight is 0 too)."""
    counts = features.counts(sums)
    out = {}
    for row, c in enumerate(classes):
        n = float(counts[row])
        if n > 0:
            target = sums[row].float() / max(n, 1.0)
            target[-1] = features.scale  # the constant feature's mean is known
            out[int(c)] = target
    return out


def fit_generator(
    generator: Generator,
    features: RandomFeatures,
    targets: dict[int, Tensor],
    *,
    steps: int,
    batch: int,
    lr: float,
    seed: int,
) -> float:
    """``steps`` Adam steps on the summed squared distances of every class's sample mean
    embedding to its target; returns the last step's loss (0 without targets)."""
    if not targets:
        return 0.0
    device = next(generator.parameters()).device
    features.to(device)
    rng = torch.Generator().manual_seed(seed)
    opt = adam(generator.parameters(), lr=lr)
    labels = {c: torch.full((batch,), c, device=device) for c in targets}
    goal = {c: t.to(device) for c, t in targets.items()}
    generator.train()
    loss = torch.zeros(())
    for _ in range(steps):
        loss = torch.zeros((), device=device)
        for c, y in labels.items():
            z = torch.randn(batch, generator.latent_dim, generator=rng).to(device)
            mean = features(generator(z, y)).mean(0)  # (F,)
            loss = loss + (mean - goal[c]).square().sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    generator.eval()
    return float(loss.detach())


def fit_to_release(
    generator: Generator,
    features: RandomFeatures,
    release: Tensor,
    classes: Sequence[int],
    *,
    steps: int,
    batch: int,
    lr: float,
    seed: int,
) -> dict[int, float]:
    """A site's own generator of the task, fitted to its release (rows in ``classes``
    order); returns the release's (noised) count per class, for drawing the classes."""
    targets = class_targets(features, release, classes)
    fit_generator(generator, features, targets, steps=steps, batch=batch, lr=lr, seed=seed)
    counts = features.counts(release)
    return {int(c): float(n) for c, n in zip(classes, counts, strict=True)}
