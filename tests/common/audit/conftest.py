"""Small synthetic membership problems: random images with random labels, tiny MLPs.

With random labels nothing generalises, so a model fitted to ``members`` memorises them
(a deliberately overfit target) while ``non_members`` from the same distribution stay at
chance; ``outsiders`` are a third, disjoint set for models that saw neither.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from common.data.types import Split
from common.models.solver import MLPSolver

SHAPE = (1, 8, 8)
NUM_CLASSES = 4


def random_split(n: int, seed: int) -> Split:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand((n, *SHAPE), generator=gen)
    y = torch.randint(0, NUM_CLASSES, (n,), generator=gen)
    return Split.from_tensors(x, y)


def train_mlp(split: Split, seed: int, steps: int = 200) -> nn.Module:
    """Full-batch Adam on ``split`` until it is memorised (the LiRA ``train_fn``).

    One thread: tiny models run several times faster without thread overhead.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        model = MLPSolver(SHAPE, NUM_CLASSES, hidden=64)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        x, y = split.x, split.y
        for _ in range(steps):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


@pytest.fixture(scope="session")
def train_fn() -> Callable[[Split, int], nn.Module]:
    return train_mlp


@dataclass(frozen=True)
class Problem:
    members: Split
    non_members: Split
    outsiders: Split
    overfit: nn.Module  # trained on members
    unrelated: nn.Module  # trained on outsiders only


@pytest.fixture(scope="session")
def problem() -> Problem:
    members, non_members, outsiders = (
        random_split(100, 1),
        random_split(100, 2),
        random_split(100, 3),
    )
    return Problem(
        members, non_members, outsiders, train_mlp(members, 10), train_mlp(outsiders, 11)
    )
