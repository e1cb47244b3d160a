"""Aggregation of site updates with one site's influence bounded.

Everything a site sends is untrusted. Before a reply reaches the aggregate:

1. **Counts are capped.** A site's weight is its reported ``num-examples``, at most the
   count it declared the first time it trained on the task (it cannot grow later), and at
   most ``weight_cap`` times the median count of the round's replies (one site cannot
   claim the average by reporting 1e9).
2. **Update norms are bounded, per part.** The update of each part (``solver``,
   ``generator``) is its difference from the current global model; an update longer than
   ``update_clip`` times the round's reference norm of that part is scaled down to that
   length (norm bounding, Sun et al. 2019, "Can you really backdoor federated
   learning?"), so x10, x100, sign-flipped or 1e30 updates move the model no further than
   an honest one. The reference is the (f + 1)-th largest norm of the round's updates of
   the part, f = ``num_malicious`` (the second-largest by default), from 2f + 1 replies on
   (the median below, and at 2f + 1 the two agree): f sites can neither raise it (it is at
   most the largest honest norm) nor pull it down by shrinking their own updates (it is at
   least the (f + 1)-th largest honest norm). A median reference could be pulled down: an
   ALIE update shrunk towards zero cut the two sites holding most of a task and cost 9.4
   points where this reference costs 1.0 (docs/notebook/results.md, "A norm bound a
   shrunken update cannot pull down"). Norms are taken in float64 (1e30 squared does not
   overflow); a non-finite norm sorts above every finite one.
3. **An update that pulls against every other site is left out.** With three replies or
   more, each part's update is compared by cosine with every other site's update of that
   part (all measured from the same previous global model); one whose best cosine is
   below -3 / sqrt(d) (d: the part's size; independent random directions have cosines of
   about +-1 / sqrt(d), so noise-dominated honest updates, under DP say, are not judged)
   agrees with no other site and is left out of that part's rule for the round, as long
   as two replies remain. A sign-flipped update at an honest norm passes
   the norm bound; with three sites the coordinate-wise median then sits between the two
   honest sites and zero, and the newest task is learned at a fraction of its pace. Krum,
   multi-Krum and Bulyan choose by distance themselves and are left as they are; with
   ``update_clip = 0`` (the update bounds off) it is off too.
4. **The rule** (``fed.aggregation``) combines the bounded updates part by part: ``fedavg``
   (weighted mean), or one of Flower's robust rules on the updates (``median``,
   ``krum``, ``multikrum``, ``bulyan``: flwr.server.strategy.aggregate), or ``trimmed-mean``
   (coordinate-wise, cutting ``trim_fraction`` of the replies at each end and at least one
   from three replies on; Flower's cuts none below five).
5. **The aggregate is checked.** A non-finite aggregate is refused: the previous global
   model is kept and the round says so.

With fewer than three replies the reference and the counts' median are those of one or two
sites, so the bounds protect nothing against a hostile site among two: say so where a run
has two sites.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from flwr.server.strategy.aggregate import (
    aggregate_bulyan,
    aggregate_krum,
    aggregate_median,
)

from common.config import AGGREGATIONS
from common.protocol import part_of

RULES = AGGREGATIONS  # declared once, with the configuration that names them

Arrays = dict[str, np.ndarray]


class AggregationError(ValueError):
    """The round's updates cannot be aggregated (the previous model is kept)."""


@dataclass(frozen=True)
class Bounds:
    """How far one site can move the aggregate (``fed.aggregation`` and ``robust.*``)."""

    rule: str = "fedavg"
    update_clip: float = 1.0  # x the round's reference update norm, per part; 0 = off
    weight_cap: float = 2.0  # x median example count of the round; 0 = off
    trim_fraction: float = 0.2  # trimmed-mean: cut this fraction at each end
    num_malicious: int = 1  # sites assumed hostile: the norm reference, krum, bulyan

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"fed.aggregation={self.rule!r} is not one of {', '.join(RULES)}")


@dataclass
class UpdateReport:
    """What the bounds did to one reply (kept in the round's log)."""

    weight: float
    weight_capped: bool = False
    norms: dict[str, float] = field(default_factory=dict)  # per part, before clipping
    clipped: dict[str, float] = field(default_factory=dict)  # part -> scale applied (< 1)
    against: dict[str, float] = field(default_factory=dict)  # part left out -> best cosine


