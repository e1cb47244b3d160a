"""Tensor-backed datasets, task streams and their cheap views.

Datasets are loaded once per process into float tensors; every task or site partition is
a :class:`Split`, which shares the base tensors and only holds an index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from common.config.methods import method_of

Shape = tuple[int, int, int]  # (C, H, W)


@dataclass(frozen=True)
class Split:
    """A view of ``base_x``/``base_y`` selected by ``index``.

    base_x: (N, C, H, W) float32 in [0, 1]; base_y: (N,) int64; index: (n,) int64.
    ``permutation`` (optional, (C*H*W,) int64) permutes the pixels on access
    (permuted-MNIST tasks share base tensors with the plain dataset).
    """

    base_x: Tensor
    base_y: Tensor
    index: Tensor
    permutation: Tensor | None = field(default=None)

    @staticmethod
    def from_tensors(x: Tensor, y: Tensor) -> Split:
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x has {x.shape[0]} rows but y has {y.shape[0]}")
        return Split(x, y.long(), torch.arange(x.shape[0]))

    def __len__(self) -> int:
        return int(self.index.numel())

    @property
    def y(self) -> Tensor:  # (n,)
        return self.base_y[self.index]

    @property
    def x(self) -> Tensor:  # (n, C, H, W)
        return self.gather(torch.arange(len(self)))

    def gather(self, rows: Tensor) -> Tensor:
        """Inputs of the given rows of this split (rows index into the view)."""
        x = self.base_x[self.index[rows]]
        if self.permutation is not None:
            n = x.shape[0]
            x = x.reshape(n, -1)[:, self.permutation].reshape(x.shape)
        return x

    def batch(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        return self.gather(rows), self.base_y[self.index[rows]]

    def subset(self, rows: Tensor) -> Split:
        """A narrower view; ``rows`` index into this split."""
        return Split(self.base_x, self.base_y, self.index[rows], self.permutation)

    def where_label_in(self, classes: tuple[int, ...] | list[int]) -> Split:
        mask = torch.isin(self.y, torch.as_tensor(list(classes), dtype=torch.long))
        return self.subset(mask.nonzero(as_tuple=True)[0])

    @property
    def shape(self) -> Shape:
        c, h, w = self.base_x.shape[1:]
        return (int(c), int(h), int(w))


def concat(splits: list[Split]) -> Split:
    """Union of splits (materialises when they do not share base tensors)."""
    if not splits:
        raise ValueError("concat needs at least one split")
    first = splits[0]
    if all(
        s.base_x is first.base_x and s.base_y is first.base_y and s.permutation is None
        for s in splits
    ):
        return Split(first.base_x, first.base_y, torch.cat([s.index for s in splits]))
    return Split.from_tensors(torch.cat([s.x for s in splits]), torch.cat([s.y for s in splits]))


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    test: Split
    num_classes: int
    class_names: tuple[str, ...]

    @property
    def shape(self) -> Shape:
        return self.train.shape


@dataclass(frozen=True)
class Task:
    """One step of the stream: train/test data and the classes it introduces."""

    index: int  # 0-based position in the stream
    name: str
    classes: tuple[int, ...]
    train: Split
    test: Split


@dataclass(frozen=True)
class TaskStream:
    dataset: str
    scenario: str  # class | domain | permuted
    num_classes: int
    shape: Shape
    tasks: tuple[Task, ...]
    class_names: tuple[str, ...] = ()  # the dataset's name of each class index (if known)

    def __len__(self) -> int:
        return len(self.tasks)

    def describe_tasks(self) -> list[str]:
        """Per task, its classes by index and name (a report says what each task was):
        ``0 Normal, 1 Pneumonia``; for a domain stream the dataset's name too."""
        out = []
        for task in self.tasks:
            names = [self.class_names[c] if c < len(self.class_names) else "" for c in task.classes]
            classes = ", ".join(
                f"{c} {n}" if n and n != str(c) else str(c)
                for c, n in zip(task.classes, names, strict=True)
            )
            out.append(f"{task.name}: {classes}" if self.scenario == "domain" else classes)
        return out

    def classes_seen(self, upto: int) -> tuple[int, ...]:
        """Sorted union of classes of tasks 0..upto (inclusive)."""
        seen: set[int] = set()
        for task in self.tasks[: upto + 1]:
            seen.update(task.classes)
        return tuple(sorted(seen))


def real_data_for(method: str, tasks: Sequence[Task], t: int) -> Split:
    """The real data a site trains on at task t: the current task, or all so far (joint)."""
    if method_of(method).all_tasks:
        return concat([task.train for task in tasks[: t + 1]])
    return tasks[t].train
