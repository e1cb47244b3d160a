"""Composition is a protocol decision from configuration; the data can only refuse it."""

import dataclasses

import pytest
import torch

from common.data.types import Split, concat
from common.privacy.composition import (
    PER_TASK,
    SEQUENTIAL,
    CompositionError,
    check_composition,
    composition_for,
    shared_records,
)


def test_auto_follows_scenario_and_method_only() -> None:
    assert composition_for("auto", scenario="class", method="dgr") == PER_TASK
    assert composition_for("auto", scenario="domain", method="none") == PER_TASK
    assert composition_for("auto", scenario="permuted", method="dgr") == SEQUENTIAL
    assert composition_for("auto", scenario="class", method="joint") == SEQUENTIAL
    assert composition_for("sequential", scenario="class", method="dgr") == SEQUENTIAL
    with pytest.raises(CompositionError, match="permuted"):
        composition_for("per-task", scenario="permuted", method="dgr")


def test_one_duplicated_image_under_another_label_is_one_record_in_two_tasks() -> None:
    """A record is its input: relabelling it must not buy it a fresh budget (a reordered
    data.classes used to give new fingerprints). So one image under two labels in two tasks
    is one record in two tasks: per-task composition is refused with the fix named, never
    silently switched (the earlier review's attack flipped 'auto' and changed sigma)."""
    x = torch.rand(30, 1, 4, 4)
    data = Split.from_tensors(x, torch.arange(30) % 3)
    tasks = [data.where_label_in([c]) for c in range(3)]
    duplicate = Split.from_tensors(tasks[0].x[:1].clone(), torch.tensor([1]))
    poisoned = [tasks[0], concat([tasks[1], duplicate]), tasks[2]]
    assert shared_records(poisoned) == 1
    with pytest.raises(CompositionError, match="remove the duplicates"):
        check_composition(PER_TASK, poisoned, where="site 0")


def test_per_task_is_refused_when_the_same_record_is_in_two_tasks() -> None:
    x = torch.rand(30, 1, 4, 4)
    data = Split.from_tensors(x, torch.arange(30) % 3)
    tasks = [data.where_label_in([c]) for c in range(3)]
    # The same records under a pixel permutation (permuted streams) are the same records.
    permuted = [tasks[0], dataclasses.replace(tasks[0], permutation=torch.randperm(16))]
    assert shared_records(permuted) == len(tasks[0])
    # A record copied into two tasks (new tensors, same content) is one record in two tasks.
    record = Split.from_tensors(x[:1].clone(), torch.tensor([2]))
    with_copy = [concat([tasks[0], record]), concat([tasks[1], record])]
    with pytest.raises(CompositionError, match="1 records"):
        check_composition(PER_TASK, with_copy, where="site 0")
    check_composition(SEQUENTIAL, with_copy, where="site 0")  # sequential covers reuse
