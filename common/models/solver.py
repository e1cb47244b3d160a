"""Solvers: the classifiers of a scholar. No BatchNorm anywhere (Opacus rejects it)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from common.data.types import Shape
from common.models.conv_gan import ConvDiscriminator


class MLPSolver(nn.Module):
    """Two hidden layers, as in van de Ven & Tolias (2019) for split MNIST."""

    def __init__(self, shape: Shape, num_classes: int, hidden: int = 400) -> None:
        super().__init__()
        c, h, w = shape
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c * h * w, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, K) logits
        return self.net(x)


class CNNSolver(nn.Module):
    """Two conv blocks with GroupNorm (DP-compatible) and a linear head."""

    def __init__(self, shape: Shape, num_classes: int, hidden: int = 128) -> None:
        super().__init__()
        c, h, w = shape
        self.features = nn.Sequential(
            nn.Conv2d(c, 32, 3, padding=1),
            nn.GroupNorm(8, 32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.GroupNorm(8, 64),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, c, h, w)).numel()
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, K) logits
        return self.head(self.features(x))


class DiscriminatorSolver(nn.Module):
    """The AC-GAN discriminator as the solver (DGM's option, Ostapenko et al. 2019): its
    auxiliary class head is the classifier (``solver.arch = "discriminator"``).

    The learner trains it as the GAN's critic, on real data plus replay of the finished
    tasks' classes, so the critic is not private to the site: it travels as the solver."""

    def __init__(self, shape: Shape, num_classes: int, hidden: int = 32) -> None:
        super().__init__()
        self.discriminator = ConvDiscriminator(shape, num_classes, hidden)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, K) logits of the aux head
        return self.discriminator(x)[1]


def split_head(solver: nn.Module) -> tuple[Callable[[Tensor], Tensor], nn.Linear]:
    """(body, head): the solver as ``head(body(x))``, its last linear layer apart."""
    if isinstance(solver, DiscriminatorSolver):
        return solver.discriminator.body, solver.discriminator.aux
    if isinstance(solver, MLPSolver):
        return solver.net[:-1], solver.net[-1]  # type: ignore[return-value]
    if isinstance(solver, CNNSolver):
        return (lambda x: solver.head[:-1](solver.features(x))), solver.head[-1]  # type: ignore[return-value]
    raise TypeError(f"{type(solver).__name__} has no separable linear head")
