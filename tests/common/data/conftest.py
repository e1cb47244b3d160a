"""Fixtures for the data tests: an isolated cache, the shared real data, small datasets."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from common.data.types import Dataset, Split

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Point FEDREPLAY_CACHE at a fresh folder and unset FEDREPLAY_DATA_ROOT."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("FEDREPLAY_CACHE", str(cache))
    monkeypatch.delenv("FEDREPLAY_DATA_ROOT", raising=False)
    return cache


@pytest.fixture(scope="session")
def shared_data(real_data_root: Path) -> Path:
    """The real data (tests/real_data.py); fails (does not skip) when it cannot be had."""
    return real_data_root


def _snapshot(root: Path) -> list[tuple[str, int, int]]:
    """Every entry under ``root`` with its size and mtime (to prove nothing was written)."""
    out = [(".", 0, root.stat().st_mtime_ns)]
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            st = p.stat()
            out.append((str(p.relative_to(root)), st.st_size, st.st_mtime_ns))
    return sorted(out)


def _tiny_dataset(
    name: str = "tiny",
    n_train: int = 200,
    n_test: int = 50,
    shape: tuple[int, int, int] = (1, 4, 4),
    num_classes: int = 10,
    seed: int = 0,
) -> Dataset:
    """Random images with labels cycling through the classes."""
    gen = torch.Generator().manual_seed(seed)

    def split(n: int) -> Split:
        x = torch.rand((n, *shape), generator=gen)
        return Split.from_tensors(x, torch.arange(n) % num_classes)

    names = tuple(str(i) for i in range(num_classes))
    return Dataset(name, split(n_train), split(n_test), num_classes, names)


Snapshot = Callable[[Path], list[tuple[str, int, int]]]
TinyFactory = Callable[..., Dataset]


@pytest.fixture
def snapshot() -> Snapshot:
    """``snapshot(root)``: entries under root with sizes and mtimes."""
    return _snapshot


@pytest.fixture
def tiny_dataset() -> TinyFactory:
    """``tiny_dataset(name=, n_train=, n_test=, shape=, num_classes=, seed=)``."""
    return _tiny_dataset


@pytest.fixture
def tiny() -> Dataset:
    """200/50 random 1x4x4 images, labels 0..9 cycling."""
    return _tiny_dataset()
