"""Each site's embedding release held to what the other sites released (a direction bound).

The norm bound of :meth:`server.methods.embedding.EmbeddingReleases.bounded_sum` limits how
much one site's release weighs, not which way it points: a site that swaps its classes'
rows inside the bound teaches the swap (docs/notebook/results.md, "Hostile sites when sites release
embeddings": -16 points through the fitted generator, -49 through the ridge solver on
digits). Here every block of a release, each class's row of sums and (``solver.arch =
"ridge"``) the task's Gram matrix, is split against the direction the *other* sites'
blocks sum to (leave one out, so a site is never measured against itself)::

    u      = sum_{s' != s} B_s' / ||.||         the others' direction
    B_s    = max(<B_s, u>, 0) u  +  d_s          along it (never negative) + the rest

Honest sites differ from the others' direction by their sampling spread and their DP
noise; a block that points elsewhere (another class's sums, a constant matrix) has a large
rest. Every rest is cut to ``cap`` x the block's median rest over the sites, times
sqrt(k) for a site whose part along is k > 1 times the median one (a site of k times the
typical size spreads sqrt(k) times as far by sampling; a hostile site's misdirection grows
k times), and a block never ends longer than it came. A hostile block is also part of
every other site's reference, so the split is repeated, each time against the others'
blocks as the last pass bounded them.

What is left to a hostile site: weight along the honest direction (the norm bound's share)
and a rest about as large as an honest site's, in a direction of its choice. What it costs
honest sites: a site whose class the others hardly hold (a class at one site under label
skew, or under DP noise larger than the others' records) is pulled towards the others'
weak direction; measured in docs/notebook/results.md ("Hostile sites when sites release
embeddings").
"""

from __future__ import annotations

import numpy as np

from common.privacy.embedding import class_rows

MIN_SITES = 3  # below 3 releases a median bounds nothing
PASSES = 3  # a hostile block also bends the others' directions: recomputed from bounded blocks


def blocks(release: np.ndarray) -> list[tuple[slice, slice]]:
    """The blocks of a release: one per class row, and the Gram (rows below the classes'
    when a release has more rows than columns)."""
    classes, rows = class_rows(release.shape), release.shape[0]
    out = [(slice(i, i + 1), slice(None)) for i in range(classes)]
    if rows > classes:
        out.append((slice(classes, rows), slice(None)))
    return out


def direction_bound(
    releases: dict[str, np.ndarray], *, cap: float
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Each release with every block's part off the others' direction cut to ``cap`` x
    the block's median such part; and per site the smallest factor a part was cut by
    (1 = untouched). ``cap`` <= 0 or fewer than :data:`MIN_SITES` releases: unchanged."""
    sites = sorted(releases)
    out = {s: np.array(releases[s], dtype=np.float64) for s in sites}
    factors = dict.fromkeys(sites, 1.0)
    if cap <= 0 or len(sites) < MIN_SITES:
        return out, factors
    for rows, cols in blocks(out[sites[0]]):
        came = {s: out[s][rows, cols].ravel() for s in sites}
        block, cut = dict(came), dict.fromkeys(sites, 1.0)
        for _ in range(PASSES):  # the others' directions from the last pass's blocks
            block, cut = _pass(came, block, cap)
        for s in sites:
            out[s][rows, cols] = block[s].reshape(out[s][rows, cols].shape)
            factors[s] = min(factors[s], cut[s])
    return out, factors


def _pass(
    came: dict[str, np.ndarray], current: dict[str, np.ndarray], cap: float
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """One pass over a block: each site's block as it came, split against the direction of
    the others' ``current`` blocks, its rest cut to ``cap`` x the median rest."""
    total = sum(current.values())
    along, rest = {}, {}
    for s, b in came.items():
        others = total - current[s]
        norm = float(np.linalg.norm(others))
        u = others / norm if norm > 0 else np.zeros_like(others)
        along[s] = max(float(b @ u), 0.0) * u
        rest[s] = b - along[s]
    limit = cap * float(np.median([np.linalg.norm(r) for r in rest.values()]))
    typical = float(np.median([np.linalg.norm(a) for a in along.values()]))
    out, cut = dict(came), dict.fromkeys(came, 1.0)
    for s, b in came.items():
        size = float(np.linalg.norm(rest[s]))
        # a site of k times the typical weight spreads sqrt(k) times as far by sampling
        grow = float(np.linalg.norm(along[s])) / typical if typical > 0 else 1.0
        limit_s = limit * max(1.0, grow) ** 0.5
        if size <= limit_s:
            continue
        cut[s] = limit_s / size
        bounded = along[s] + cut[s] * rest[s]
        before, after = float(np.linalg.norm(b)), float(np.linalg.norm(bounded))
        out[s] = bounded * (before / after) if after > before else bounded  # never longer
    return out, cut
