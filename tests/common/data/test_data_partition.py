"""Partitions across sites: disjoint, complete (or dropping as specified), deterministic."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor

from common.config import PartitionConfig
from common.data import (
    Dataset,
    class_incremental,
    parse_site_classes,
    partition_indices,
    permuted,
    site_stream,
)


def labels(n: int = 1000, k: int = 10) -> Tensor:
    return torch.arange(n) % k


def assert_disjoint(parts: list[Tensor]) -> Tensor:
    allidx = torch.cat(parts)
    assert allidx.unique().numel() == allidx.numel(), "an index is used twice"
    assert all(p.dtype == torch.int64 for p in parts)
    return allidx


def test_iid_is_an_equal_disjoint_cover() -> None:
    parts = partition_indices(labels(1003), 4, kind="iid", seed=1)
    assert sorted(assert_disjoint(parts).tolist()) == list(range(1003))
    assert {len(p) for p in parts} <= {250, 251}


def test_partitions_are_deterministic_and_seeded() -> None:
    for kind in ("iid", "dirichlet"):
        a = partition_indices(labels(), 5, kind=kind, seed=3)
        b = partition_indices(labels(), 5, kind=kind, seed=3)
        c = partition_indices(labels(), 5, kind=kind, seed=4)
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
        assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def label_skew(parts: list[Tensor], y: Tensor, k: int) -> float:
    """Mean total-variation distance between each site's label mix and the global one."""
    overall = torch.bincount(y, minlength=k).float() / len(y)
    tvs = []
    for p in parts:
        if len(p):
            mix = torch.bincount(y[p], minlength=k).float() / len(p)
            tvs.append(0.5 * (mix - overall).abs().sum().item())
    return sum(tvs) / len(tvs)


def test_dirichlet_cover_and_skew_grows_as_alpha_shrinks() -> None:
    y = labels(5000)
    skewed = partition_indices(y, 8, kind="dirichlet", alpha=0.1, seed=0)
    even = partition_indices(y, 8, kind="dirichlet", alpha=100.0, seed=0)
    for parts in (skewed, even):
        assert sorted(assert_disjoint(parts).tolist()) == list(range(5000))
        assert min(len(p) for p in parts) >= 1
    assert label_skew(skewed, y, 10) > 0.4
    assert label_skew(even, y, 10) < 0.1


def test_dirichlet_min_per_site_is_met_when_possible_else_last_draw_kept() -> None:
    y = labels(400)
    parts = partition_indices(y, 10, kind="dirichlet", alpha=0.3, seed=0, min_per_site=10)
    assert min(len(p) for p in parts) >= 10
    few = partition_indices(labels(5), 10, kind="dirichlet", alpha=0.5, seed=0)
    assert sorted(assert_disjoint(few).tolist()) == list(range(5))
    with pytest.raises(ValueError, match="alpha"):
        partition_indices(y, 2, kind="dirichlet", alpha=0.0)


def test_classes_partition_splits_shared_classes_and_drops_unlisted() -> None:
    y = labels(1000)
    parts = partition_indices(y, 3, kind="classes", site_classes=[[0, 1], [1, 2], [3]], seed=0)
    assert_disjoint(parts)
    assert set(y[parts[0]].tolist()) == {0, 1}
    assert set(y[parts[1]].tolist()) == {1, 2}
    assert set(y[parts[2]].tolist()) == {3}
    ones = [int((y[p] == 1).sum()) for p in parts[:2]]
    assert sum(ones) == 100 and abs(ones[0] - ones[1]) <= 1
    assert sum(len(p) for p in parts) == 400  # classes 4..9 are dropped


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "classes"}, "one class group per site"),
        ({"kind": "classes", "site_classes": [[0], [1], [2]]}, "one class group per site"),
        ({"kind": "classes", "site_classes": [[0, 0], [1]]}, "twice"),
        ({"kind": "classes", "site_classes": [[-1], [1]]}, "negative"),
        ({"kind": "shards"}, "unknown partition kind"),
    ],
)
def test_partition_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        partition_indices(labels(), 2, **kwargs)


def test_partition_rejects_bad_shapes_and_site_counts() -> None:
    with pytest.raises(ValueError, match="1-D"):
        partition_indices(torch.zeros(4, 2, dtype=torch.long), 2, kind="iid")
    with pytest.raises(ValueError, match="num_sites"):
        partition_indices(labels(), 0, kind="iid")


def test_parse_site_classes() -> None:
    assert parse_site_classes("0,1,2;3,4") == [[0, 1, 2], [3, 4]]
    assert parse_site_classes(" 5 ; 6, 7 ") == [[5], [6, 7]]
    for bad in ("", "0,1;;2", "0,x;1"):
        with pytest.raises(ValueError, match="site classes"):
            parse_site_classes(bad)


@pytest.mark.parametrize(
    "cfg",
    [
        PartitionConfig("iid", 0.5, ""),
        PartitionConfig("dirichlet", 0.3, ""),
        PartitionConfig("classes", 0.5, "0,1,2,3,4;5,6,7,8,9;0,9"),
    ],
)
def test_site_stream_shares_are_disjoint_and_agree(tiny: Dataset, cfg: PartitionConfig) -> None:
    stream = class_incremental(tiny, [(0, 1), (2, 3), (8, 9)])
    sites = [site_stream(stream, site=s, num_sites=3, cfg=cfg, seed=7) for s in range(3)]
    again = site_stream(stream, site=1, num_sites=3, cfg=cfg, seed=7)
    for t, task in enumerate(stream.tasks):
        for which in ("train", "test"):
            whole = getattr(task, which)
            shares = [getattr(s.tasks[t], which) for s in sites]
            idx = assert_disjoint([sh.index for sh in shares])
            assert set(idx.tolist()) <= set(whole.index.tolist())
            if cfg.kind != "classes":
                assert sorted(idx.tolist()) == sorted(whole.index.tolist())
            assert all(sh.base_x is whole.base_x for sh in shares)
            assert torch.equal(getattr(again.tasks[t], which).index, shares[1].index)
        assert sites[0].tasks[t].classes == task.classes
    assert len(sites[0]) == len(stream) and sites[0].scenario == "class"


def test_site_stream_uses_a_different_partition_per_task(
    tiny_dataset: Callable[..., Dataset],
) -> None:
    stream = permuted(tiny_dataset(n_train=400), 2, seed=0)
    cfg = PartitionConfig("iid", 0.5, "")
    mine = site_stream(stream, site=0, num_sites=2, cfg=cfg, seed=0)
    assert not torch.equal(mine.tasks[0].train.index, mine.tasks[1].train.index)


def test_site_stream_validates_site(tiny: Dataset) -> None:
    stream = class_incremental(tiny, [(0, 1)])
    cfg = PartitionConfig("iid", 0.5, "")
    for site in (-1, 2):
        with pytest.raises(ValueError, match="site"):
            site_stream(stream, site=site, num_sites=2, cfg=cfg, seed=0)
