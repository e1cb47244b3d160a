"""The audit holdout: a share of every task's training records that no site trains on.

A membership-inference audit compares a site's training records (members) with records of
the *same distribution* that no model saw (non-members). A dataset's test split is not
always that: MNIST's test digits, for one, are measurably easier than its training digits,
which a loss attack reads as (anti-)membership. Withholding a class-stratified share of the
training split, deterministically from the seed, gives the auditor such records, and every
process (sites, server, auditor) computes the same cut without talking.

kept, held = withhold(stream, fraction=0.1, seed=cfg.seed)
# kept: the stream with every task's train split cut down (partitioned across sites)
# held: one Split per task, the withheld training records (the audit's non-members)
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from .types import Split, TaskStream


def holdout_seed(seed: int, task_index: int) -> int:
    """The seed of one task's holdout cut (same in every process)."""
    entropy = [seed % (1 << 64), task_index, 2]  # 0/1 are the partition's train/test streams
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0])


def holdout_rows(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Sorted rows of ``labels`` to withhold: ``round(fraction * n_c)`` of every class c."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"holdout fraction={fraction!r} must be in [0, 1)")
    y = labels.detach().cpu().numpy()
    rng = np.random.default_rng(seed)
    held = [
        rng.permutation(np.flatnonzero(y == c))[: round(fraction * int((y == c).sum()))]
        for c in np.unique(y)
    ]
    rows = np.concatenate(held) if held else np.empty(0, dtype=np.int64)
    return torch.from_numpy(np.sort(rows).astype(np.int64))


def withhold(
    stream: TaskStream, *, fraction: float, seed: int
) -> tuple[TaskStream, tuple[Split, ...]]:
    """``stream`` without the holdout, and the holdout of every task (see module docstring)."""
    if fraction == 0.0:
        empty = tuple(t.train.subset(torch.zeros(0, dtype=torch.long)) for t in stream.tasks)
        return stream, empty
    kept_tasks, held = [], []
    for task in stream.tasks:
        rows = holdout_rows(task.train.y, fraction, holdout_seed(seed, task.index))
        keep = torch.ones(len(task.train), dtype=torch.bool)
        keep[rows] = False
        kept_tasks.append(replace(task, train=task.train.subset(torch.nonzero(keep).flatten())))
        held.append(task.train.subset(rows))
    return replace(stream, tasks=tuple(kept_tasks)), tuple(held)
