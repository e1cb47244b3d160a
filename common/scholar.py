"""A scholar (Shin et al. 2017): a generator that replays inputs and a solver that labels them."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from common.models.generator import Generator


def freeze(module: nn.Module) -> nn.Module:
    """A frozen copy: eval mode, no gradients; the original keeps training."""
    frozen = copy.deepcopy(module).eval()
    for p in frozen.parameters():
        p.requires_grad_(False)
    return frozen


@dataclass
class Scholar:
    solver: nn.Module
    generator: Generator | None = None

    def frozen(self) -> Scholar:
        """The previous scholar of DGR: a snapshot that replays and labels earlier tasks."""
        gen = freeze(self.generator) if self.generator is not None else None
        return Scholar(freeze(self.solver), gen)  # type: ignore[arg-type]

    def to(self, device: torch.device) -> Scholar:
        self.solver.to(device)
        if self.generator is not None:
            self.generator.to(device)
        return self
