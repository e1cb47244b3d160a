"""Split data across federated sites: iid, Dirichlet label skew, or fixed classes per site.

Every function is deterministic given its seed, so each site can compute the whole
partition on its own and keep its share; all sites agree without talking.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch import Tensor

from ..config import PartitionConfig
from .types import Split, TaskStream

KINDS = ("iid", "dirichlet", "classes")
MAX_DIRICHLET_DRAWS = 100


def parse_site_classes(text: str) -> list[list[int]]:
    """``"0,1,2;3,4"`` -> ``[[0, 1, 2], [3, 4]]`` (one group per site)."""
    if not text.strip():
        raise ValueError("site classes are empty; expected e.g. '0,1,2;3,4' (one group per site)")
    groups = []
    for i, part in enumerate(text.split(";")):
        if not part.strip():
            raise ValueError(f"site classes {text!r}: group {i} is empty")
        try:
            groups.append([int(tok) for tok in part.split(",")])
        except ValueError:
            raise ValueError(
                f"site classes {text!r}: group {i} is not a list of integers"
            ) from None
    return groups


def partition_indices(
    labels: Tensor,
    num_sites: int,
    *,
    kind: str,
    alpha: float = 0.5,
    site_classes: list[list[int]] | None = None,
    seed: int = 0,
    min_per_site: int = 1,
) -> list[Tensor]:
    """Per-site sorted int64 index tensors into ``labels``; no index is used twice.

    iid: shuffled, equal shares. dirichlet: per class, site shares ~ Dir(alpha); redrawn (at
    most MAX_DIRICHLET_DRAWS times) until every site has ``min_per_site`` rows, when that is
    possible, else the last draw is kept. classes: site k gets the classes ``site_classes[k]``;
    a class listed for several sites is split evenly among them; unlisted classes are dropped.
    """
    if labels.dim() != 1:
        raise ValueError(f"labels must be 1-D, got shape {tuple(labels.shape)}")
    if num_sites < 1:
        raise ValueError(f"num_sites={num_sites} must be >= 1")
    y = labels.detach().cpu().numpy().astype(np.int64)
    rng = np.random.default_rng(seed)
    if kind == "iid":
        parts = np.array_split(rng.permutation(len(y)), num_sites)
    elif kind == "dirichlet":
        if alpha <= 0:
            raise ValueError(f"alpha={alpha} must be > 0")
        parts = _dirichlet(y, num_sites, alpha, min_per_site, rng)
    elif kind == "classes":
        parts = _by_class(y, num_sites, site_classes, rng)
    else:
        raise ValueError(f"unknown partition kind {kind!r}; known: {', '.join(KINDS)}")
    return [torch.from_numpy(np.sort(p).astype(np.int64)) for p in parts]


def _gather(chunks: list[list[np.ndarray]]) -> list[np.ndarray]:
    return [np.concatenate(c) if c else np.empty(0, dtype=np.int64) for c in chunks]


def _dirichlet(
    y: np.ndarray, num_sites: int, alpha: float, min_per_site: int, rng: np.random.Generator
) -> list[np.ndarray]:
    feasible = len(y) >= num_sites * min_per_site
    classes = np.unique(y)
    parts: list[np.ndarray] = []
    for _ in range(MAX_DIRICHLET_DRAWS):
        chunks: list[list[np.ndarray]] = [[] for _ in range(num_sites)]
        for c in classes:
            rows = rng.permutation(np.flatnonzero(y == c))
            share = rng.dirichlet(np.full(num_sites, alpha))
            cuts = np.round(np.cumsum(share)[:-1] * len(rows)).astype(np.int64)
            for site, chunk in enumerate(np.split(rows, cuts)):
                chunks[site].append(chunk)
        parts = _gather(chunks)
        if not feasible or min(len(p) for p in parts) >= min_per_site:
            break
    return parts


def _by_class(
    y: np.ndarray, num_sites: int, site_classes: list[list[int]] | None, rng: np.random.Generator
) -> list[np.ndarray]:
    if site_classes is None or len(site_classes) != num_sites:
        got = "none" if site_classes is None else f"{len(site_classes)} groups"
        raise ValueError(f"kind='classes' needs one class group per site ({num_sites}), got {got}")
    owners: dict[int, list[int]] = {}
    for site, group in enumerate(site_classes):
        if len(set(group)) != len(group):
            raise ValueError(f"site {site} lists a class twice: {group}")
        for c in group:
            if c < 0:
                raise ValueError(f"site {site} lists negative class {c}")
            owners.setdefault(c, []).append(site)
    chunks: list[list[np.ndarray]] = [[] for _ in range(num_sites)]
    for c in sorted(owners):
        rows = rng.permutation(np.flatnonzero(y == c))
        for site, chunk in zip(owners[c], np.array_split(rows, len(owners[c])), strict=True):
            chunks[site].append(chunk)
    return _gather(chunks)


def task_seed(seed: int, task_index: int, split: str) -> int:
    """The partition seed of one task's train or test split (same on every site)."""
    entropy = [seed % (1 << 64), task_index, 0 if split == "train" else 1]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0])


def site_stream(
    stream: TaskStream, *, site: int, num_sites: int, cfg: PartitionConfig, seed: int
) -> TaskStream:
    """``stream`` with every task's train and test split cut down to ``site``'s share."""
    if not 0 <= site < num_sites:
        raise ValueError(f"site={site} must be in [0, {num_sites})")
    groups = parse_site_classes(cfg.site_classes) if cfg.kind == "classes" else None

    def share(split: Split, task_index: int, which: str) -> Split:
        parts = partition_indices(
            split.y,
            num_sites,
            kind=cfg.kind,
            alpha=cfg.alpha,
            site_classes=groups,
            seed=task_seed(seed, task_index, which),
        )
        return split.subset(parts[site])

    tasks = tuple(
        replace(t, train=share(t.train, t.index, "train"), test=share(t.test, t.index, "test"))
        for t in stream.tasks
    )
    return replace(stream, tasks=tasks)
