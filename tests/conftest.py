"""Suite-wide settings: one intra-op thread per process, a private site directory.

The models under test are small, and CI has 2 cores shared with Ray actors and
subprocesses; more threads only oversubscribe the CPU (measured: a tiny in-process
federated run took 4x longer with the default thread count under load).
"""

import os
import sys
import tempfile
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # test helpers: flower_helpers, real_data
from real_data import TestDataMissing, real_data

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)
# Sites' own disk (privacy ledgers, egress logs) and the server's registry of sites'
# lifetime epsilons: never the user's ~/.cache during tests, fresh for every session.
os.environ["FEDREPLAY_SITE_DIR"] = tempfile.mkdtemp(prefix="fedreplay-sites-")
os.environ["FEDREPLAY_SERVER_DIR"] = tempfile.mkdtemp(prefix="fedreplay-server-")


@pytest.fixture(scope="session")
def real_data_root() -> Path:
    """The real MNIST + RetinaMNIST files (tests/real_data.py: found or downloaded once);
    a test that needs them fails with one clear message when they cannot be had."""
    try:
        return real_data()
    except TestDataMissing as exc:
        pytest.fail(str(exc))


END_TO_END = Path(__file__).parent  # tests/test_*.py: real Flower processes on 127.0.0.1


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The end-to-end tests first: under pytest-xdist (``-n 2``, README's test command)
    the longest tests start first and the short ones fill in around them (longest first
    shortens the whole). (``--dist loadgroup`` would keep them on one worker, but
    pytest 9.2 ignores the group xdist 3.8 sets: checked on 2026-12-06.)"""
    items.sort(key=lambda item: item.path.parent != END_TO_END)  # stable: order kept within
