"""AttackResult metrics and the loss attack on an overfit and an unrelated model."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch

from common.audit.membership import AttackResult, loss_attack

CPU = torch.device("cpu")


def test_metrics_of_known_score_distributions() -> None:
    perfect = AttackResult("p", np.arange(10, 20), np.arange(10))
    assert perfect.auc == 1.0 and perfect.tpr_at_0_1pct == 1.0 and perfect.tpr_at_1pct == 1.0
    reversed_ = AttackResult("r", np.arange(10), np.arange(10, 20))
    assert reversed_.auc == 0.0 and reversed_.tpr_at_1pct == 0.0
    ties = AttackResult("t", np.zeros(50), np.zeros(50))
    assert ties.auc == pytest.approx(0.5) and ties.tpr_at_1pct == 0.0
    # 1000 non-members: FPR <= 1 % allows 10 false positives above the members' scores.
    rng = np.random.default_rng(0)
    res = AttackResult("g", rng.normal(1.0, 1.0, 1000), rng.normal(0.0, 1.0, 1000))
    assert 0.7 < res.auc < 0.8 and res.tpr_at_0_1pct <= res.tpr_at_1pct < 0.2
    assert res.tpr_at_fpr(1.0) == 1.0


def test_to_dict_is_json_with_monotone_roc() -> None:
    rng = np.random.default_rng(1)
    d = AttackResult("x", rng.normal(1, 1, 300), rng.normal(0, 1, 300)).to_dict()
    back = json.loads(json.dumps(d, allow_nan=False))
    fpr, tpr = np.array(back["roc"]["fpr"]), np.array(back["roc"]["tpr"])
    assert len(fpr) == len(tpr) <= 200 and fpr[0] == 0.0 and fpr[-1] == 1.0 and tpr[-1] == 1.0
    assert (np.diff(fpr) > 0).all() and (np.diff(tpr) >= 0).all()
    assert {"auc", "tpr_at_0.1%_fpr", "tpr_at_1%_fpr", "num_members"} <= back.keys()


def test_rejects_empty_or_non_finite_scores() -> None:
    with pytest.raises(ValueError):
        AttackResult("e", np.zeros(0), np.zeros(3))
    with pytest.raises(ValueError):
        AttackResult("n", np.array([np.nan]), np.zeros(3))


def test_loss_attack_detects_memorisation(problem: Any) -> None:
    res = loss_attack(problem.overfit, problem.members, problem.non_members, device=CPU)
    assert res.name == "loss" and res.auc > 0.8


def test_loss_attack_is_at_chance_on_exchangeable_records(problem: Any) -> None:
    res = loss_attack(problem.unrelated, problem.members, problem.non_members, device=CPU)
    assert 0.35 <= res.auc <= 0.65
    assert not problem.unrelated.training  # mode restored
