"""How a site's DP-SGD steps compose: per task (parallel) or over the whole run (sequential).

Under add/remove-one-record adjacency, steps that sample only from task t's records reveal
nothing about a record of another task: if every record of a site belongs to exactly one
task, a record's privacy loss is that of its own task's steps (parallel composition;
McSherry 2009), and the site's epsilon is the largest over its tasks. This holds for
class-incremental streams (a record's label picks its task) and for domain-incremental
streams of distinct datasets. It does *not* hold when records recur across tasks:
permuted-pixel streams (every task is the whole dataset), ``method = "joint"`` (every task
retrains on all earlier data) or canaries inserted into several tasks. Then every step of
the run is composed (sequential composition).

The check is on content, not on bookkeeping: every training record of every task is
fingerprinted by its *unpermuted* input bytes, so a permuted copy, a converted duplicate
or a re-inserted canary counts as the same record.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from common.data.types import Split

PER_TASK = "per-task"
SEQUENTIAL = "sequential"
COMPOSITIONS = ("auto", PER_TASK, SEQUENTIAL)


class CompositionError(ValueError):
    """Per-task composition was asked for, but some record is in more than one task."""


def fingerprints(split: Split) -> set[bytes]:
    """One digest per record of ``split``: its input bytes before any pixel permutation."""
    x = split.base_x[split.index].reshape(len(split), -1).contiguous().numpy()
    return {hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in x}


def shared_records(task_data: Sequence[Split]) -> int:
    """How many distinct records appear in the training data of more than one task."""
    seen: set[bytes] = set()
    shared: set[bytes] = set()
    for split in task_data:
        prints = fingerprints(split)
        shared |= prints & seen
        seen |= prints
    return len(shared)


def resolve_composition(wanted: str, task_data: Sequence[Split], *, where: str) -> str:
    """The composition in force: ``per-task`` when asked for (or ``auto``) and every record
    is in one task, else ``sequential``. Asking for ``per-task`` when records recur is an
    error that says how many do."""
    if wanted not in COMPOSITIONS:
        raise ValueError(f"dp.composition={wanted!r} is not one of {', '.join(COMPOSITIONS)}")
    if wanted == SEQUENTIAL:
        return SEQUENTIAL
    shared = shared_records(task_data)
    if shared == 0:
        return PER_TASK
    if wanted == PER_TASK:
        raise CompositionError(
            f"dp.composition='per-task' needs every record of {where} in exactly one task, but "
            f"{shared} records are in several (permuted streams, method 'joint' and canaries "
            "in several tasks reuse records); use 'auto' or 'sequential'"
        )
    return SEQUENTIAL


def scope(composition: str) -> str:
    """The scope sentence that goes with every epsilon a site reports."""
    base = "sample-level (add/remove one record), per site"
    if composition == PER_TASK:
        return (
            f"{base}; composed over all rounds of each task, parallel composition across "
            "tasks (each record is in one task): the site's epsilon is its largest task's"
        )
    return f"{base}; composed over all rounds and tasks"