def cap_weights(
    counts: Sequence[float], declared: Sequence[float | None], *, cap: float
) -> list[float]:
    """Example counts as weights: at most the declared count and ``cap`` x the median."""
    weights = [min(n, d) if d is not None else n for n, d in zip(counts, declared, strict=True)]
    if cap > 0 and weights:
        limit = cap * float(np.median(weights))
        weights = [min(w, limit) for w in weights]
    return weights


def reference_norm(norms: Sequence[float], *, tolerate: int) -> float:
    """The norm an update is bounded by (x ``update_clip``): the (``tolerate`` + 1)-th
    largest of ``norms`` from 2 ``tolerate`` + 1 norms on, their median below. ``tolerate``
    sites can neither raise it nor lower it beyond the honest sites' own norms."""
    ordered = np.sort(np.asarray(norms, dtype=np.float64))  # nan and inf sort last
    if len(ordered) >= 2 * tolerate + 1:
        return float(ordered[len(ordered) - 1 - tolerate])
    return float(np.median(ordered))


def bounded_updates(
    current: Mapping[str, np.ndarray],
    replies: Sequence[Mapping[str, np.ndarray]],
    *,
    clip: float,
    tolerate: int = 1,
) -> tuple[list[Arrays], list[dict[str, float]], list[dict[str, float]]]:
    """Each reply's update (reply - current), each part scaled to at most ``clip`` x the
    reference norm of that part's updates (:func:`reference_norm`). Returns (updates,
    norms, scales applied)."""
    parts = sorted({part_of(k) for k in current})
    deltas: list[Arrays] = [
        {k: r[k].astype(np.float64) - current[k].astype(np.float64) for k in current}
        for r in replies
    ]
    norms: list[dict[str, float]] = [{} for _ in replies]
    scales: list[dict[str, float]] = [{} for _ in replies]
    for part in parts:
        keys = [k for k in current if part_of(k) == part]
        part_norms = [
            float(np.sqrt(sum(float(np.sum(np.square(d[k]))) for k in keys))) for d in deltas
        ]
        reference = reference_norm(part_norms, tolerate=tolerate)
        limit = clip * reference if clip > 0 else float("inf")
        for i, n in enumerate(part_norms):
            norms[i][part] = n
            if n > limit:
                scale = limit / n
                scales[i][part] = scale
                with np.errstate(invalid="ignore"):  # inf x 0: caught by the finite check
                    for k in keys:
                        deltas[i][k] *= scale
    return deltas, norms, scales


AGREEING_RULES = ("fedavg", "median", "trimmed-mean")  # rules the direction check serves


def pulling_against(updates: Sequence[Arrays], keys: Sequence[str]) -> list[dict[str, float]]:
    """Per update, the parts it pulls against every other site's update of: part -> its
    best cosine with another update (below -3 / sqrt(part size)). Only with three updates
    or more, only where two updates remain, and never for a zero update (a site that sends
    back what it got: no direction to judge)."""
    out: list[dict[str, float]] = [{} for _ in updates]
    if len(updates) < 3:
        return out
    for part in sorted({part_of(k) for k in keys}):
        part_keys = [k for k in keys if part_of(k) == part]
        flat = np.stack([np.concatenate([u[k].ravel() for k in part_keys]) for u in updates])
        norms = np.linalg.norm(flat, axis=1)
        live = np.flatnonzero(np.isfinite(norms) & (norms > 0))
        if len(live) < 3:
            continue
        unit = flat[live] / norms[live, None]
        cosine = unit @ unit.T
        np.fill_diagonal(cosine, -np.inf)
        best = cosine.max(axis=1)
        floor = -3.0 / np.sqrt(flat.shape[1])  # three null standard deviations below zero
        against = {int(i): float(b) for i, b in zip(live, best, strict=True) if b < floor}
        if len(live) - len(against) >= 2:
            for i, b in against.items():
                out[i][part] = b
    return out


def combine(
    updates: Sequence[Arrays],
    weights: Sequence[float],
    *,
    bounds: Bounds,
    keys: Sequence[str],
    left_out: Sequence[Mapping[str, float]] | None = None,
) -> Arrays:
    """The rule applied part by part to the (bounded) updates, without the parts in
    ``left_out`` (per update: see :func:`pulling_against`); returns the mean update."""
    out: Arrays = {}
    for part in sorted({part_of(k) for k in keys}):
        part_keys = [k for k in keys if part_of(k) == part]
        results = [
            ([u[k] for k in part_keys], w)
            for i, (u, w) in enumerate(zip(updates, weights, strict=True))
            if left_out is None or part not in left_out[i]
        ]
        combined = _rule(results, bounds)
        out.update(zip(part_keys, combined, strict=True))
    return out


