"""``replay.mixture = "class-counts"``: a site reports how its records of the current task
split over the task's classes, and the ensemble draws each class from the sites' generators
in proportion to their records of it (not to their records of the task).

Under a Dirichlet label skew a site may hold a handful of a task's class: its generator
draws that class badly, and the plain mixture (by task counts) still gives it the site's
whole weight for every class. The counts travel as ``class-count-<c>`` train metrics
(released: docs/privacy-audit.md; refused under DP by the configuration). The server
treats them as untrusted: only their split is used (:func:`class_shares`), and the total
stays the site's bounded weight, so a site claiming 1e30 records of one class moves at most
its own bounded weight onto that class.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import torch

from common.protocol import CLASS_COUNT_PREFIX as PREFIX

PATTERN = re.compile(rf"{PREFIX}\d+")


def class_count_metrics(labels: torch.Tensor, classes: Sequence[int]) -> dict[str, float]:
    """``{"class-count-<c>": records of class c}`` for each of the task's ``classes``."""
    return {f"{PREFIX}{int(c)}": float((labels == int(c)).sum()) for c in classes}


def reported_counts(metrics: Mapping[str, float]) -> dict[int, float]:
    """``{c: count}`` of a reply's ``class-count-<c>`` metrics (as reported: untrusted)."""
    return {int(k[len(PREFIX) :]): float(v) for k, v in metrics.items() if PATTERN.fullmatch(k)}


def class_shares(reported: Mapping[int, float], classes: Sequence[int]) -> dict[int, float] | None:
    """The split of a site's records over ``classes`` (shares summing to 1) from the counts
    it reported (:func:`reported_counts`); None when it reports no usable count. Counts of
    other classes are ignored; a negative or non-finite count counts as 0."""
    counts = {}
    for c in classes:
        value = float(reported.get(int(c), 0.0))
        counts[int(c)] = value if math.isfinite(value) and value > 0 else 0.0
    total = sum(counts.values())
    if not math.isfinite(total) or total <= 0:
        return None
    return {c: v / total for c, v in counts.items()}


def class_weight_rows(
    weights: Sequence[float],
    reported: Sequence[Mapping[int, float] | None],
    classes: Sequence[int],
    current: Sequence[int],
) -> tuple[tuple[float, ...], ...]:
    """Per generator, one weight per replayed class: its weight times its share of a class
    of the finished task (``current``; an even split when it reported none), its weight
    for the earlier classes (which every site's generator learned from the same replay).
    ``reported``: per generator, the counts its site reported (None: none)."""
    even = 1.0 / len(current) if current else 0.0
    rows = []
    for w, counts in zip(weights, reported, strict=True):
        split = class_shares(counts, current) if counts is not None else None
        row = []
        for c in classes:
            if c in current:
                row.append(float(w) * (split.get(int(c), 0.0) if split is not None else even))
            else:
                row.append(float(w))
        rows.append(tuple(row))
    return tuple(rows)
