"""The solver's head refitted on balanced generated samples: a head biased towards the
newest classes is corrected, and nothing below the head changes."""

import pytest
import torch
from torch import Tensor

from common.config import ConfigError, load_config
from common.models.generator import Generator
from common.models.solver import MLPSolver
from common.training.balance import balance_head

SHAPE = (1, 4, 4)


class Blobs(Generator):
    """Class c draws N(mu_c, 0.3^2) around a fixed random centre: separable classes."""

    def __init__(self, num_classes: int) -> None:
        super().__init__(SHAPE, num_classes, latent_dim=16)
        self.centres = torch.nn.Parameter(
            torch.randn(num_classes, 16, generator=torch.Generator().manual_seed(0)),
            requires_grad=False,
        )

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:  # (B, 16), (B,) -> (B, 1, 4, 4)
        return (self.centres[labels.long()] + 0.3 * z).reshape(-1, *SHAPE)


def accuracy(solver: MLPSolver, gen: Blobs, classes: list[int]) -> float:
    y = torch.tensor(classes).repeat_interleave(200)
    x = gen.sample(y, generator=torch.Generator().manual_seed(1))
    return float((solver(x).argmax(1) == y).float().mean())


def test_a_head_biased_to_the_new_classes_is_balanced_and_the_body_is_untouched() -> None:
    torch.manual_seed(0)
    classes = [0, 1, 2, 3]
    gen, solver = Blobs(4), MLPSolver(SHAPE, 4, hidden=32)
    # train the whole solver on the blobs, then bias its head to classes 2 and 3
    opt = torch.optim.Adam(solver.parameters(), lr=1e-2)
    for _ in range(200):
        y = torch.randint(4, (128,))
        loss = torch.nn.functional.cross_entropy(solver(gen.sample(y)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        solver.net[-1].bias[2:] += 50.0
    assert accuracy(solver, gen, classes) <= 0.55  # classes 0 and 1 all go to 2 or 3
    body = [p.detach().clone() for p in solver.net[:-1].parameters()]
    balance_head(
        solver, gen, classes, steps=300, samples=200, lr=1e-1, rng=torch.Generator().manual_seed(2)
    )
    assert accuracy(solver, gen, classes) > 0.95
    for before, after in zip(body, solver.net[:-1].parameters(), strict=True):
        assert torch.equal(before, after)


def test_balancing_needs_the_server_s_one_generator() -> None:
    load_config({"solver.balance-steps": 100, "method": "dgr", "replay.mode": "global"})
    with pytest.raises(ConfigError, match=r"solver\.balance-steps"):
        load_config({"solver.balance-steps": 100, "method": "dgr", "replay.mode": "ensemble"})
    with pytest.raises(ConfigError, match=r"solver\.balance-steps"):
        load_config({"solver.balance-steps": 100, "method": "none"})
    with pytest.raises(ConfigError, match="balance-steps"):
        load_config({"solver.balance-steps": -1})
