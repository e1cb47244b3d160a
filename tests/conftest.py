"""Suite-wide settings: one intra-op thread per process.

The models under test are small, and CI has 2 cores shared with Ray actors and
subprocesses; more threads only oversubscribe the CPU (measured: a tiny in-process
federated run took 4x longer with the default thread count under load).
"""

import os

import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)
