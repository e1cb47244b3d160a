"""The shape every regularisation method of common.methods has: a penalty on the solver,
built for one task from the previous global solver, the classes it learnt and what the site
keeps (``memory``). A method overrides what it uses; the rest add nothing."""

from __future__ import annotations

from collections.abc import MutableMapping

from torch import Tensor, nn

from common.data.types import Split

Memory = MutableMapping[str, Tensor]


class Regulariser:
    def __init__(
        self, previous: nn.Module | None, old_classes: tuple[int, ...], memory: Memory, *, task: int
    ) -> None:
        """For task ``task`` (0: no previous solver yet)."""

    def per_sample(self, x: Tensor, logits: Tensor) -> Tensor | None:
        """A per-record term (B,) on the real batch, or None."""
        return None

    def on_weights(self, solver: nn.Module) -> Tensor | None:
        """A term on the solver's weights alone, or None."""
        return None

    def remember(self, solver: nn.Module, real: Split, memory: Memory) -> None:
        """After the round: what the site keeps for the tasks to come."""
