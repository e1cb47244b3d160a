"""LwF, Learning without Forgetting (Li & Hoiem, ECCV 2016), federated.

Site side: on each real batch of the new task the solver's outputs over the old classes
also match the previous global solver's (soft targets at temperature 2, scaled by T^2, as
Li & Hoiem's old-task heads), with weight 1 beside the cross-entropy: the previous solver
stands in for the earlier tasks' data. Only the old classes' logits are distilled: over
all classes the term would push the new classes' logits down on the new task's own
records, against the cross-entropy. Server side: it sends the global
solver at the end of the task before, once per task (a replay payload without generators);
the aggregate is the loop's. Nothing is kept at the site between rounds.

Under DP the distillation term reads the real records: it would belong inside DP-SGD's
clipped per-record loss. That path is not measured, so the configuration refuses it
(common.config's rule for every method of common.methods).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from common.methods.base import Memory, Regulariser

TEMPERATURE = 2.0  # Li & Hoiem 2016
WEIGHT = 1.0  # of the distillation term beside the cross-entropy (Li & Hoiem's lambda_o)


class LwF(Regulariser):
    def __init__(
        self,
        previous: nn.Module | None,
        old_classes: tuple[int, ...],
        memory: Memory,
        *,
        task: int,
    ) -> None:
        self.previous = None if task == 0 else previous
        self.old = list(old_classes)
        if task > 0 and (previous is None or not self.old):
            raise ValueError(f"lwf at task {task} needs the previous global solver and its classes")

    def per_sample(self, x: Tensor, logits: Tensor) -> Tensor | None:
        if self.previous is None:
            return None
        with torch.no_grad():
            soft = torch.softmax(self.previous(x)[:, self.old] / TEMPERATURE, dim=1)
        log_p = F.log_softmax(logits[:, self.old] / TEMPERATURE, dim=1)
        return -WEIGHT * (soft * log_p).sum(1) * TEMPERATURE**2
