"""The audit holdout: stratified, deterministic, never trained on by any site."""

from __future__ import annotations

import pytest
import torch

from common.config import ConfigError, load_config
from common.data import Dataset, build_stream, class_incremental
from common.data.holdout import holdout_rows, withhold
from common.data.types import Split, TaskStream
from common.sitedata import SiteIdentity, local_stream, site_records


def small_stream() -> TaskStream:
    train = Split.from_tensors(torch.rand(600, 1, 4, 4), torch.arange(600) % 6)
    test = Split.from_tensors(torch.rand(60, 1, 4, 4), torch.arange(60) % 6)
    ds = Dataset("toy", train, test, 6, tuple(str(c) for c in range(6)))
    return class_incremental(ds, [(0, 1), (2, 3), (4, 5)])


def rows_of(split: Split) -> set[int]:
    return set(split.index.tolist())


def test_holdout_rows_are_a_stratified_deterministic_share() -> None:
    y = torch.tensor([0] * 100 + [1] * 30 + [2] * 7)
    rows = holdout_rows(y, 0.2, seed=5)
    assert torch.equal(rows, holdout_rows(y, 0.2, seed=5))
    assert not torch.equal(rows, holdout_rows(y, 0.2, seed=6))
    assert torch.bincount(y[rows], minlength=3).tolist() == [20, 6, 1]
    assert rows.unique().numel() == rows.numel()
    with pytest.raises(ValueError, match=r"holdout fraction=1.0 must be in \[0, 1\)"):
        holdout_rows(y, 1.0, seed=0)


def test_withhold_cuts_only_the_train_splits_and_loses_no_record() -> None:
    stream = small_stream()
    kept, held = withhold(stream, fraction=0.25, seed=0)
    for before, after, out in zip(stream.tasks, kept.tasks, held, strict=True):
        assert rows_of(after.train).isdisjoint(rows_of(out))
        assert rows_of(after.train) | rows_of(out) == rows_of(before.train)
        assert len(out) == round(0.25 * len(before.train))
        assert torch.equal(after.test.index, before.test.index)  # tests untouched
        assert set(out.y.tolist()) == set(before.classes)
    same, empty = withhold(stream, fraction=0.0, seed=0)
    assert same is stream and all(len(h) == 0 for h in empty)


def test_no_site_trains_on_the_holdout() -> None:
    base = {"tasks.num-tasks": 2, "fed.num-sites": 3, "partition.kind": "dirichlet"}
    cfg = load_config({**base, "audit.holdout": 0.2})
    plain = load_config(base)
    _, held = withhold(build_stream(plain), fraction=0.2, seed=cfg.seed)
    for t in range(2):
        sites = [local_stream(cfg, SiteIdentity(p, 3)).tasks[t].train for p in range(3)]
        trained = set().union(*(rows_of(s) for s in sites))
        assert trained.isdisjoint(rows_of(held[t]))
        everything = rows_of(site_records(plain, SiteIdentity(0, 1)).tasks[t].train)
        assert trained | rows_of(held[t]) == everything
        assert sum(len(s) for s in sites) == len(everything) - len(held[t])


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_a_holdout_outside_0_1_is_a_config_error(bad: float) -> None:
    with pytest.raises(ConfigError, match=r"audit.holdout=.* must be in \[0, 1\)"):
        load_config({"audit.holdout": bad})
