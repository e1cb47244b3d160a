"""The server's side of ``generator.kind = "embedding"``: the sites' releases of a task,
bounded and summed, and the task's generator fitted to the sum.

Each site's release is (classes of the task x features) sums of norm-1 random features plus
noise (:mod:`common.privacy.embedding`). The server keeps the first release of every site
of the task (a later one of the same site is ignored: a site releases once per task; its
later rounds resend the same values), checks it (shape, float32, finite, before it is
kept: :func:`check_release`), and at the task's end:

- bounds each release's Frobenius norm by ``fed.weight-cap`` x the median norm of the
  task's releases (from 3 releases on; below 3 a median bounds nothing). Scaling a release
  keeps that site's per-class means and proportions, so an honest site holding much more
  than the others loses weight, not shape; a hostile one (1e30, a fake count) contributes
  at most as much as a site of twice the median size;
- sums them: every class's sum over sites (its noise sums too: the per-site Gaussians of
  sigma make a sum of sigma sqrt(sites));
- fits the task's generator to the per-class means (post-processing; the solver and replay
  then draw from it).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from common import wire
from common.models.embedding import RandomFeatures
from common.models.generator import Generator
from common.training.embedding import fit_to_release

log = logging.getLogger("fedreplay.server")
MIN_FOR_BOUND = 3  # releases from which the median bounds anything


def check_release(release: np.ndarray, shape: tuple[int, int] | None) -> None:
    """Raise :class:`wire.WireError` naming what is wrong with a received release."""
    if shape is None:
        raise wire.WireError("an embedding release in a run whose generator.kind is not embedding")
    if tuple(release.shape) != tuple(shape):
        raise wire.WireError(f"embedding has shape {list(release.shape)}, expected {list(shape)}")
    if release.dtype != np.float32:
        raise wire.WireError(f"embedding has dtype {release.dtype}, expected float32")
    if not np.isfinite(release).all():
        raise wire.WireError("embedding holds NaN or infinite values")


@dataclass
class EmbeddingReleases:
    """The current task's releases, one per site key."""

    by_site: dict[str, np.ndarray] = field(default_factory=dict)

    def receive(self, site: str, release: np.ndarray) -> bool:
        """Keep ``site``'s first release of the task (False: it had one already)."""
        if site in self.by_site:
            return False
        self.by_site[site] = np.array(release, dtype=np.float64)
        return True

    def bounded_sum(self, weight_cap: float) -> tuple[np.ndarray, dict[str, float]]:
        """The sum over sites, each cut to ``weight_cap`` x the median norm; and the
        factor each site was scaled by (1 = untouched)."""
        if not self.by_site:
            raise ValueError("no site released an embedding of this task")
        sites = sorted(self.by_site)
        norms = np.array([np.linalg.norm(self.by_site[s]) for s in sites])
        factors = np.ones(len(sites))
        if weight_cap > 0 and len(sites) >= MIN_FOR_BOUND:
            cap = weight_cap * float(np.median(norms))
            factors = np.minimum(1.0, cap / np.maximum(norms, 1e-12))
        total = sum(f * self.by_site[s] for f, s in zip(factors, sites, strict=True))
        return np.asarray(total), {s: float(f) for s, f in zip(sites, factors, strict=True)}

    def snapshot(self) -> dict[str, list[list[float]]]:
        return {s: r.tolist() for s, r in self.by_site.items()}

    @staticmethod
    def restore(state: dict[str, list[list[float]]] | None) -> EmbeddingReleases:
        return EmbeddingReleases({s: np.array(r) for s, r in (state or {}).items()})


def fit_task_generator(
    generator: Generator,
    features: RandomFeatures,
    releases: EmbeddingReleases,
    classes: Sequence[int],
    *,
    weight_cap: float,
    steps: int,
    batch: int,
    lr: float,
    seed: int,
) -> dict[str, float]:
    """Fit ``generator`` to the task's bounded sum; returns each site's scaling factor."""
    total, factors = releases.bounded_sum(weight_cap)
    cut = {s: f for s, f in factors.items() if f < 1.0}
    if cut:
        log.warning("embedding releases cut to the bound: %s", cut)
    counts = fit_to_release(
        generator,
        features,
        torch.from_numpy(total).float(),
        classes,
        steps=steps,
        batch=batch,
        lr=lr,
        seed=seed,
    )
    log.info(
        "task generator fitted to %d sites' embeddings (noised counts %s)",
        len(factors),
        " ".join(f"{c}:{n:.0f}" for c, n in counts.items()),
    )
    return factors
