"""One optimisation step over a private part (real site data) and a public part (replay).

The split matters for differential privacy: only the private part may be clipped, noised
and accounted; replay comes from models that are already private, so its gradient is
added afterwards. Without DP both parts are simply summed.

    stepper.step(private=lambda: per_sample_losses_on_real_data,  # (B,)
                 public=lambda: weighted_scalar_loss_on_replay,   # ()
                 private_weight=r)
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Protocol

import torch
from torch import Tensor

from common.training.losses import mean_or_zero

LossFn = Callable[[], Tensor]


class Stepper(Protocol):
    def step(self, *, private: LossFn, public: LossFn | None, private_weight: float) -> float:
        """One update; returns the weighted loss."""
        ...

    def public_context(self) -> AbstractContextManager[None]:
        """Passes through the module that must not count as private computation."""
        ...

    def close(self) -> None:
        """Undo anything the stepper attached to the module (hooks)."""
        ...


class PlainStepper:
    """Non-private: ``private_weight * mean(private) + public``, one backward, one step."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    def public_context(self) -> AbstractContextManager[None]:
        return nullcontext()

    def close(self) -> None:
        pass

    def step(self, *, private: LossFn, public: LossFn | None, private_weight: float) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss = private_weight * mean_or_zero(private())
        if public is not None:
            loss = loss + public()
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())
