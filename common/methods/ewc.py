"""EWC, Elastic Weight Consolidation (Kirkpatrick et al., PNAS 2017), federated.

Site side: the solver's loss gains ``LAMBDA / 2 * sum_i F_i (w_i - w*_i)^2``, where ``w*``
is the previous global solver and ``F`` the diagonal Fisher information of the finished
tasks, summed over them (one penalty anchored at the newest solver: online EWC, Schwarz et
al. 2018, without decay). A site computes each task's Fisher from its own records of that
task, with its solver as trained in its last round of the task (the squared gradients of
the log-likelihood of the record's label, averaged over up to ``FISHER_RECORDS`` records),
and keeps it on its own disk (``memory``): it never leaves the site. A task the site held
no records of (or sat out) has no Fisher there: the penalty holds what the site learnt.
Server side: it sends the previous global solver once per task (a replay payload without
generators); the aggregate is the loop's.

Under DP the Fisher is computed from the records outside DP-SGD and shapes every later
update: not accounted, so the configuration refuses it (common.config's rule for every
method of common.methods).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from common.data.types import Split
from common.methods.base import Memory, Regulariser

LAMBDA = 5000.0  # not tuned (see docs/notebook/results.md, "LwF and EWC")
FISHER_RECORDS = 1000  # records of the task the Fisher is averaged over
FISHER_CHUNK = 250  # records whose gradients are computed at once
PREFIX = "fisher"  # memory keys: fisher.<task>.<parameter>


class EWC(Regulariser):
    def __init__(
        self,
        previous: nn.Module | None,
        old_classes: tuple[int, ...],
        memory: Memory,
        *,
        task: int,
    ) -> None:
        self.task = task
        self.anchor: dict[str, Tensor] = {}
        self.fisher: dict[str, Tensor] = {}
        if task == 0:
            return
        if previous is None:
            raise ValueError(f"ewc at task {task} needs the previous global solver")
        self.anchor = {k: p.detach().clone() for k, p in previous.named_parameters()}
        for key, value in memory.items():  # the finished tasks' Fisher, summed
            _, t, name = key.split(".", 2)
            if int(t) < task and name in self.anchor:
                value = value.to(self.anchor[name].device)  # (once, not every step)
                self.fisher[name] = self.fisher[name] + value if name in self.fisher else value

    def on_weights(self, solver: nn.Module) -> Tensor | None:
        if not self.fisher:
            return None
        terms = [
            (self.fisher[name] * (p - self.anchor[name]) ** 2).sum()
            for name, p in solver.named_parameters()
            if name in self.fisher
        ]
        return LAMBDA / 2 * torch.stack(terms).sum()

    def remember(self, solver: nn.Module, real: Split, memory: Memory) -> None:
        """This task's Fisher from the site's records (replacing an earlier round's): each
        record's gradient at once (torch.func), in chunks of ``FISHER_CHUNK``."""
        n = min(len(real), FISHER_RECORDS)
        if n == 0:
            return
        params = {k: p.detach() for k, p in solver.named_parameters() if p.requires_grad}
        buffers = {k: b.detach() for k, b in solver.named_buffers()}
        device = next(solver.parameters()).device
        was_training = solver.training
        solver.eval()

        def loss(p: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
            logits = functional_call(solver, (p, buffers), (x.unsqueeze(0),))
            return F.cross_entropy(logits, y.unsqueeze(0))

        per_record = vmap(grad(loss), in_dims=(None, 0, 0))
        sums = {k: torch.zeros_like(p) for k, p in params.items()}
        chosen = torch.randperm(len(real), generator=torch.Generator().manual_seed(self.task))[:n]
        for idx in chosen.split(FISHER_CHUNK):
            grads = per_record(params, real.x[idx].to(device), real.y[idx].to(device))
            for k, g in grads.items():
                sums[k] += (g**2).sum(0)
        solver.train(was_training)
        for k, s in sums.items():
            memory[f"{PREFIX}.{self.task}.{k}"] = (s / n).cpu()
