"""A reference solver trained on real data of all tasks: it judges generated samples
(generator quality = its accuracy on samples w.r.t. their conditioning labels)."""

from __future__ import annotations

import torch
from torch import nn

from common.config import SolverConfig
from common.data.types import TaskStream, concat
from common.models import build_solver
from common.training.batches import shuffled_batches
from common.training.losses import classification_loss


def train_evaluator(
    stream: TaskStream,
    *,
    device: torch.device,
    iterations: int = 1000,
    batch_size: int = 128,
    seed: int = 0,
) -> nn.Module:
    """An MLP trained jointly on every task's training data (not a continual learner)."""
    torch.manual_seed(seed)
    model = build_solver(SolverConfig(arch="mlp", hidden=400), stream.shape, stream.num_classes)
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    data = concat([task.train for task in stream.tasks])
    batches = shuffled_batches(data, batch_size, rng=torch.Generator().manual_seed(seed))
    for _ in range(iterations):
        x, y = (v.to(device) for v in next(batches))
        opt.zero_grad(set_to_none=True)
        classification_loss(model(x), y).mean().backward()
        opt.step()
    return model.eval()
