"""Regularisation methods (each a :class:`common.methods.base.Regulariser`): a site learns
each task from its own records alone, its solver held near the previous global solver by a
penalty (no replay, no generator).

A method here is one module holding the whole of it: the penalty its sites add to the
solver's loss, what the server sends (the global solver at the end of the task before, once
per task, as a replay payload without generators: ``server.run.replay_payload``), what a site
keeps between rounds (``memory``, on its own disk: ``client.site_store``). Registering one
is a line in :data:`REGULARISERS` and its traits in ``common.config.methods`` (the
configuration, the lowest layer, knows what a method is, not its module: it refuses these
under DP, where each reads the site's records outside DP-SGD's accounting).

    reg = regulariser_for(method, previous_solver, old_classes, memory, task=t)
    loss = per-sample loss + reg.per_sample(x, logits)     # on the site's real records
    loss = loss + reg.on_weights(solver)                   # on the weights alone
    reg.remember(solver, real, memory)                     # after the round (EWC's Fisher)
"""

from __future__ import annotations

from torch import Tensor, nn

from common.methods.base import Memory, Regulariser
from common.methods.ewc import EWC
from common.methods.lwf import LwF
from common.replay import ReplayPayload

REGULARISERS: dict[str, type[Regulariser]] = {"lwf": LwF, "ewc": EWC}


def is_regulariser(method: str) -> bool:
    return method in REGULARISERS


def previous_solver_payload(
    task: int, solver: dict[str, Tensor], classes: tuple[int, ...]
) -> ReplayPayload:
    """The server side of every method here: the global solver at the end of task
    ``task - 1`` and the classes it learnt, sent once per task as a payload without
    generators (server.run.replay_payload)."""
    return ReplayPayload(task=task, solver=solver, generators=(), weights=(), classes=classes)


def regulariser_for(
    method: str,
    previous: nn.Module | None,
    old_classes: tuple[int, ...],
    memory: Memory,
    *,
    task: int,
) -> Regulariser | None:
    """The method's penalty for task ``task`` from the previous global solver and the
    classes it learnt (None: the method is not a regulariser)."""
    cls = REGULARISERS.get(method)
    if cls is None:
        return None
    return cls(previous, old_classes, memory, task=task)


__all__ = [
    "REGULARISERS",
    "Memory",
    "Regulariser",
    "is_regulariser",
    "previous_solver_payload",
    "regulariser_for",
]
