"""Per-sample losses shared by the learner and the privacy code."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F


def classification_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy per sample (B,)."""
    return F.cross_entropy(logits, y, reduction="none")


def distillation_loss(logits: Tensor, soft: Tensor, temperature: float = 2.0) -> Tensor:
    """Soft-target cross-entropy per sample (B,), scaled by T^2 (Hinton et al. 2015).

    ``soft`` (B, K) is zero outside the classes the previous solver knew. The student's
    softmax runs over all K classes, so a replayed input is also pushed away from the
    classes learnt since: restricted to the old classes (as this was until 2026-12-03),
    nothing kept the new classes' logits down on old inputs and class-incremental DGM
    fell to 0% on every earlier task.
    """
    log_p = F.log_softmax(logits / temperature, dim=1)
    return -(soft * log_p).sum(1) * temperature**2


def replay_loss(logits: Tensor, y: Tensor, soft: Tensor | None, temperature: float) -> Tensor:
    if soft is None:
        return classification_loss(logits, y)
    return distillation_loss(logits, soft, temperature)


def mean_or_zero(values: Tensor) -> Tensor:
    return values.mean() if values.numel() else torch.zeros((), device=values.device)
