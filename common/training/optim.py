"""The optimiser every part of a scholar uses: Adam, fused into one kernel per step.

``torch.optim.Adam`` runs a Python loop over the parameters on CPU unless told otherwise
(its ``foreach``/``fused`` defaults favour CUDA). The fused kernel does the same update in
one call: about 15% of a small MLP's training step on a 2-core CPU (docs/notebook/results.md,
"Speed"). Opacus' DP optimiser wraps it unchanged (it only rewrites ``p.grad``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


def adam(
    params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
    *,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.Adam:
    """Adam with the fused kernel where every parameter is a floating tensor on a device
    that has one (CPU, CUDA); the plain implementation otherwise."""
    groups: list[Any] = list(params)
    tensors: list[torch.Tensor] = [
        p for g in groups for p in (g["params"] if isinstance(g, dict) else [g])
    ]
    fused = bool(tensors) and all(
        p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in tensors
    )
    return torch.optim.Adam(groups, lr=lr, betas=betas, fused=fused or None)
