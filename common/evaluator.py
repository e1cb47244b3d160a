"""A reference solver trained on real data of all tasks: it judges generated samples
(generator quality = its accuracy on samples w.r.t. their conditioning labels)."""

from __future__ import annotations

import torch
from torch import nn

from common.config import SolverConfig
from common.data.types import Shape, Split, TaskStream, concat
from common.models import build_solver
from common.training.batches import shuffled_batches
from common.training.losses import classification_loss
from common.training.optim import adam


def train_evaluator(
    stream: TaskStream,
    *,
    device: torch.device,
    iterations: int = 1000,
    batch_size: int = 128,
    seed: int = 0,
) -> nn.Module:
    """An MLP trained jointly on every task's training data (not a continual learner)."""
    return train_fresh_solver(
        SolverConfig(arch="mlp", hidden=400),
        stream.shape,
        stream.num_classes,
        concat([task.train for task in stream.tasks]),
        iterations=iterations,
        batch_size=batch_size,
        lr=1e-3,
        seed=seed,
        device=device,
    )


def train_fresh_solver(
    solver: SolverConfig,
    shape: Shape,
    num_classes: int,
    data: Split,
    *,
    iterations: int,
    batch_size: int,
    lr: float,
    seed: int,
    device: torch.device,
) -> nn.Module:
    """A solver of the given architecture, initialised from ``seed``, trained on ``data``
    alone by :func:`fit_solver`; in eval mode."""
    torch.manual_seed(seed)
    model = build_solver(solver, shape, num_classes)
    return fit_solver(
        model,
        data,
        iterations=iterations,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        device=device,
    )


def fit_solver(
    model: nn.Module,
    data: Split,
    *,
    iterations: int,
    batch_size: int,
    lr: float,
    seed: int,
    device: torch.device,
) -> nn.Module:
    """Plain supervised training (Adam, shuffled batches); returns the model in eval mode."""
    model.to(device).train()
    opt = adam(model.parameters(), lr=lr)
    batches = shuffled_batches(data, batch_size, rng=torch.Generator().manual_seed(seed))
    for _ in range(iterations):
        x, y = (v.to(device) for v in next(batches))
        opt.zero_grad(set_to_none=True)
        classification_loss(model(x), y).mean().backward()
        opt.step()
    return model.eval()
