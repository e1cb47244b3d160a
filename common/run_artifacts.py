"""What every finished run (single-site or federated) leaves in its folder besides the
summary: the accuracy matrix and curve, generated samples per task, the final models."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from common.data.types import TaskStream
from common.metrics import AccuracyMatrix
from common.models import Generator
from common.plots import plot_accuracy_curves, plot_accuracy_matrix, plot_sample_grid
from common.results import RunFolder

Sampler = Callable[[torch.Tensor], torch.Tensor]  # (n,) labels -> (n, C, H, W) inputs


def sample_grid(
    generator: Generator | Sampler,
    stream: TaskStream,
    upto: int,
    *,
    per_class: int = 8,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Generated samples for every class of tasks 0..upto, one row per task."""
    rng = torch.Generator().manual_seed(seed)
    rows = {}
    for task in stream.tasks[: upto + 1]:
        labels = torch.tensor(task.classes).repeat_interleave(per_class)
        if isinstance(generator, Generator):
            rows[task.name] = generator.sample(labels, generator=rng).cpu()
        else:
            rows[task.name] = generator(labels).cpu()
    return rows


def save_final_artifacts(
    run: RunFolder,
    *,
    matrix: AccuracyMatrix,
    stream: TaskStream,
    method: str,
    solver: nn.Module,
    generator: Generator | None,
    where: str,
    sampler: Sampler | None = None,
) -> None:
    """accuracy_matrix.png, accuracy_curve.png, samples.png (if a generator; drawn by
    ``sampler`` when given, e.g. an ensemble of generators), final_models.pt."""
    plot_accuracy_matrix(
        matrix,
        run.file("accuracy_matrix.png"),
        task_names=[task.name for task in stream.tasks],
        title=f"{method} on {stream.dataset} ({where})",
    )
    plot_accuracy_curves(
        {method: matrix.average_accuracy_per_task()},
        run.file("accuracy_curve.png"),
        title=f"{stream.dataset}, {where}",
    )
    if generator is not None:
        plot_sample_grid(
            sample_grid(sampler or generator, stream, len(stream) - 1),
            run.file("samples.png"),
            title=f"generated samples per task ({where})",
        )
    torch.save(
        {
            "solver": solver.state_dict(),
            "generator": generator.state_dict() if generator is not None else None,
        },
        run.file("final_models.pt"),
    )
