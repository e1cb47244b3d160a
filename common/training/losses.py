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

    ``soft`` (B, K) is zero outside the classes the previous solver knew; those logits
    are left out of the student's softmax too.
    """
    known = soft.sum(0) > 0  # (K,)
    log_p = F.log_softmax(logits[:, known] / temperature, dim=1)
    return -(soft[:, known] * log_p).sum(1) * temperature**2


def replay_loss(logits: Tensor, y: Tensor, soft: Tensor | None, temperature: float) -> Tensor:
    if soft is None:
        return classification_loss(logits, y)
    return distillation_loss(logits, soft, temperature)


def mean_or_zero(values: Tensor) -> Tensor:
    return values.mean() if values.numel() else torch.zeros((), device=values.device)
