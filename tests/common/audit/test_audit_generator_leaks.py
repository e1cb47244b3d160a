"""GAN-Leaks against a generator that memorised its members, and against innocent ones."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

from common.audit.generator_leaks import generator_leak_attack, nearest_sample_distance
from common.data.types import Split
from common.models.generator import Generator
from common.models.vae import VAEDecoder

CPU = torch.device("cpu")


class MemorisingGenerator(Generator):
    """Returns a training record of the asked label (picked by z) plus tiny noise."""

    x: Tensor
    y: Tensor

    def __init__(self, records: Split, num_classes: int, noise: float = 0.01) -> None:
        c, h, w = records.shape
        super().__init__(records.shape, num_classes, latent_dim=1 + c * h * w)
        self.register_buffer("x", records.x)
        self.register_buffer("y", records.y)
        self.noise = noise
        self.anchor = nn.Parameter(torch.zeros(()))  # Generator.sample needs a parameter

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        out = torch.rand((len(labels), *self.shape))  # classes never seen: noise
        for c in labels.unique():
            pool = self.x[self.y == c]
            rows = (labels == c).nonzero(as_tuple=True)[0]
            if len(pool):
                uniform = 0.5 * (1 + torch.erf(z[rows, 0] / 2**0.5))  # Phi(z)
                pick = (uniform * len(pool)).long().clamp(max=len(pool) - 1)
                jitter = self.noise * z[rows, 1:].view(len(rows), *self.shape)
                out[rows] = pool[pick] + jitter
        return out


def test_nearest_distance_is_zero_for_memorised_records(problem: Any) -> None:
    gen = MemorisingGenerator(problem.members, 4, noise=0.0)
    d = nearest_sample_distance(gen, problem.members, samples_per_class=500, device=CPU)
    assert d.shape == (len(problem.members),) and float(d.max()) < 1e-5


@pytest.mark.parametrize("calibrate", [False, True])
def test_detects_a_memorising_generator(problem: Any, calibrate: bool) -> None:
    gen = MemorisingGenerator(problem.members, 4)
    res = generator_leak_attack(
        gen, problem.members, problem.non_members, calibrate=calibrate, device=CPU
    )
    assert res.name == ("gan_leaks_median" if calibrate else "gan_leaks")
    assert res.auc > 0.8 and res.tpr_at_1pct > 0.5


def test_reference_generator_calibration(problem: Any) -> None:
    gen = MemorisingGenerator(problem.members, 4)
    ref = MemorisingGenerator(problem.outsiders, 4)
    res = generator_leak_attack(
        gen, problem.members, problem.non_members, reference=ref, device=CPU
    )
    assert res.name == "gan_leaks_cal" and res.auc > 0.8
    with_records = generator_leak_attack(
        gen, problem.members, problem.non_members, reference_records=problem.outsiders, device=CPU
    )
    assert with_records.auc > 0.8


def test_chance_when_the_generator_saw_neither(problem: Any) -> None:
    other = MemorisingGenerator(problem.outsiders, 4)
    res = generator_leak_attack(other, problem.members, problem.non_members, device=CPU)
    assert 0.35 <= res.auc <= 0.65
    torch.manual_seed(0)
    vae = VAEDecoder((1, 8, 8), 4, hidden=32, latent_dim=8)
    res = generator_leak_attack(
        vae, problem.members, problem.non_members, samples_per_class=200, device=CPU
    )
    assert 0.35 <= res.auc <= 0.65