def _rule(results: list[tuple[list[np.ndarray], float]], bounds: Bounds) -> list[np.ndarray]:
    n, f = len(results), bounds.num_malicious
    if bounds.rule == "fedavg":
        total = sum(w for _, w in results)
        if total <= 0:
            raise AggregationError("the replies' capped example counts sum to zero")
        return [
            sum(arrays[i] * (w / total) for arrays, w in results)  # type: ignore[misc]
            for i in range(len(results[0][0]))
        ]
    # Flower's robust rules take (arrays, int count) and ignore the count: every reply
    # weighs the same, which is what makes them robust
    flwr_results = [(arrays, max(round(w), 1)) for arrays, w in results]
    if bounds.rule == "median":
        return aggregate_median(flwr_results)
    if bounds.rule == "trimmed-mean":
        return trimmed_mean([arrays for arrays, _ in results], bounds.trim_fraction)
    if bounds.rule in ("krum", "multikrum"):
        if n <= 2 * f + 2:
            raise AggregationError(f"{bounds.rule} needs more than {2 * f + 2} replies, got {n}")
        keep = 0 if bounds.rule == "krum" else n - f
        return aggregate_krum(flwr_results, f, keep)
    if n < 4 * f + 3:
        raise AggregationError(f"bulyan needs at least {4 * f + 3} replies, got {n}")
    return aggregate_bulyan(list(flwr_results), f, aggregate_krum, to_keep=0)


def trimmed_mean(results: Sequence[Sequence[np.ndarray]], fraction: float) -> list[np.ndarray]:
    """Coordinate-wise mean of the replies without the ``cut`` largest and smallest values,
    cut = floor(fraction x n), at least 1 when n >= 3 (one hostile site among three)."""
    n = len(results)
    cut = max(int(fraction * n), 1 if n >= 3 else 0)
    out = []
    for layer in zip(*results, strict=True):
        stacked = np.sort(np.stack(layer), axis=0)  # (n, *shape)
        out.append(stacked[cut : n - cut].mean(axis=0))
    return out


def aggregate(
    current: Mapping[str, np.ndarray],
    replies: Sequence[Mapping[str, np.ndarray]],
    counts: Sequence[float],
    *,
    bounds: Bounds,
    declared: Sequence[float | None] | None = None,
) -> tuple[Arrays, list[UpdateReport]]:
    """The next global model from the replies, with every site's influence bounded.

    Raises :class:`AggregationError` when there is nothing to aggregate or the aggregate
    is not finite (the caller keeps the current model).
    """
    if not replies:
        raise AggregationError("no replies to aggregate")
    keys = list(current)
    weights = cap_weights(counts, declared or [None] * len(counts), cap=bounds.weight_cap)
    updates, norms, scales = bounded_updates(
        current, replies, clip=bounds.update_clip, tolerate=bounds.num_malicious
    )
    against: list[dict[str, float]] = [{} for _ in updates]
    if bounds.rule in AGREEING_RULES and bounds.update_clip > 0:  # update-clip 0: bounds off
        against = pulling_against(updates, keys)
    mean = combine(updates, weights, bounds=bounds, keys=keys, left_out=against)
    out: Arrays = {}
    for k in keys:
        value = current[k].astype(np.float64) + mean[k]
        if not np.isfinite(value).all():
            raise AggregationError(f"the aggregate of {k!r} is not finite; the model is kept")
        out[k] = value.astype(np.float32)
    reports = [
        UpdateReport(w, weight_capped=w < n, norms=nm, clipped=sc, against=ag)
        for w, n, nm, sc, ag in zip(weights, counts, norms, scales, against, strict=True)
    ]
    return out, reports


def bounded_model(
    current: Mapping[str, np.ndarray], reply: Mapping[str, np.ndarray], scales: Mapping[str, float]
) -> Arrays:
    """A site's model with its update bounded as in the aggregate (an ensemble member):
    current + scale x (reply - current), per part, as float32."""
    out: Arrays = {}
    for k in current:
        base = current[k].astype(np.float64)
        scale = scales.get(part_of(k), 1.0)
        out[k] = (base + scale * (reply[k].astype(np.float64) - base)).astype(np.float32)
    return out
