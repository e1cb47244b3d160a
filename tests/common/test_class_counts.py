"""replay.mixture = "class-counts": what a site reports, and what the server makes of it."""

import math

import pytest
import torch

from common.class_counts import (
    class_count_metrics,
    class_shares,
    class_weight_rows,
    reported_counts,
)


def test_a_site_reports_its_records_per_class_of_the_task() -> None:
    labels = torch.tensor([8, 8, 8, 9, 3])  # (a stray 3 is not of the task)
    assert class_count_metrics(labels, (8, 9)) == {"class-count-8": 3.0, "class-count-9": 1.0}
    metrics = {"num-examples": 4.0, "class-count-8": 3.0, "class-count-9": 1.0}
    assert reported_counts(metrics) == {8: 3.0, 9: 1.0}


def test_only_the_split_counts_and_hostile_values_count_as_nothing() -> None:
    assert class_shares({8: 3.0, 9: 1.0}, (8, 9)) == {8: 0.75, 9: 0.25}
    # 1e30 is only a split: the same as 1.0 against 0
    assert class_shares({8: 1e30, 9: 0.0}, (8, 9)) == {8: 1.0, 9: 0.0}
    # negative, NaN, infinite and other classes' counts are ignored
    assert class_shares({8: -5.0, 9: 2.0, 3: 1e9}, (8, 9)) == {8: 0.0, 9: 1.0}
    assert class_shares({8: math.nan, 9: math.inf}, (8, 9)) is None
    assert class_shares({}, (8, 9)) is None


def test_a_class_weight_never_exceeds_the_sites_bounded_weight() -> None:
    # site 0 honest (its records of task (8, 9): 30 and 10), site 1 claims 1e30 records of 8,
    # site 2 reported nothing; classes 0-7 were learned from replay by every site alike
    classes = tuple(range(10))
    rows = class_weight_rows(
        [40.0, 80.0, 20.0], [{8: 30.0, 9: 10.0}, {8: 1e30}, None], classes, (8, 9)
    )
    assert rows[0][:8] == (40.0,) * 8 and rows[0][8:] == (30.0, 10.0)
    assert rows[1][:8] == (80.0,) * 8 and rows[1][8:] == (80.0, 0.0)  # its weight, no more
    assert rows[2][8:] == (10.0, 10.0)  # an even split of its weight
    assert max(max(r) for r in rows) <= 80.0


def test_rows_must_fit_generators_and_classes() -> None:
    with pytest.raises(ValueError):
        class_weight_rows([1.0, 2.0], [None], (0, 1), (0, 1))
