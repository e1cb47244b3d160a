"""Hard attention to the task (Serra et al. 2018), the masking DGM builds on.

A task t owns a real-valued embedding e_t per masked element (a unit for DGMa, a weight for
DGMw); its mask is ``sigmoid(s * e_t)``. Within a task ``s`` is annealed from ``1/s_max``
to ``s_max`` (soft masks early, nearly binary late); at the end of the task the mask is
binarised and added to the element's *usage*, a bit set of the tasks that use it:

    usage = sum_t 2^t * binary_mask_t      (float32, exact for up to 24 tasks)

so one array holds every finished task's mask (bit t) and the cumulative mask
``a_{<t} = usage > 0``. What a finished task uses is *reserved*: its gradient is masked to
zero from then on, so the task's function never changes (the paper's protection against
forgetting, without replaying the task to the generator).

Plain tensors in, tensors out: :mod:`common.models.dgm` applies these to its layers.
"""

from __future__ import annotations

import torch
from torch import Tensor

MAX_TASKS = 24  # usage bits stay exact in float32 (24-bit significand)
EMBEDDING_BOUND = 6.0  # HAT's clamp of the embeddings (sigmoid(6 * s_max) is 1 in float32)
COSH_BOUND = 50.0  # HAT's clamp inside the compensation's cosh


def annealed_scale(progress: float, s_max: float) -> float:
    """s at ``progress`` in [0, 1] of the task: linear from 1/s_max to s_max (HAT, eq. 3)."""
    p = min(max(progress, 0.0), 1.0)
    return 1.0 / s_max + (s_max - 1.0 / s_max) * p


def soft_mask(embedding: Tensor, s: float) -> Tensor:
    """The task's mask while it trains: sigmoid(s * e) in (0, 1), same shape as e."""
    return torch.sigmoid(s * embedding)


def binarise(embedding: Tensor) -> Tensor:
    """The task's final mask: 1 where sigmoid(s_max * e) >= 0.5, i.e. e >= 0."""
    return (embedding >= 0).float()


def task_bit(usage: Tensor, task: int) -> Tensor:
    """Task ``task``'s binary mask from a usage bit set (same shape, 0./1.)."""
    _check_task(task)
    return torch.remainder(torch.div(usage, 2**task, rounding_mode="floor"), 2)


def reserved(usage: Tensor) -> Tensor:
    """The cumulative mask of the finished tasks, a_{<t} = max over their masks (0./1.)."""
    return (usage > 0).float()


def claim(usage: Tensor, mask: Tensor, task: int) -> Tensor:
    """``usage`` with task ``task``'s binary ``mask`` added (its bit must be clear)."""
    _check_task(task)
    if bool((task_bit(usage, task) > 0).any()):
        raise ValueError(f"task {task} already has a mask in this usage set")
    return usage + mask * 2**task


def sparsity(current: list[Tensor], used: list[Tensor]) -> Tensor:
    """DGM's regulariser: the share of the *free* capacity the current masks claim,
    sum a_t (1 - a_{<t}) / sum (1 - a_{<t}) over all masked layers (0 when nothing is
    free). Normalising by the free capacity keeps its weight meaningful as the network
    grows."""
    claimed = sum((a * (1 - u)).sum() for a, u in zip(current, used, strict=True))
    free = sum((1 - u).sum() for u in used)
    return claimed / free.clamp_min(1.0)  # type: ignore[union-attr,operator]


def compensate_(embedding: Tensor, s: float, s_max: float) -> None:
    """HAT's embedding-gradient compensation, in place on ``embedding.grad``: undoes the
    annealing's effect on the gradient's size so the embedding learns at s_max's pace."""
    if embedding.grad is None:
        return
    e = embedding.detach()
    num = torch.cosh(torch.clamp(s * e, -COSH_BOUND, COSH_BOUND)) + 1
    den = torch.cosh(e) + 1
    embedding.grad.mul_(s_max / s * num / den)


def _check_task(task: int) -> None:
    if not 0 <= task < MAX_TASKS:
        raise ValueError(
            f"task {task} is outside 0..{MAX_TASKS - 1}: DGM keeps masks for "
            f"at most {MAX_TASKS} tasks"
        )
