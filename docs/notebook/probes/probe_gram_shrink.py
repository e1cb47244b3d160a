"""Probe: the ridge solve's treatment of the noisy Gram, on the public proxy (issue 36).

The server knows the variance of the noise in the summed Gram (public: sigma, the number of
releases, the noise shares), a symmetric Gaussian matrix E whose spectrum fills
[-2 s sqrt(F), 2 s sqrt(F)] (s: the std above the diagonal). The shipped solve clamps the
noisy Gram's negative eigenvalues to 0 and adds lambda. Candidates, post-processing only:
  clamp:    1 / (max(ev, 0) + lambda)
  debias:   eigenvalues above the noise edge mapped back to their spike (ev = l + s^2 F / l:
            l = (ev + sqrt(ev^2 - 4 s^2 F)) / 2), those below it set to 0, then + lambda
  truncate: eigenvalues below the edge set to 0, the others kept, then + lambda
Releases as the platform makes them (the sums' and the Gram diagonal's std sigma sqrt(2),
above the diagonal sigma), the statistics of every task summed, proxy accuracy per lambda
averaged over fresh noise draws.

    python docs/notebook/probes/probe_gram_shrink.py --pairs 1200 --draws 3
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from common.data.datasets import digits_as_mnist  # noqa: E402
from common.models.embedding import RandomFeatures  # noqa: E402
from common.models.scatter import Scattering  # noqa: E402
from common.privacy.calibrate import noise_for_budget  # noqa: E402
from common.privacy.embedding import class_sums, gram_sum  # noqa: E402

TASKS = 5


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, nargs="+", default=[1200])
    ap.add_argument("--ridge", type=float, nargs="+", default=[1, 3, 10, 30, 100])
    ap.add_argument("--epsilon", type=float, nargs="+", default=[1, 3, 8])
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--records", type=int, default=54000)
    args = ap.parse_args()
    fit_x, fit_y, val_x, val_y = digits_as_mnist(args.records, seed=0)
    front = Scattering((1, 28, 28))
    fit_z, val_z = front(fit_x), front(val_x)
    scenarios = {"plain 5 sites": (5, 1), "secure 5 sites": (5, 3), "one site": (1, 1)}
    for pairs in args.pairs:
        features = RandomFeatures(fit_z[0].numel(), pairs, 0.5, seed=424242)
        size = features.size
        gram = gram_sum(features, fit_z)
        sums = class_sums(features, fit_z, fit_y, range(10))
        val = features(val_z).double()
        for eps in args.epsilon:
            sigma = noise_for_budget([(1.0, 1)], target_epsilon=eps, delta=1e-5, accountant="rdp")
            for scen, (sites, shares) in scenarios.items():
                scale = math.sqrt(TASKS * sites / shares)  # the summed releases' noise
                s = sigma * scale  # std above the diagonal
                edge = 2 * s * math.sqrt(size)
                accs = {k: torch.zeros(len(args.ridge)) for k in ("clamp", "debias", "truncate")}
                for _ in range(args.draws):
                    ns = torch.randn(10, size, dtype=torch.float64) * sigma * math.sqrt(2) * scale
                    draw = (
                        torch.randn(size, size, dtype=torch.float64) * sigma * math.sqrt(2) * scale
                    )
                    above = torch.triu(draw, 1) / math.sqrt(2)
                    noise = torch.diag(torch.diagonal(draw)) + above + above.T
                    evals, evecs = torch.linalg.eigh(gram + noise)
                    proj = evecs.T @ (sums + ns).T
                    root = (evals**2 - 4 * s * s * size).clamp(min=0).sqrt()
                    kept = {
                        "clamp": evals.clamp(min=0),
                        "debias": torch.where(evals > edge, (evals + root) / 2, 0.0),
                        "truncate": torch.where(evals > edge, evals, 0.0),
                    }
                    for name, ev in kept.items():
                        for i, lam in enumerate(args.ridge):
                            coef = evecs @ (proj / (ev + lam)[:, None])
                            hit = (val @ coef).argmax(1) == val_y
                            accs[name][i] += float(hit.double().mean()) / args.draws
                for name, acc in accs.items():
                    line = ", ".join(
                        f"{lam:g}: {100 * a:.1f}" for lam, a in zip(args.ridge, acc, strict=True)
                    )
                    print(
                        f"pairs {pairs} eps {eps:g} {scen:15s} {name:9s} (edge {edge:.0f}) "
                        f"lambda {line}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
