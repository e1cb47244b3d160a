"""Continual-learning metrics: test accuracy, the accuracy matrix, generator quality.

The accuracy matrix follows the usual convention: ``R[i][j]`` is the test accuracy on
task ``j`` after learning task ``i`` (0-based); entries with ``j > i`` and rows not
learned yet are NaN. All accuracies are fractions in [0, 1].

    matrix = AccuracyMatrix(len(stream))
    for i in range(len(stream)):
        ...  # learn task i
        matrix.record(i, evaluate_tasks(model, stream.tasks, i, device=device))
    matrix.final_average_accuracy(), matrix.forgetting(), matrix.backward_transfer()
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from common.data.types import Split, Task

NAN = float("nan")


@torch.no_grad()
def batched_logits(
    model: nn.Module, split: Split, *, device: torch.device, batch_size: int = 1024
) -> Iterator[tuple[Tensor, Tensor]]:
    """(logits, labels) of ``split`` batch by batch, with ``model`` in eval mode (its
    previous mode is restored afterwards)."""
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(split), batch_size):
            x, y = split.batch(torch.arange(start, min(start + batch_size, len(split))))
            yield model(x.to(device)), y.to(device)
    finally:
        model.train(was_training)


@torch.no_grad()
def accuracy(
    model: nn.Module, split: Split, *, device: torch.device, batch_size: int = 1024
) -> float:
    """Single-head accuracy (argmax over all outputs) of ``model`` on ``split``.

    The model is put in eval mode for the evaluation and its previous mode restored.
    An empty split gives NaN.
    """
    if len(split) == 0:
        return NAN
    correct = sum(
        int((logits.argmax(dim=1) == y).sum())
        for logits, y in batched_logits(model, split, device=device, batch_size=batch_size)
    )
    return correct / len(split)


def evaluate_tasks(
    model: nn.Module,
    tasks: Sequence[Task],
    upto: int,
    *,
    device: torch.device,
    batch_size: int = 1024,
) -> list[float]:
    """Test accuracy on each of tasks ``0..upto`` (inclusive)."""
    if not 0 <= upto < len(tasks):
        raise ValueError(f"upto={upto} is outside 0..{len(tasks) - 1}")
    return [
        accuracy(model, task.test, device=device, batch_size=batch_size)
        for task in tasks[: upto + 1]
    ]


@torch.no_grad()
def generator_quality(
    sample_fn: Callable[[Tensor], Tensor],
    evaluator: nn.Module,
    classes: Sequence[int],
    *,
    samples_per_class: int,
    device: torch.device,
) -> float:
    """How often ``evaluator`` recognises generated samples as their conditioning label.

    ``sample_fn`` maps a (n,) int64 label tensor on ``device`` to (n, C, H, W) inputs;
    ``evaluator`` is a classifier trained on real data. NaN when there is nothing to test.
    """
    if samples_per_class < 1 or not classes:
        return NAN
    was_training = evaluator.training
    evaluator.eval()
    try:
        correct = 0
        for c in classes:
            labels = torch.full((samples_per_class,), int(c), dtype=torch.long, device=device)
            pred = evaluator(sample_fn(labels).to(device)).argmax(dim=1)
            correct += int((pred == labels).sum().item())
    finally:
        evaluator.train(was_training)
    return correct / (samples_per_class * len(classes))


def per_task_generator_quality(
    sample_fn: Callable[[Tensor], Tensor],
    evaluator: nn.Module,
    tasks: Sequence[Task],
    upto: int,
    *,
    samples_per_class: int,
    device: torch.device,
) -> list[float]:
    """:func:`generator_quality` on the classes of each of tasks ``0..upto``."""
    if not 0 <= upto < len(tasks):
        raise ValueError(f"upto={upto} is outside 0..{len(tasks) - 1}")
    return [
        generator_quality(
            sample_fn,
            evaluator,
            list(t.classes),
            samples_per_class=samples_per_class,
            device=device,
        )
        for t in tasks[: upto + 1]
    ]


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else NAN


class AccuracyMatrix:
    """``R[i][j]``: accuracy on task ``j`` after learning task ``i`` (NaN = not measured)."""

    def __init__(self, num_tasks: int) -> None:
        if num_tasks < 1:
            raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
        self.num_tasks = num_tasks
        self.rows: list[list[float]] = [[NAN] * num_tasks for _ in range(num_tasks)]

    def record(self, after_task: int, accuracies: Sequence[float]) -> None:
        """Store the accuracies on tasks ``0..after_task`` measured after ``after_task``."""
        if not 0 <= after_task < self.num_tasks:
            raise ValueError(f"after_task={after_task} is outside 0..{self.num_tasks - 1}")
        if len(accuracies) != after_task + 1:
            raise ValueError(
                f"after task {after_task} expected {after_task + 1} accuracies, "
                f"got {len(accuracies)}"
            )
        row = [float(a) for a in accuracies] + [NAN] * (self.num_tasks - after_task - 1)
        self.rows[after_task] = row

    def is_filled(self, after_task: int) -> bool:
        return any(not math.isnan(v) for v in self.rows[after_task])

    @property
    def last(self) -> int:
        """Index of the last filled row (the ``T - 1`` of the metrics); -1 if none."""
        filled = [i for i in range(self.num_tasks) if self.is_filled(i)]
        return filled[-1] if filled else -1

    def average_accuracy(self, after_task: int) -> float:
        """Mean accuracy over the tasks seen, ``0..after_task``, after learning it."""
        return _mean(self.rows[after_task][: after_task + 1])

    def average_accuracy_per_task(self) -> list[float]:
        """:meth:`average_accuracy` after each task (NaN for rows not filled)."""
        return [self.average_accuracy(i) for i in range(self.num_tasks)]

    def final_average_accuracy(self) -> float:
        """Average accuracy after the last task learned so far (NaN if nothing recorded)."""
        last = self.last
        return self.average_accuracy(last) if last >= 0 else NAN

    def backward_transfer(self) -> float:
        """BWT (Lopez-Paz & Ranzato, 2017): mean over ``j < T-1`` of ``R[T-1][j] - R[j][j]``."""
        last = self.last
        return _mean([self.rows[last][j] - self.rows[j][j] for j in range(last)])

    def forgetting_per_task(self) -> list[float]:
        """Forgetting of each earlier task j < T-1: ``max_{i in [j, T-1)} R[i][j] - R[T-1][j]``."""
        last = self.last
        drops = []
        for j in range(last):
            before = [self.rows[i][j] for i in range(j, last) if not math.isnan(self.rows[i][j])]
            drops.append(max(before) - self.rows[last][j] if before else NAN)
        return drops

    def forgetting(self) -> float:
        """Average forgetting (Chaudhry et al., 2018): the mean of :meth:`forgetting_per_task`."""
        return _mean(self.forgetting_per_task())

    def to_list(self) -> list[list[float | None]]:
        """JSON-ready rows, NaN as ``None``."""
        return [[None if math.isnan(v) else v for v in row] for row in self.rows]

    @classmethod
    def from_list(cls, rows: Sequence[Sequence[float | None]]) -> AccuracyMatrix:
        """Inverse of :meth:`to_list` (``None`` back to NaN); rows must be square."""
        matrix = cls(len(rows))
        for i, row in enumerate(rows):
            if len(row) != len(rows):
                raise ValueError(f"row {i} has {len(row)} entries, expected {len(rows)}")
            matrix.rows[i] = [NAN if v is None else float(v) for v in row]
        return matrix

    def __repr__(self) -> str:
        return f"AccuracyMatrix(num_tasks={self.num_tasks}, rows={self.to_list()})"
