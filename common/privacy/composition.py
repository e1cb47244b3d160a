"""How a site's DP-SGD steps compose: per task (parallel) or over everything (sequential).

Under add/remove-one-record adjacency, steps that sample only from task t's records reveal
nothing about a record of another task: if every record of a site belongs to exactly one
task, a record's privacy loss is that of its own task's steps (parallel composition;
McSherry 2009), and the site's epsilon is the largest over its tasks. This holds for
class-incremental streams (a record's label picks its task) and for domain-incremental
streams of distinct datasets. It does *not* hold when records recur across tasks:
permuted-pixel streams (every task is the whole dataset) and ``method = "joint"`` (every
task retrains on all earlier data). Then every step is composed (sequential).

The choice is a protocol decision, so it is made from the configuration (scenario and
method), never from the records' content: a private record must not be able to change the
noise. The content is only *checked*: a configuration whose per-task claim the data
contradicts (the same record, input and label, in two tasks) is refused with the count.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from common.config.methods import method_of
from common.data.types import Split
from common.privacy.records import record_digests

PER_TASK = "per-task"
SEQUENTIAL = "sequential"
COMPOSITIONS = ("auto", PER_TASK, SEQUENTIAL)
DISJOINT_SCENARIOS = ("class", "domain")


class CompositionError(ValueError):
    """Per-task composition was asked for, but the configuration or data reuses records."""


def composition_for(wanted: str, *, scenario: str, method: str) -> str:
    """The composition in force, from configuration alone: ``auto`` is per-task for class-
    and domain-incremental streams (each record in one task), sequential for permuted
    streams and ``joint``; asking for per-task where the protocol reuses records is an error."""
    if wanted not in COMPOSITIONS:
        raise ValueError(f"dp.composition={wanted!r} is not one of {', '.join(COMPOSITIONS)}")
    if wanted == SEQUENTIAL:
        return SEQUENTIAL
    disjoint = scenario in DISJOINT_SCENARIOS and not method_of(method).all_tasks
    if disjoint:
        return PER_TASK
    if wanted == PER_TASK:
        raise CompositionError(
            f"dp.composition='per-task' needs every record in exactly one task, but "
            f"scenario={scenario!r} with method={method!r} trains on records in several tasks; "
            "use 'auto' or 'sequential'"
        )
    return SEQUENTIAL


def shared_records(task_data: Sequence[Split]) -> int:
    """How many distinct records (inputs) are in the training data of several tasks."""
    seen = np.zeros(0, dtype=np.uint64)
    shared = np.zeros(0, dtype=np.uint64)
    for split in task_data:
        prints = record_digests(split)
        shared = np.union1d(shared, np.intersect1d(prints, seen, assume_unique=True))
        seen = np.union1d(seen, prints)
    return int(shared.size)


def check_composition(composition: str, task_data: Sequence[Split], *, where: str) -> None:
    """Refuse per-task composition when the same record is in several tasks' data."""
    if composition != PER_TASK:
        return
    shared = shared_records(task_data)
    if shared:
        raise CompositionError(
            f"per-task composition needs every record of {where} in exactly one task, but "
            f"{shared} records (same input) are in several tasks' training data; "
            "remove the duplicates or set dp.composition='sequential'"
        )


LIFETIME = "lifetime of the site (all runs on its records)"


def scope(composition: str) -> str:
    """The scope sentence that goes with every epsilon a site reports (always lifetime:
    common.privacy.ledger)."""
    base = "sample-level (add/remove one record), per site"
    if composition == PER_TASK:
        within = (
            "composed over all rounds of each task, parallel composition across tasks (each "
            "record is in one task): the site's epsilon is its largest task's"
        )
    else:
        within = "composed over all rounds and tasks"
    return f"{base}; {within}; {LIFETIME}"
