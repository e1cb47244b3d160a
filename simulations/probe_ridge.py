"""Probe: choose ``solver.arch = "ridge"``'s settings on a validation split, not the test set.

The platform's ridge solver (common/models/ridge.py) is fitted to the sum of the sites'
noised releases: per-class sums of random features and their Gram matrix, one Gaussian
release per site and task at noise multiplier sigma x sqrt(2) (common/privacy/embedding.py).
This script simulates exactly that sum for split-MNIST (5 tasks of 2 classes, the records
of each task spread over ``--sites`` sites at random: the sum does not depend on how, only
the number of noise draws does), on MNIST's first 50,000 training images, and scores the
final solver on the other 10,000 (validation), for every feature count and lambda asked.

    python simulations/probe_ridge.py --pairs 400 800 --ridge 10 30 100 300 --epsilon 1 3 8

Prints one line per (epsilon, pairs): validation accuracy per lambda.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from common.data.datasets import load_dataset  # noqa: E402
from common.models.embedding import RandomFeatures  # noqa: E402
from common.models.ridge import RidgeSolver  # noqa: E402
from common.privacy.calibrate import noise_for_budget  # noqa: E402
from common.privacy.embedding import release  # noqa: E402

TASKS = [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, nargs="+", default=[400])
    ap.add_argument("--ridge", type=float, nargs="+", default=[10, 30, 100, 300])
    ap.add_argument("--epsilon", type=float, nargs="+", default=[1, 3, 8])
    ap.add_argument("--delta", type=float, default=1e-5)
    ap.add_argument("--sites", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    ds = load_dataset("mnist")
    x, y = ds.train.x, ds.train.y
    fit_x, fit_y, val_x, val_y = x[:50000], y[:50000], x[50000:], y[50000:]
    site = torch.randint(0, args.sites, (len(fit_y),), generator=torch.Generator().manual_seed(1))
    for pairs in args.pairs:
        torch.manual_seed(args.seed)
        features = RandomFeatures(784, pairs, math.sqrt(784) / 4, seed=args.seed + 424242)
        for eps in args.epsilon:
            sigma = (  # the ledger's calibration: one release at sampling rate 1 per task
                noise_for_budget([(1.0, 1)], target_epsilon=eps, delta=args.delta, accountant="rdp")
                if eps > 0
                else None
            )
            releases = []  # per task: the sum over sites of their (noised) releases
            for classes in TASKS:
                parts = []
                for s in range(args.sites):
                    rows = (site == s) & torch.isin(fit_y, torch.tensor(classes))
                    r = release(features, fit_x[rows], fit_y[rows], classes, sigma=sigma, gram=True)
                    parts.append(r.double())
                releases.append(torch.stack(parts).sum(0))
            scores = []
            for lam in args.ridge:
                solver = RidgeSolver(features, 10, ridge=lam)
                for classes, total in zip(TASKS, releases, strict=True):
                    solver.absorb(total.float(), classes)
                with torch.no_grad():
                    acc = float((solver(val_x).argmax(1) == val_y).float().mean())
                scores.append(f"lambda {lam:g}: {100 * acc:.1f}%")
            print(f"epsilon {eps:g} (sigma {sigma or 0:.3f}), {pairs} pairs: " + ", ".join(scores))
            sys.stdout.flush()


if __name__ == "__main__":
    main()
