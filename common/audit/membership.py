"""Membership-inference results and the loss-threshold attack.

Every attack scores each candidate record; a higher score means "more likely a member".
:class:`AttackResult` holds the scores of the true members and non-members and derives
the ROC curve, its AUC and the TPR at fixed low FPRs (the metric Carlini et al., 2022
argue for). The loss attack of Yeom et al. (2018) scores a record by minus its loss.

    result = loss_attack(model, members, non_members, device=torch.device("cpu"))
    result.auc, result.tpr_at_0_1pct, result.tpr_at_1pct, result.to_dict()
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.metrics import auc as area_under_curve
from sklearn.metrics import roc_curve
from torch import nn
from torch.nn import functional as F

from common.data.types import Split
from common.metrics import batched_logits

ROC_POINTS = 200  # points kept by to_dict (log-spaced in FPR)


@dataclass
class AttackResult:
    """Scores of one attack on known members and non-members (higher = member)."""

    name: str
    member_scores: np.ndarray
    non_member_scores: np.ndarray
    auc: float = field(init=False)
    tpr_at_0_1pct: float = field(init=False)  # TPR at FPR <= 0.1 %
    tpr_at_1pct: float = field(init=False)  # TPR at FPR <= 1 %

    def __post_init__(self) -> None:
        self.member_scores = np.asarray(self.member_scores, dtype=np.float64).ravel()
        self.non_member_scores = np.asarray(self.non_member_scores, dtype=np.float64).ravel()
        if self.member_scores.size == 0 or self.non_member_scores.size == 0:
            raise ValueError("an attack needs at least one member and one non-member")
        finite = np.isfinite(self.member_scores).all() and np.isfinite(self.non_member_scores).all()
        if not finite:
            raise ValueError(f"attack {self.name!r} produced non-finite scores")
        fpr, tpr = self.roc()
        self.auc = float(area_under_curve(fpr, tpr))
        self.tpr_at_0_1pct = self.tpr_at_fpr(0.001)
        self.tpr_at_1pct = self.tpr_at_fpr(0.01)

    def roc(self) -> tuple[np.ndarray, np.ndarray]:
        """The full ROC curve ``(fpr, tpr)``, starting at (0, 0) and ending at (1, 1)."""
        labels = np.r_[np.ones(self.member_scores.size), np.zeros(self.non_member_scores.size)]
        scores = np.r_[self.member_scores, self.non_member_scores]
        fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
        return fpr, tpr

    def tpr_at_fpr(self, fpr: float) -> float:
        """Highest TPR of a threshold whose FPR is at most ``fpr`` (0 if none)."""
        fprs, tprs = self.roc()
        ok = fprs <= fpr + 1e-12
        return float(tprs[ok].max()) if ok.any() else 0.0

    @property
    def balanced_accuracy(self) -> float:
        """Best (TPR + 1 - FPR) / 2 over thresholds."""
        fpr, tpr = self.roc()
        return float(((tpr + 1.0 - fpr) / 2.0).max())

    def to_dict(self, roc_points: int = ROC_POINTS) -> dict[str, Any]:
        """JSON-ready summary with a downsampled ROC curve (log-spaced in FPR)."""
        fpr, tpr = self.roc()
        grid = np.unique(np.r_[0.0, np.logspace(-5, 0, roc_points - 1)])
        # TPR at each grid FPR = best TPR reachable without exceeding it (step curve).
        idx = np.searchsorted(fpr, grid + 1e-12, side="right") - 1
        return {
            "name": self.name,
            "num_members": int(self.member_scores.size),
            "num_non_members": int(self.non_member_scores.size),
            "auc": self.auc,
            "tpr_at_0.1%_fpr": self.tpr_at_0_1pct,
            "tpr_at_1%_fpr": self.tpr_at_1pct,
            "balanced_accuracy": self.balanced_accuracy,
            "roc": {"fpr": grid.tolist(), "tpr": tpr[idx].tolist()},
        }


@torch.no_grad()
def per_example_loss(
    model: nn.Module, split: Split, *, device: torch.device, batch_size: int = 1024
) -> np.ndarray:
    """Cross-entropy of every record of ``split`` under ``model`` (eval mode, restored)."""
    out = [
        F.cross_entropy(logits, y, reduction="none").double().cpu()
        for logits, y in batched_logits(model, split, device=device, batch_size=batch_size)
    ]
    return torch.cat(out).numpy() if out else np.zeros(0)


def loss_attack(
    model: nn.Module, members: Split, non_members: Split, *, device: torch.device
) -> AttackResult:
    """Yeom et al. (2018): members have lower loss; score = -loss."""
    return AttackResult(
        "loss",
        -per_example_loss(model, members, device=device),
        -per_example_loss(model, non_members, device=device),
    )
