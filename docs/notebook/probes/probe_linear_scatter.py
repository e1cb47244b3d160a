"""Probe: the ridge solve on ScatterNet coefficients themselves (or a random projection of
them) instead of on random Fourier features of them, on the public proxy (issue 36).

Releases as the platform makes them (common.privacy.embedding.release: per-class sums and
Gram, noise sigma x sqrt(2), one Gaussian event per task per site; 5 sites, split digits-
mnist as many records as the benchmark's sites hold), on linear features
psi(x) = [u, 1] / sqrt(2), u = P z / |P z|, z the record's coefficients (norm 1) and P a
public Gaussian projection to k dimensions (k >= 3969: none); the server's ridge solve
over the five tasks' summed releases; accuracy on the proxy's test draws per lambda.

    python docs/notebook/probes/probe_linear_scatter.py --k 1000 2000 5000

Measured on 2026-12-07 (docs/notebook/results.md, "Probe: a linear solve on the
coefficients"): far below the random features of the coefficients under DP.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
from torch import Tensor

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from common.data.datasets import digits_as_mnist  # noqa: E402
from common.models.scatter import Scattering  # noqa: E402
from common.privacy.calibrate import noise_for_budget  # noqa: E402
from common.privacy.embedding import release  # noqa: E402

TASKS = [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
LAMBDAS = [1.0, 3.0, 10.0, 30.0, 100.0, 300.0]


class Linear:
    """psi(z) = [P z / |P z|, 1] / sqrt(2): norm 1, as the release's sensitivity assumes."""

    def __init__(self, dim: int, k: int, *, seed: int = 424242) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.p = torch.randn(dim, k, generator=gen) if k < dim else None
        self.size = min(k, dim) + 1

    def __call__(self, z: Tensor) -> Tensor:
        u = z if self.p is None else z @ self.p
        u = u / u.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return torch.cat([u, torch.ones(len(u), 1)], dim=1) / math.sqrt(2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, nargs="+", default=[1000, 2000, 5000])
    args = ap.parse_args()
    fit_x, fit_y, val_x, val_y = digits_as_mnist(54000, seed=0)
    front = Scattering((1, 28, 28))
    fit_z, val_z = front(fit_x), front(val_x)
    site = torch.randint(0, 5, (len(fit_y),), generator=torch.Generator().manual_seed(1))
    for k in args.k:
        features = Linear(fit_z.shape[1], k)
        psi_val = features(val_z).double()
        for eps in (1.0, 3.0, 8.0, 0.0):
            sigma = (
                noise_for_budget([(1.0, 1)], target_epsilon=eps, delta=1e-5, accountant="rdp")
                if eps
                else None
            )
            gram = torch.zeros(features.size, features.size, dtype=torch.float64)
            sums = torch.zeros(10, features.size, dtype=torch.float64)
            for classes in TASKS:
                for s in range(5):
                    rows = (site == s) & torch.isin(fit_y, torch.tensor(classes))
                    r = release(features, fit_z[rows], fit_y[rows], classes, sigma=sigma, gram=True)  # type: ignore[arg-type]
                    gram += r[len(classes) :].double()
                    for i, c in enumerate(classes):
                        sums[c] += r[i].double()
            evals, evecs = torch.linalg.eigh(gram)
            accs = []
            for lam in LAMBDAS:
                coef = evecs @ ((1.0 / (evals.clamp(min=0) + lam))[:, None] * (evecs.T @ sums.T))
                accs.append(float(((psi_val @ coef).argmax(1) == val_y).float().mean()))
            line = " ".join(
                f"lambda {lam:g}: {100 * a:.1f}%" for lam, a in zip(LAMBDAS, accs, strict=True)
            )
            print(f"k {k}, epsilon {eps:g}: {line}", flush=True)


if __name__ == "__main__":
    main()
