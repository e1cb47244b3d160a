"""Turn datasets into continual-learning task streams.

* class-incremental: each task holds a group of classes (views of one dataset);
* domain-incremental: one task per dataset, in one shared label space and input shape;
* permuted: every task is the whole dataset under its own fixed pixel permutation.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

from ..config import ExperimentConfig
from .datasets import load_dataset
from .root import resolve_data_root
from .types import Dataset, Shape, Split, Task, TaskStream

DEFAULT_PERMUTED_TASKS = 10  # permuted scenario with tasks.num-tasks = 0
_CHUNK = 4096  # rows converted at a time by domain_incremental


def _ints(text: str, what: str) -> list[int]:
    out = []
    for token in text.split(","):
        token = token.strip()
        try:
            out.append(int(token))
        except ValueError:
            raise ValueError(f"{what}: {token!r} is not a class number") from None
    return out


def check_groups(
    groups: list[tuple[int, ...]], num_classes: int, what: str = "class groups"
) -> None:
    """Raise ValueError unless every group is non-empty and each class is in range, used once."""
    if not groups:
        raise ValueError(f"{what}: no tasks")
    seen: set[int] = set()
    for i, group in enumerate(groups):
        if not group:
            raise ValueError(f"{what}: group {i} is empty")
        for c in group:
            if not 0 <= c < num_classes:
                raise ValueError(f"{what}: class {c} is out of range 0..{num_classes - 1}")
            if c in seen:
                raise ValueError(f"{what}: class {c} appears more than once")
            seen.add(c)


def parse_class_groups(
    class_order: str, num_classes: int, classes_per_task: int, num_tasks: int
) -> list[tuple[int, ...]]:
    """Class groups of a class-incremental stream.

    ``""`` -> 0..K-1 in groups of ``classes_per_task``; ``"1,0,3,2"`` -> that order, grouped
    the same way (the last group may be smaller); ``"0,1;2,3"`` -> explicit groups.
    ``num_tasks > 0`` keeps the first ``num_tasks`` groups.
    """
    if classes_per_task < 1:
        raise ValueError(f"classes_per_task={classes_per_task} must be >= 1")
    if num_tasks < 0:
        raise ValueError(f"num_tasks={num_tasks} must be >= 0")
    text = class_order.strip()
    what = f"class order {text!r}" if text else "class order"
    if not text and classes_per_task >= num_classes:
        raise ValueError(
            f"tasks.classes-per-task={classes_per_task} with {num_classes} classes makes a "
            "single task, not a class-incremental stream: use fewer classes per task"
        )
    if ";" in text:
        groups = [tuple(_ints(part, what)) if part.strip() else () for part in text.split(";")]
    else:
        order = _ints(text, what) if text else list(range(num_classes))
        groups = [
            tuple(order[i : i + classes_per_task]) for i in range(0, len(order), classes_per_task)
        ]
    check_groups(groups, num_classes, what)
    if num_tasks > len(groups):
        raise ValueError(f"num_tasks={num_tasks} but {what} gives only {len(groups)} tasks")
    return groups[:num_tasks] if num_tasks else groups


def class_incremental(ds: Dataset, groups: list[tuple[int, ...]]) -> TaskStream:
    """One task per class group; tasks are views of ``ds`` (nothing is copied)."""
    check_groups(groups, ds.num_classes)
    tasks = tuple(
        Task(
            index=i,
            name="classes " + ",".join(map(str, g)),
            classes=tuple(g),
            train=ds.train.where_label_in(g),
            test=ds.test.where_label_in(g),
        )
        for i, g in enumerate(groups)
    )
    return TaskStream(ds.name, "class", ds.num_classes, ds.shape, tasks, ds.class_names)


def convert_split(split: Split, shape: Shape) -> Split:
    """``split`` with inputs of ``shape``: gray repeated to 3 channels, bilinear resize.

    Returns ``split`` itself when it already has that shape and no permutation.
    """
    c, h, w = shape
    if split.shape == shape and split.permutation is None:
        return split
    if split.shape[0] not in (1, c):
        raise ValueError(f"cannot convert {split.shape[0]} channels to {c}")
    out = torch.empty((len(split), c, h, w), dtype=torch.float32)
    for start in range(0, len(split), _CHUNK):
        rows = torch.arange(start, min(start + _CHUNK, len(split)))
        x = split.gather(rows).expand(-1, c, -1, -1)
        if x.shape[2:] != (h, w):
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        out[start : start + len(rows)] = x.clamp(0.0, 1.0)
    return Split.from_tensors(out, split.y)


def domain_incremental(datasets: list[Dataset]) -> TaskStream:
    """One task per dataset, labels in one space of max(num_classes) classes.

    Inputs get one shape: the most channels of any dataset and the first dataset's size.
    Datasets that differ are converted once (new tensors).
    """
    if not datasets:
        raise ValueError("domain_incremental needs at least one dataset")
    _, h, w = datasets[0].shape
    shape = (max(d.shape[0] for d in datasets), h, w)
    tasks = tuple(
        Task(
            i,
            d.name,
            tuple(range(d.num_classes)),
            convert_split(d.train, shape),
            convert_split(d.test, shape),
        )
        for i, d in enumerate(datasets)
    )
    num_classes = max(d.num_classes for d in datasets)
    names = max((d.class_names for d in datasets), key=len)
    return TaskStream(
        ",".join(d.name for d in datasets), "domain", num_classes, shape, tasks, names
    )


def permuted(ds: Dataset, num_tasks: int, seed: int) -> TaskStream:
    """``num_tasks`` tasks over all classes; task 0 unpermuted, others a random pixel order."""
    if num_tasks < 1:
        raise ValueError(f"num_tasks={num_tasks} must be >= 1")
    gen = torch.Generator().manual_seed(seed)
    c, h, w = ds.shape
    classes = tuple(range(ds.num_classes))
    tasks = []
    for i in range(num_tasks):
        perm = None if i == 0 else torch.randperm(c * h * w, generator=gen)
        train, test = (_permute(s, perm) for s in (ds.train, ds.test))
        tasks.append(Task(i, f"permutation {i}", classes, train, test))
    return TaskStream(ds.name, "permuted", ds.num_classes, ds.shape, tuple(tasks), ds.class_names)


def _permute(split: Split, perm: torch.Tensor | None) -> Split:
    """``split`` with ``perm`` applied after any permutation it already has."""
    if perm is None:
        return split
    if split.permutation is not None:
        perm = split.permutation[perm]
    return replace(split, permutation=perm)


def build_stream(cfg: ExperimentConfig) -> TaskStream:
    """The task stream described by ``cfg.data`` and ``cfg.tasks``."""
    root, download, t = resolve_data_root(cfg.data.root), cfg.data.download, cfg.tasks
    if t.scenario == "domain":
        names = [n.strip() for n in t.datasets.split(",") if n.strip()]
        if t.num_tasks > len(names):
            raise ValueError(f"tasks.num-tasks={t.num_tasks} but tasks.datasets has {len(names)}")
        names = names[: t.num_tasks] if t.num_tasks else names
        return domain_incremental([load_dataset(n, root=root, download=download) for n in names])
    ds = load_dataset(cfg.data.name, root=root, download=download, classes=cfg.data.class_names)
    if t.scenario == "permuted":
        return permuted(ds, t.num_tasks or DEFAULT_PERMUTED_TASKS, cfg.seed)
    if t.scenario == "class":
        groups = parse_class_groups(t.class_order, ds.num_classes, t.classes_per_task, t.num_tasks)
        return class_incremental(ds, groups)
    raise ValueError(f"unknown scenario {t.scenario!r}")
