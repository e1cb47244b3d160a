"""LiRA with 8 shadows of a tiny MLP: strong on an overfit target, chance otherwise."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from common.audit.lira import ShadowStats, lira_attack, lira_attacks, lira_scores, logit_confidence
from common.data.types import Split, concat

CPU = torch.device("cpu")
TrainFn = Callable[[Split, int], nn.Module]


def candidates(problem: Any) -> tuple[Split, np.ndarray]:
    split = concat([problem.members, problem.non_members])
    return split, np.r_[np.ones(len(problem.members)), np.zeros(len(problem.non_members))]


def test_logit_confidence_matches_its_definition() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0, 0.5], [0.0, 0.0, 0.0, 0.0]])
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Identity())
    split = Split.from_tensors(logits.view(2, 1, 1, 4), torch.tensor([0, 3]))
    p = torch.softmax(logits.double(), 1)[[0, 1], [0, 3]].numpy()
    phi = logit_confidence(model, split, device=CPU)
    np.testing.assert_allclose(phi, np.log(p / (1 - p)), rtol=1e-9)


def test_scores_follow_the_gaussians() -> None:
    keep = np.array([[True, False], [True, False], [False, True], [False, True]])
    shadows = np.array([[5.0, -1.0], [7.0, -3.0], [-1.0, 5.0], [-3.0, 7.0]])
    stats = ShadowStats(np.array([6.0, -2.0]), shadows, keep)
    online = lira_scores(stats, online=True)
    assert online[0] > 0 > online[1]  # record 0 looks IN, record 1 looks OUT
    offline = lira_scores(stats, online=False, fixed_variance=False)
    np.testing.assert_allclose(offline, [(6 + 2) / np.sqrt(2), 0.0], atol=1e-12)


def test_lira_detects_memorisation(problem: Any, train_fn: TrainFn) -> None:
    split, member = candidates(problem)
    results = lira_attacks(
        problem.overfit, train_fn, candidates=split, is_member=member, num_shadows=8, device=CPU
    )
    online, offline = results["lira_online"], results["lira_offline"]
    assert online.auc > 0.8 and online.tpr_at_1pct > 0.1
    assert offline.auc > 0.8


def test_lira_is_at_chance_on_exchangeable_records(problem: Any, train_fn: TrainFn) -> None:
    split, member = candidates(problem)
    res = lira_attack(
        problem.unrelated, train_fn, candidates=split, is_member=member, num_shadows=4, device=CPU
    )
    assert res.name == "lira_online" and 0.35 <= res.auc <= 0.65


def test_lira_validates_arguments(problem: Any, train_fn: TrainFn) -> None:
    split, member = candidates(problem)
    with pytest.raises(ValueError):
        lira_attacks(problem.overfit, train_fn, candidates=split, is_member=member[:5], device=CPU)
    with pytest.raises(ValueError):
        lira_attack(
            problem.overfit, train_fn, candidates=split, is_member=member, num_shadows=1, device=CPU
        )
