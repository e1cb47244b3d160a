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
    """Under pytest-xdist (``-n 2 --dist loadgroup``, README's test command) the end-to-end
    tests run one after another on one worker while the other runs the rest: two of them at
    once contend for 2 cores and their timing-bound steps (heartbeats, start timeouts).
    They go first, so that their long serial stretch overlaps the other tests."""
    for item in items:
        if item.path.parent == END_TO_END:
            item.add_marker(pytest.mark.xdist_group("end-to-end"))
    items.sort(key=lambda item: item.path.parent != END_TO_END)  # stable: order kept within
