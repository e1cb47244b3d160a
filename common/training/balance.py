"""Class-balanced refit of the solver's head on generated samples, after a task.

In class-incremental learning with generative replay the classifier sees real inputs only
for the current task's classes and generated ones for every earlier class, so whatever
tells real from generated also tells new from old: real test inputs of old classes drift
to the newest classes (split-MNIST DGM: 64% of the final errors went to the last task's
two classes). After the task, when the generator draws every class seen so far (the
current task's too), the solver's last linear layer is refitted on ``samples`` generated
inputs per class, the same number for every class, with the layers below it frozen: no
class is told apart by being real (the idea of balanced fine-tuning, Castro et al. 2018,
with replay instead of stored exemplars). Measured on DGM it moved those errors (37% to
the last task's classes) without removing them: the same accuracy (docs/results.md,
"Where the errors go"); off by default.

It reads only the generator and the solver, never a record: post-processing under DP.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.config import ExperimentConfig
from common.data.types import TaskStream
from common.models.generator import Generator
from common.models.solver import split_head
from common.training.optim import adam

log = logging.getLogger("fedreplay.server")
BATCH = 256  # generated features per step
CHUNK = 1000  # inputs per generator / body call (memory)


@torch.no_grad()
def generated_features(
    body: Callable[[Tensor], Tensor],
    generator: Generator,
    classes: Sequence[int],
    *,
    samples: int,
    rng: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """``samples`` generated inputs of each of ``classes`` through ``body``: (features
    (C * samples, hidden), labels (C * samples,)), on the body's device."""
    labels = torch.tensor(list(classes)).repeat_interleave(samples)  # (C * samples,)
    feats = torch.cat(
        [
            body(generator.sample(labels[i : i + CHUNK], generator=rng))
            for i in range(0, len(labels), CHUNK)
        ]
    )
    return feats, labels.to(feats.device)


def balance_head(
    solver: nn.Module,
    generator: Generator,
    classes: Sequence[int],
    *,
    steps: int,
    samples: int,
    lr: float,
    rng: torch.Generator,
) -> float:
    """Refit ``solver``'s last linear layer for ``steps`` Adam steps on ``samples``
    generated inputs of each of ``classes`` (in place); returns the last loss."""
    if steps <= 0 or not classes:
        return 0.0
    body, head = split_head(solver)
    feats, labels = generated_features(body, generator, classes, samples=samples, rng=rng)
    opt = adam(head.parameters(), lr=lr)
    loss = torch.zeros(())
    for _ in range(steps):
        idx = torch.randint(len(labels), (BATCH,), generator=rng).to(labels.device)
        loss = F.cross_entropy(head(feats[idx]), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return float(loss.detach())


def balance_after_task(
    cfg: ExperimentConfig, solver: nn.Module, generator: Generator, stream: TaskStream, t: int
) -> bool:
    """``solver.balance-steps`` after task ``t``: the head refitted over the classes seen,
    seeded from ``seed`` and the task (generated data only). False when off."""
    steps = cfg.solver.balance_steps
    if steps <= 0:
        return False
    seen = stream.classes_seen(t)
    loss = balance_head(
        solver,
        generator,
        seen,
        steps=steps,
        samples=cfg.solver.balance_samples,
        lr=cfg.train.lr,
        rng=torch.Generator().manual_seed(cfg.seed + 7919 * (t + 1)),
    )
    log.info("task %d: solver head balanced over %d classes (loss %.3f)", t + 1, len(seen), loss)
    return True
