"""A solver solved in closed form from released statistics (``solver.arch = "ridge"``).

A linear classifier on the run's public random features psi (:mod:`common.models.embedding`):
logits = psi(x) @ W^T + b. With ``generator.kind = "embedding"`` every site's task release
also carries the task's second moment sum_i psi(x_i) psi(x_i)^T, noised
(:mod:`common.privacy.embedding`); the server adds the sites' releases up, task after task,
and solves ridge regression onto one-hot targets,

    W^T = (G+ + lambda I)^-1 S^T,    G = sum over every finished task's releases (F, F),
                                      S = per-class feature sums (K, F),

where G+ is G with its negative eigenvalues (noise) set to 0. Every step is post-processing
of the releases: no gradient step touches a record. It is exact continual learning over
the statistics: adding task t's statistics gives the ridge solution over every task's data
(analytic class-incremental learning): no replay is needed, and an earlier task loses only
by sharing the classifier with more classes and by the noise.

The statistics live in the module's state (buffers ``gram``, ``sums``, ``seen``): the
server's checkpoint and the final model carry them, and the model is evaluable alone.
Classes without statistics get a bias of -1e4 (never predicted).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from common.models.embedding import RandomFeatures

UNSEEN_BIAS = -1.0e4  # the logit of a class no statistics cover


class RidgeSolver(nn.Module):
    """(B, *shape) -> (B, K) logits; fitted by :meth:`fit`, never by gradient steps."""

    w: Tensor
    gram: Tensor
    sums: Tensor
    seen: Tensor

    def __init__(self, features: RandomFeatures, num_classes: int, *, ridge: float) -> None:
        super().__init__()
        if ridge <= 0:
            raise ValueError(f"ridge={ridge!r}: the regularisation must be positive")
        size = features.size
        self.ridge = float(ridge)
        self.register_buffer("w", features.w.clone())  # (D, P), public
        self.front = features.front  # what the features are drawn on (public, fixed)
        self.register_buffer("gram", torch.zeros(size, size))  # finished tasks, (F, F)
        self.register_buffer("sums", torch.zeros(num_classes, size))  # (K, F)
        self.register_buffer("seen", torch.zeros(num_classes))  # 1: the class has sums
        self.head = nn.Linear(size, num_classes)
        nn.init.zeros_(self.head.weight)
        nn.init.constant_(self.head.bias, UNSEEN_BIAS)
        for p in self.parameters():
            p.requires_grad_(False)

    def features(self, x: Tensor) -> Tensor:  # (B, ...) -> (B, F): the run's public map
        return self.random_features()(x)

    def random_features(self) -> RandomFeatures:
        """The run's public feature map, as the releases were computed in."""
        return RandomFeatures.from_weights(self.w, front=self.front)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    @torch.no_grad()
    def fit(self, release: Tensor | None = None, classes: Sequence[int] = ()) -> None:
        """Solve for the head from the finished tasks' statistics plus, when given, the
        current task's summed ``release`` ((len(classes) + F, F): the classes' sums, then
        the Gram matrix); the buffers are left as they are (see :meth:`absorb`)."""
        gram, sums, seen = self._with(release, classes)
        known = seen.nonzero().flatten()
        if len(known) == 0:
            return
        if not (torch.isfinite(gram).all() and torch.isfinite(sums).all()):
            raise ValueError("the ridge statistics hold NaN or infinite values: nothing to solve")
        evals, evecs = torch.linalg.eigh(gram.double())
        # (G+ + lambda I)^-1 S^T in G's eigenbasis, the noise's negative eigenvalues set to 0:
        # every divisor is >= lambda > 0, so any finite statistics have a solution
        inverse = 1.0 / (evals.clamp(min=0) + self.ridge)  # (F,)
        coef = evecs @ (inverse[:, None] * (evecs.T @ sums[known].double().T))  # (F, k)
        weight = torch.zeros_like(self.head.weight)
        weight[known] = coef.T.to(weight.dtype)
        bias = torch.full_like(self.head.bias, UNSEEN_BIAS)
        bias[known] = 0.0
        self.head.weight.copy_(weight)
        self.head.bias.copy_(bias)

    @torch.no_grad()
    def absorb(self, release: Tensor | None, classes: Sequence[int]) -> None:
        """Add a finished task's summed release (None: the task released nothing) to the
        statistics and refit."""
        gram, sums, seen = self._with(release, classes)
        self.gram.copy_(gram)
        self.sums.copy_(sums)
        self.seen.copy_(seen)
        self.fit()

    def _with(self, release: Tensor | None, classes: Sequence[int]) -> tuple[Tensor, ...]:
        gram, sums, seen = self.gram.clone(), self.sums.clone(), self.seen.clone()
        if release is None:
            return gram, sums, seen
        k, size = len(classes), self.gram.shape[0]
        if tuple(release.shape) != (k + size, size):
            raise ValueError(
                f"a ridge release of {k} classes has shape {(k + size, size)}, "
                f"got {tuple(release.shape)}"
            )
        release = release.to(gram.device, gram.dtype)
        gram += release[k:]
        for row, c in enumerate(classes):
            sums[c] += release[row]
            seen[c] = 1.0
        return gram, sums, seen
