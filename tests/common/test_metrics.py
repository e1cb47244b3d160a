"""Metrics on hand-computed matrices, tiny known models and deterministic generators."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from common.data.types import Split, Task
from common.metrics import (
    AccuracyMatrix,
    accuracy,
    evaluate_tasks,
    generator_quality,
    per_task_generator_quality,
)

CPU = torch.device("cpu")
NAN = float("nan")


class ArgmaxOfInput(nn.Module):
    """Predicts argmax of the flattened input; records the mode it ran in."""

    def __init__(self) -> None:
        super().__init__()
        self.modes: list[bool] = []

    def forward(self, x: Tensor) -> Tensor:
        self.modes.append(self.training)
        return x.flatten(1)


class Relabel(nn.Module):
    """Classifies one-hot inputs, but sends class ``wrong`` to class 0."""

    def __init__(self, wrong: int | None = None) -> None:
        super().__init__()
        self.wrong = wrong

    def forward(self, x: Tensor) -> Tensor:
        logits = x.flatten(1).clone()
        if self.wrong is not None:
            hit = logits.argmax(1) == self.wrong
            logits[hit, 0] = 10.0
        return logits


def one_hot_images(labels: Tensor, k: int = 4) -> Tensor:
    return nn.functional.one_hot(labels, k).float().view(-1, 1, 1, k)


def split_of(labels: list[int], correct: list[bool]) -> Split:
    """Inputs one-hot at the label (correct) or at label+1 (wrong)."""
    y = torch.tensor(labels)
    shown = torch.tensor([c if ok else (c + 1) % 4 for c, ok in zip(labels, correct, strict=True)])
    return Split.from_tensors(one_hot_images(shown), y)


def test_matrix_two_tasks_hand_computed() -> None:
    m = AccuracyMatrix.from_list([[1.0, None], [0.6, 0.9]])
    assert m.final_average_accuracy() == pytest.approx(0.75)
    assert m.backward_transfer() == pytest.approx(-0.4)
    assert m.forgetting() == pytest.approx(0.4)
    assert m.average_accuracy_per_task() == pytest.approx([1.0, 0.75])


def test_matrix_three_tasks_and_mid_run() -> None:
    m = AccuracyMatrix(3)
    m.record(0, [0.9])
    assert math.isnan(m.backward_transfer()) and math.isnan(m.forgetting())
    assert m.final_average_accuracy() == pytest.approx(0.9)
    m.record(1, [0.95, 0.8])  # task 0 improved: positive transfer, no forgetting yet
    assert m.backward_transfer() == pytest.approx(0.05)
    assert m.forgetting() == pytest.approx(-0.05)
    m.record(2, [0.5, 0.7, 1.0])
    # BWT: ((0.5-0.9) + (0.7-0.8)) / 2; forgetting: ((0.95-0.5) + (0.8-0.7)) / 2
    assert m.backward_transfer() == pytest.approx(-0.25)
    assert m.forgetting() == pytest.approx(0.275)
    assert m.final_average_accuracy() == pytest.approx(2.2 / 3)
    assert m.last == 2


def test_matrix_json_round_trip_and_errors() -> None:
    m = AccuracyMatrix(2)
    m.record(0, [0.5])
    rows = m.to_list()
    assert rows == [[0.5, None], [None, None]]
    back = AccuracyMatrix.from_list(rows)
    assert back.to_list() == rows and math.isnan(back.average_accuracy(1))
    assert math.isnan(AccuracyMatrix(3).final_average_accuracy())
    with pytest.raises(ValueError):
        m.record(1, [0.5])
    with pytest.raises(ValueError):
        m.record(2, [0.1, 0.2, 0.3])
    with pytest.raises(ValueError):
        AccuracyMatrix.from_list([[1.0], [1.0, 2.0]])


def test_accuracy_known_model_batches_and_restores_mode() -> None:
    split = split_of([0, 1, 2, 3, 0, 1, 2, 3], [True] * 6 + [False] * 2)
    model = ArgmaxOfInput().train()
    assert accuracy(model, split, device=CPU, batch_size=3) == pytest.approx(0.75)
    assert model.modes == [False, False, False] and model.training
    model.eval()
    accuracy(model, split, device=CPU)
    assert not model.training
    assert math.isnan(accuracy(model, split.subset(torch.arange(0)), device=CPU))


def test_accuracy_of_a_permuted_view() -> None:
    x = one_hot_images(torch.tensor([0, 1, 2, 3]))
    base = Split.from_tensors(x, torch.tensor([3, 2, 1, 0]))
    permuted = Split(base.base_x, base.base_y, base.index, torch.tensor([3, 2, 1, 0]))
    assert accuracy(ArgmaxOfInput(), base, device=CPU) == 0.0
    assert accuracy(ArgmaxOfInput(), permuted, device=CPU) == 1.0


def test_evaluate_tasks() -> None:
    good, half = split_of([0, 1], [True, True]), split_of([2, 3], [True, False])
    tasks = [Task(0, "t0", (0, 1), good, good), Task(1, "t1", (2, 3), half, half)]
    assert evaluate_tasks(ArgmaxOfInput(), tasks, 1, device=CPU) == [1.0, 0.5]
    assert evaluate_tasks(ArgmaxOfInput(), tuple(tasks), 0, device=CPU) == [1.0]
    with pytest.raises(ValueError):
        evaluate_tasks(ArgmaxOfInput(), tasks, 2, device=CPU)


def test_generator_quality_perfect_and_imperfect() -> None:
    calls: list[Tensor] = []

    def sample_fn(labels: Tensor) -> Tensor:
        calls.append(labels)
        return one_hot_images(labels)

    q = generator_quality(sample_fn, Relabel(), [0, 1, 2], samples_per_class=5, device=CPU)
    assert q == 1.0
    assert [c.tolist() for c in calls] == [[0] * 5, [1] * 5, [2] * 5]
    evaluator = Relabel(wrong=1).train()
    q = generator_quality(sample_fn, evaluator, [0, 1], samples_per_class=4, device=CPU)
    assert q == pytest.approx(0.5) and evaluator.training
    assert math.isnan(generator_quality(sample_fn, Relabel(), [], samples_per_class=3, device=CPU))


def test_per_task_generator_quality() -> None:
    empty = Split.from_tensors(torch.zeros(0, 1, 1, 4), torch.zeros(0))
    tasks = [Task(0, "t0", (0, 1), empty, empty), Task(1, "t1", (2, 3), empty, empty)]
    q = per_task_generator_quality(
        one_hot_images, Relabel(wrong=3), tasks, 1, samples_per_class=2, device=CPU
    )
    assert q == [1.0, 0.5]
