"""Suite-wide settings: one intra-op thread per process, a private site directory.

The models under test are small, and CI has 2 cores shared with Ray actors and
subprocesses; more threads only oversubscribe the CPU (measured: a tiny in-process
federated run took 4x longer with the default thread count under load).
"""

import os
import tempfile

import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)
# Sites' own disk (privacy ledgers, egress logs) and the server's registry of sites'
# lifetime epsilons: never the user's ~/.cache during tests, fresh for every session.
os.environ["FEDREPLAY_SITE_DIR"] = tempfile.mkdtemp(prefix="fedreplay-sites-")
os.environ["FEDREPLAY_SERVER_DIR"] = tempfile.mkdtemp(prefix="fedreplay-server-")
