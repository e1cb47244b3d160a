"""Task streams: class groups, class-, domain- and permutation-incremental streams."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from common.config import load_config
from common.data import (
    Dataset,
    build_stream,
    class_incremental,
    domain_incremental,
    parse_class_groups,
    permuted,
)


def test_parse_class_groups_forms() -> None:
    assert parse_class_groups("", 6, 2, 0) == [(0, 1), (2, 3), (4, 5)]
    assert parse_class_groups("", 5, 2, 0) == [(0, 1), (2, 3), (4,)]
    assert parse_class_groups("1,0,3,2", 10, 2, 0) == [(1, 0), (3, 2)]
    assert parse_class_groups("0,1;2,3,4; 5", 10, 2, 0) == [(0, 1), (2, 3, 4), (5,)]
    assert parse_class_groups("", 10, 3, 2) == [(0, 1, 2), (3, 4, 5)]


@pytest.mark.parametrize(
    ("order", "num_tasks", "message"),
    [
        ("0,1,1", 0, "class 1 appears more than once"),
        ("0,1;1,2", 0, "class 1 appears more than once"),
        ("0,10", 0, "class 10 is out of range 0..9"),
        ("-1,0", 0, "class -1 is out of range"),
        ("0,a", 0, "'a' is not a class number"),
        ("0,1;;2,3", 0, "group 1 is empty"),
        ("", 6, "num_tasks=6 but class order gives only 5 tasks"),
        ("", -1, "num_tasks=-1"),
    ],
)
def test_parse_class_groups_errors(order: str, num_tasks: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_class_groups(order, 10, 2, num_tasks)


def test_class_incremental_views(tiny: Dataset) -> None:
    stream = class_incremental(tiny, [(1, 0), (5, 7)])
    assert (stream.scenario, stream.num_classes, stream.shape) == ("class", 10, (1, 4, 4))
    assert [t.name for t in stream.tasks] == ["classes 1,0", "classes 5,7"]
    assert [t.index for t in stream.tasks] == [0, 1]
    assert set(stream.tasks[1].train.y.tolist()) == {5, 7}
    assert set(stream.tasks[1].test.y.tolist()) == {5, 7}
    assert len(stream.tasks[0].train) == 40
    assert stream.tasks[0].train.base_x is tiny.train.base_x
    assert stream.classes_seen(1) == (0, 1, 5, 7)
    with pytest.raises(ValueError, match="out of range"):
        class_incremental(tiny, [(0, 11)])


def test_permuted_stream(tiny: Dataset) -> None:
    stream = permuted(tiny, 3, seed=5)
    assert [t.name for t in stream.tasks] == ["permutation 0", "permutation 1", "permutation 2"]
    assert all(t.classes == tuple(range(10)) for t in stream.tasks)
    assert torch.equal(stream.tasks[0].train.x, tiny.train.x)
    x0, x1, x2 = (t.test.x.reshape(len(tiny.test), -1) for t in stream.tasks)
    assert not torch.equal(x0, x1) and not torch.equal(x1, x2)
    assert torch.equal(x1.sort(dim=1).values, x0.sort(dim=1).values)  # same pixels, moved
    perm = stream.tasks[1].train.permutation
    assert perm is not None and stream.tasks[1].test.permutation is perm
    assert stream.tasks[0].train.permutation is None  # task 0: identity
    assert torch.equal(x1, x0[:, perm])
    assert stream.tasks[2].train.base_x is tiny.train.base_x
    p2, q2 = (s.tasks[2].train.permutation for s in (permuted(tiny, 3, seed=5), stream))
    assert p2 is not None and q2 is not None and torch.equal(p2, q2)
    with pytest.raises(ValueError, match="num_tasks"):
        permuted(tiny, 0, seed=0)


def test_domain_stream_common_shape_and_label_space(
    tiny_dataset: Callable[..., Dataset],
) -> None:
    gray = tiny_dataset("gray", shape=(1, 8, 8), num_classes=10)
    rgb = tiny_dataset("rgb", n_train=30, n_test=12, shape=(3, 12, 12), num_classes=5)
    stream = domain_incremental([gray, rgb])
    assert (stream.dataset, stream.scenario, stream.num_classes) == ("gray,rgb", "domain", 10)
    assert stream.shape == (3, 8, 8)
    assert [t.name for t in stream.tasks] == ["gray", "rgb"]
    assert stream.tasks[1].classes == (0, 1, 2, 3, 4)
    g, r = stream.tasks
    assert g.train.x.shape == (200, 3, 8, 8) and r.test.x.shape == (12, 3, 8, 8)
    assert torch.equal(g.train.x[:, 0], gray.train.x[:, 0])
    assert torch.equal(g.train.x[:, 0], g.train.x[:, 2])  # gray repeated
    assert torch.equal(r.train.y, rgb.train.y)
    assert float(r.train.x.min()) >= 0.0 and float(r.train.x.max()) <= 1.0
    same = domain_incremental([gray, gray])
    assert same.tasks[0].train is gray.train  # nothing to convert: no copy
    with pytest.raises(ValueError, match="at least one"):
        domain_incremental([])


def test_domain_stream_resizes_smoothly() -> None:
    from common.data import Split

    def ds(name: str, x: torch.Tensor) -> Dataset:
        split = Split.from_tensors(x, torch.zeros(len(x), dtype=torch.long))
        return Dataset(name, split, split, 1, ("0",))

    ramp = torch.linspace(0, 1, 16).expand(16, 16)  # brightness grows left to right
    big = torch.stack([torch.full((1, 16, 16), 0.25), ramp[None]])
    task = domain_incremental([ds("small", torch.zeros(1, 1, 4, 4)), ds("big", big)]).tasks[1]
    x = task.train.x
    assert x.shape == (2, 1, 4, 4)
    assert torch.allclose(x[0], torch.full((1, 4, 4), 0.25))
    row = x[1, 0, 0]
    assert torch.all(row[1:] > row[:-1]) and torch.allclose(x[1, 0], row.expand(4, 4))
    assert torch.allclose(row.mean(), torch.tensor(0.5), atol=1e-6)


def test_build_stream_from_config_on_digits() -> None:
    stream = build_stream(load_config({"data.name": "digits"}))
    assert (stream.scenario, len(stream), stream.shape) == ("class", 5, (1, 8, 8))
    cfg = load_config(
        {"data.name": "digits", "tasks.scenario": "permuted", "tasks.num-tasks": 3, "seed": 1}
    )
    stream = build_stream(cfg)
    assert (stream.scenario, len(stream)) == ("permuted", 3)
    cfg = load_config({"tasks.scenario": "domain", "tasks.datasets": "digits, digits"})
    stream = build_stream(cfg)
    assert (stream.scenario, len(stream), stream.num_classes) == ("domain", 2, 10)
    cfg = load_config({"data.name": "digits", "tasks.class-order": "9,8,7,6", "tasks.num-tasks": 1})
    assert build_stream(cfg).tasks[0].classes == (9, 8)


def test_impossible_task_splits_and_label_spaces_are_refused() -> None:
    from common.config import ConfigError

    with pytest.raises(ValueError, match="single task"):
        parse_class_groups("", 10, 20, 0)
    with pytest.raises(ValueError, match="single task"):
        parse_class_groups("", 10, 10, 0)
    with pytest.raises(ConfigError, match=r"data\.classes"):
        load_config({"data.classes": "a,b,a"})
    assert load_config({"data.classes": " a, b ,c"}).data.class_names == ("a", "b", "c")


def test_a_stream_says_each_task_by_class_index_and_name() -> None:
    from common.data.types import Split, Task, TaskStream

    empty = Split.from_tensors(torch.zeros(0, 1, 2, 2), torch.zeros(0, dtype=torch.long))
    tasks = tuple(Task(i, f"t{i}", c, empty, empty) for i, c in enumerate([(0, 1), (2,)]))
    names = ("Normal", "Pneumonia", "<b>Covid</b>")
    stream = TaskStream("folder", "class", 3, (1, 2, 2), tasks, names)
    assert stream.describe_tasks() == ["0 Normal, 1 Pneumonia", "2 <b>Covid</b>"]
    assert TaskStream("x", "class", 3, (1, 2, 2), tasks).describe_tasks() == ["0, 1", "2"]
