"""Probe: how the ridge release's noise is split between the per-class sums and the Gram,
on the public proxy (issue 36).

One record moves the sums by <= 1 and the Gram's upper triangle by
sqrt((1 + sum psi^4) / 2) <= sqrt((1 + 1 / (P + 1)) / 2) ~ 0.71 (random Fourier features:
every pair's cos^2 + sin^2 is 1 / (P + 1)). Released as (sums, a x upper(G)), the
sensitivity is sqrt(1 + a^2 (1 + 1 / (P + 1)) / 2): the sums get noise sigma x that, the
Gram that / a. The shipped release before this probe was a = 1 with the bound 1 for the
upper triangle (sensitivity sqrt(2) on every value). This probe fits the ridge solver to
the five tasks' summed statistics (the proxy: digits-mnist, as many records as the
benchmark's sites hold; ScatterNet coefficients, then random Fourier features as the
recipe draws them) plus the noise of ``sites`` releases a task, each at 1 / ``shares`` of
the variance (secure aggregation with distributed noise: 5 sites, shares 3; one site: 1 and
1), over several fresh noise draws, and prints the proxy accuracy per lambda.

    python docs/notebook/probes/probe_gram_noise.py --pairs 400 1200 --draws 3
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

TASKS = [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, nargs="+", default=[400, 1200])
    ap.add_argument("--ridge", type=float, nargs="+", default=[3, 10, 30, 100])
    ap.add_argument("--epsilon", type=float, nargs="+", default=[1, 3, 8])
    ap.add_argument(
        "--weights", type=float, nargs="+", default=[0.5, 1 / math.sqrt(2), 1, math.sqrt(2), 2]
    )
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
        gram = gram_sum(features, fit_z)  # every task's records: the sum of the 5 tasks'
        sums = class_sums(features, fit_z, fit_y, range(10))
        val = features(val_z).double()
        fourth = 1.0 / (pairs + 1)
        for eps in args.epsilon:
            sigma = noise_for_budget([(1.0, 1)], target_epsilon=eps, delta=1e-5, accountant="rdp")
            variants = {"before (sqrt 2)": (sigma * math.sqrt(2), sigma * math.sqrt(2))}
            for a in args.weights:
                sens = math.sqrt(1 + a * a * (1 + fourth) / 2)
                variants[f"a={a:.2f}"] = (sigma * sens, sigma * sens / a)
            for scen, (sites, shares) in scenarios.items():
                releases = len(TASKS) * sites / shares  # noise variances summed
                for name, (std_s, std_g) in variants.items():
                    accs = torch.zeros(len(args.ridge))
                    for _ in range(args.draws):
                        ns = (
                            torch.randn(10, size, dtype=torch.float64) * std_s * math.sqrt(releases)
                        )
                        upper = torch.triu(torch.randn(size, size, dtype=torch.float64))
                        ng = (upper + torch.triu(upper, 1).T) * std_g * math.sqrt(releases)
                        evals, evecs = torch.linalg.eigh(gram + ng)
                        proj = evecs.T @ (sums + ns).T  # (F, 10)
                        for i, lam in enumerate(args.ridge):
                            coef = evecs @ (proj / (evals.clamp(min=0) + lam)[:, None])
                            accs[i] += float(((val @ coef).argmax(1) == val_y).double().mean())
                    accs /= args.draws
                    line = ", ".join(
                        f"{lam:g}: {100 * a:.1f}" for lam, a in zip(args.ridge, accs, strict=True)
                    )
                    print(
                        f"pairs {pairs} eps {eps:g} {scen:15s} {name:16s} "
                        f"(sums {std_s:.2f}, gram {std_g:.2f}) lambda {line}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
