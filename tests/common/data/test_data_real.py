"""Integration: the real MNIST and RetinaMNIST files in the shared (read-only) data folder."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from common.config import PartitionConfig, load_config
from common.data import build_stream, clear_cache, load_dataset, site_stream

Snapshot = Callable[[Path], list[tuple[str, int, int]]]


@pytest.fixture(autouse=True, scope="module")
def _free_datasets() -> Iterator[None]:
    """Drop the loaded real datasets after this module (MNIST alone is ~220 MB)."""
    yield
    clear_cache()


def test_mnist_real_files_without_writing(
    shared_data: Path, isolated_cache: Path, snapshot: Snapshot
) -> None:
    before = snapshot(shared_data)
    clear_cache()
    ds = load_dataset("mnist", root=shared_data)
    assert snapshot(shared_data) == before
    assert not (isolated_cache / "data").exists()  # read in place, nothing extracted
    assert (len(ds.train), len(ds.test), ds.shape, ds.num_classes) == (
        60000,
        10000,
        (1, 28, 28),
        10,
    )
    assert int(ds.train.y[0]) == 5 and int(ds.test.y[0]) == 7
    assert ds.train.base_x.dtype == torch.float32 and ds.train.base_y.dtype == torch.int64
    assert float(ds.train.base_x.min()) == 0.0 and float(ds.train.base_x.max()) == 1.0
    assert torch.bincount(ds.train.y).tolist()[5] == 5421


def test_retinamnist_real_file_without_writing(shared_data: Path, snapshot: Snapshot) -> None:
    before = snapshot(shared_data)
    ds = load_dataset("retinamnist", root=shared_data)
    assert snapshot(shared_data) == before
    assert (len(ds.train), len(ds.test)) == (1080, 400)
    assert ds.shape == (3, 28, 28) and ds.num_classes == 5
    assert set(ds.train.y.tolist()) == {0, 1, 2, 3, 4}


def test_real_mnist_stream_per_site(shared_data: Path) -> None:
    cfg = load_config({"data.name": "mnist", "data.root": str(shared_data)})
    stream = build_stream(cfg)
    assert [t.classes for t in stream.tasks] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    assert sum(len(t.train) for t in stream.tasks) == 60000
    part = PartitionConfig("dirichlet", 0.5, "")
    sizes = [
        len(site_stream(stream, site=s, num_sites=3, cfg=part, seed=0).tasks[2].train)
        for s in range(3)
    ]
    assert sum(sizes) == len(stream.tasks[2].train) and min(sizes) > 0


def test_real_domain_stream_retina_then_digits(shared_data: Path) -> None:
    overrides = {"tasks.scenario": "domain", "tasks.datasets": "retinamnist,digits"}
    stream = build_stream(load_config({**overrides, "data.root": str(shared_data)}))
    assert stream.shape == (3, 28, 28) and stream.num_classes == 10
    assert stream.tasks[1].test.x.shape == (359, 3, 28, 28)
    assert stream.tasks[0].classes == (0, 1, 2, 3, 4)
    retina = load_dataset("retinamnist", root=shared_data)
    assert stream.tasks[0].train.base_x is retina.train.base_x  # already 3x28x28: not copied


def test_data_root_from_environment(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDREPLAY_DATA_ROOT", str(shared_data))
    assert len(load_dataset("retinamnist").test) == 400
