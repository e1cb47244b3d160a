"""The canary records of the one-run privacy audit (``audit.canaries``): made from the run's
seed, so the canary site and the server rebuild the same ones; a random half is added to
the canary site's training data of one task (common.sitedata). How they are scored and
what they certify: common.audit.canaries."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from common.config import ExperimentConfig
from common.data.types import Shape, Split


@dataclass(frozen=True)
class Canaries:
    """``m`` canary records and the coin flips that decide which join the training data."""

    split: Split
    include: np.ndarray  # (m,) bool

    @property
    def included(self) -> Split:
        """The canaries to add to the training data."""
        return self.split.subset(torch.from_numpy(np.flatnonzero(self.include)))

    @property
    def excluded(self) -> Split:
        return self.split.subset(torch.from_numpy(np.flatnonzero(~self.include)))


def make_canaries(
    shape: Shape, num_classes: int, m: int, seed: int, *, source: Split | None = None
) -> Canaries:
    """``m`` canaries with random labels and independent fair-coin inclusion.

    Inputs are uniform noise in [0, 1], or, with ``source``, ``m`` distinct records of
    ``source`` relabelled with a random *other* class (mislabelled examples).
    """
    if m < 1:
        raise ValueError(f"m must be >= 1, got {m}")
    gen = torch.Generator().manual_seed(seed)
    if source is None:
        x = torch.rand((m, *shape), generator=gen)
        y = torch.randint(0, num_classes, (m,), generator=gen)
    else:
        if m > len(source):
            raise ValueError(f"{m} canaries asked from a source of {len(source)} records")
        x, y_true = source.batch(torch.randperm(len(source), generator=gen)[:m])
        shift = torch.randint(1, max(num_classes, 2), (m,), generator=gen)
        y = (y_true + shift) % num_classes
    include = torch.randint(0, 2, (m,), generator=gen).bool().numpy()
    return Canaries(Split.from_tensors(x.clone(), y), include)


def run_canaries(cfg: ExperimentConfig, shape: Shape, num_classes: int) -> Canaries | None:
    """The canaries of a run (``audit.canaries``), the same wherever they are rebuilt:
    the canary site inserts the included ones, the server saves all for the audit."""
    if cfg.audit.canaries <= 0:
        return None
    return make_canaries(shape, num_classes, cfg.audit.canaries, seed=cfg.seed + 7_777_777)
