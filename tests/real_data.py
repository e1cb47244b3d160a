"""Where the tests find the real MNIST and RetinaMNIST files, on any machine.

In order: ``$FEDREPLAY_TEST_DATA`` (CI: the offline copy), ``<repo>/../shared/data`` (this
project's machines), the user's cache (``$FEDREPLAY_CACHE/data``, else
``~/.cache/fedreplay/data``), and else a download into that cache, once, through the
project's own loaders (torchvision's MNIST mirrors; the MedMNIST file with its checksum)
when the network allows. When none of these works, one message says what was tried and
how to fix it; the tests that need the data then fail (they do not skip).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEST_DATA_ENV = "FEDREPLAY_TEST_DATA"
DATASETS = ("mnist", "retinamnist")


class TestDataMissing(RuntimeError):
    """No copy of the real test data was found and none could be downloaded."""


def complete(root: Path) -> bool:
    """``root`` holds MNIST (idx files) and RetinaMNIST (the MedMNIST .npz)."""
    mnist = (root / "MNIST" / "raw").is_dir()
    return mnist and any((root / "medmnist").glob("retinamnist*.npz"))


_CACHE_AT_START = os.environ.get("FEDREPLAY_CACHE", "")  # before tests isolate their caches


def user_cache() -> Path:
    return Path(_CACHE_AT_START or "~/.cache/fedreplay").expanduser() / "data"


def _download(cache: Path) -> None:
    """Fetch the test datasets into ``cache`` with the project's loaders."""
    from common.data.datasets import load_dataset

    before = os.environ.get("FEDREPLAY_CACHE")
    os.environ["FEDREPLAY_CACHE"] = str(cache.parent)  # the loaders download to <cache>/data
    try:
        for name in DATASETS:
            load_dataset(name, root=cache, download=True)
    finally:
        if before is None:
            os.environ.pop("FEDREPLAY_CACHE", None)
        else:
            os.environ["FEDREPLAY_CACHE"] = before


def find_real_data(download: Callable[[Path], None] = _download) -> Path:
    """The folder with the real test data (see the module docstring)."""
    tried = []
    configured = os.environ.get(TEST_DATA_ENV, "")
    if configured:
        root = Path(configured).expanduser()
        if complete(root):
            return root
        raise TestDataMissing(
            f"{TEST_DATA_ENV}={configured} does not hold MNIST/raw and medmnist/retinamnist*.npz"
        )
    for root in (REPO.parent / "shared" / "data", user_cache()):
        if complete(root):
            return root
        tried.append(str(root))
    cache = user_cache()
    try:
        download(cache)
    except Exception as exc:  # no network, a mirror down, a checksum mismatch
        raise TestDataMissing(
            f"the real test data (MNIST, RetinaMNIST) is not at {', '.join(tried)} and could "
            f"not be downloaded into {cache} ({type(exc).__name__}: {exc}); download it once "
            f"with network access, or set {TEST_DATA_ENV} to a folder holding MNIST/raw and "
            "medmnist/retinamnist*.npz"
        ) from None
    if not complete(cache):
        raise TestDataMissing(f"downloaded into {cache}, but it is still incomplete")
    return cache


@lru_cache(maxsize=1)
def real_data() -> Path:
    """:func:`find_real_data`, once per test session."""
    return find_real_data()
