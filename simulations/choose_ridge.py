"""Choose ``solver.arch = "ridge"``'s settings on public data that no site holds.

The ridge solver (common/models/ridge.py) is fitted to the sum of the sites' noised
releases: per-class sums of random features and their Gram matrix, one Gaussian release
per site and task at noise multiplier sigma (sensitivity sqrt(2); common/privacy/embedding.py). Its
two settings, the number of random feature pairs (``embedding.features``) and lambda
(``ridge.penalty``), must not be chosen on the records the sites hold (a choice that
depends on private data is itself a release) nor on the test set (the figure would be
optimistic). This script chooses them on a **public proxy**:
scikit-learn's bundled ``digits`` (UCI optical recognition of handwritten digits, 1,797
8 x 8 images by other writers and another scanner; no site of any benchmark holds them),
drawn as MNIST is drawn (``common.data.datasets.digits_as_mnist``, the platform's
``data.name = "digits-mnist"``: 20 x 20 in a 28 x 28 box, rotated, scaled and shifted
afresh per record), with as many records as the benchmark's sites hold in all (the
signal grows with the record count, the noise does not; the count is the benchmark's
design, not a private value). It simulates exactly the summed releases of split-digits
(5 tasks of 2 classes over ``--sites`` sites), fits the solver task after task and scores
it on the proxy's test draws. The kernel width is chosen too (``--bandwidth``), and the
features may be drawn on the images' ScatterNet coefficients instead of their pixels
(``--base scatter``, ``embedding.base``; the coefficients are computed once, as a site would).

    python simulations/choose_ridge.py --pairs 200 400 800 1200 --ridge 3 10 30 100 300 1000 3000
    python simulations/choose_ridge.py --base scatter --bandwidth 0.25 0.5 1 --pairs 400 1200 \
        --ridge 1 3 10 30 100

Prints one line per (epsilon, width, pairs): proxy accuracy per lambda (the mean over
``--draws`` fresh noise draws, with its standard error), then the setting chosen per
epsilon: the simplest (fewer pairs, then the larger lambda, then the width nearest the
data-free rule's) within one standard error of the best (Breiman's one-SE rule; with one
draw: the best to 0.1 point).
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

from common.data.datasets import digits_as_mnist  # noqa: E402
from common.models.embedding import RandomFeatures  # noqa: E402
from common.models.ridge import RidgeSolver  # noqa: E402
from common.models.scatter import Scattering  # noqa: E402
from common.privacy.calibrate import noise_for_budget  # noqa: E402
from common.privacy.embedding import release  # noqa: E402

TASKS = [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]


def scores(
    features: RandomFeatures,
    data: tuple[torch.Tensor, ...],
    *,
    sigma: float | None,
    sites: int,
    lambdas: list[float],
) -> list[float]:
    """Accuracy per lambda of the ridge solver fitted to the simulated summed releases."""
    fit_x, fit_y, val_x, val_y = data
    site = torch.randint(0, sites, (len(fit_y),), generator=torch.Generator().manual_seed(1))
    releases = []  # per task: the sum over sites of their (noised) releases
    for classes in TASKS:
        parts = []
        for s in range(sites):
            rows = (site == s) & torch.isin(fit_y, torch.tensor(classes))
            r = release(features, fit_x[rows], fit_y[rows], classes, sigma=sigma, gram=True)
            parts.append(r.double())
        releases.append(torch.stack(parts).sum(0))
    out = []
    for lam in lambdas:
        solver = RidgeSolver(features, 10, ridge=lam)
        for classes, total in zip(TASKS, releases, strict=True):
            solver.absorb(total.float(), classes)
        with torch.no_grad():
            out.append(float((solver(val_x).argmax(1) == val_y).float().mean()))
    return out


def _simplicity(pairs: int, lam: float, width: float, rule: float) -> tuple[float, ...]:
    """The simpler setting ranks higher: fewer pairs (bytes, time and noise), then the larger
    lambda, then the width nearest the data-free rule's (pixels: 7 = sqrt(784) / 4)."""
    return (-pairs, lam, -abs(math.log(width / rule)))


def choose(
    cells: list[tuple[float, float, int, float, float]], rule: float
) -> tuple[float, float, int, float, float]:
    """The rule, over (accuracy, standard error, pairs, lambda, width): the simplest setting
    whose accuracy is within one standard error of the best's (Breiman's one-SE rule; with
    one draw the error is 0: the largest accuracy to 0.1 point, ties to the simplest)."""
    top = max(cells, key=lambda c: round(c[0], 3))
    floor = round(top[0], 3) - top[1]
    near = [c for c in cells if round(c[0], 3) >= floor - 1e-9]
    return max(near, key=lambda c: _simplicity(c[2], c[3], c[4], rule))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, nargs="+", default=[200, 400, 800])
    ap.add_argument("--ridge", type=float, nargs="+", default=[3, 10, 30, 100, 300, 1000])
    ap.add_argument(
        "--bandwidth",
        type=float,
        nargs="+",
        default=[3.5, 7.0, 14.0],
        help="kernel widths (embedding.bandwidth; 'auto' is sqrt(784) / 4 = 7)",
    )
    ap.add_argument("--epsilon", type=float, nargs="+", default=[1, 3, 8])
    ap.add_argument("--delta", type=float, default=1e-5)
    ap.add_argument("--sites", type=int, default=5)
    ap.add_argument("--records", type=int, default=54000, help="the benchmark's records in all")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--draws",
        type=int,
        default=1,
        help="fresh noise draws per setting, their accuracies averaged (one draw moves a "
        "setting's figure by about a point)",
    )
    ap.add_argument("--base", choices=("pixels", "scatter"), default="pixels")
    args = ap.parse_args(argv)
    data = digits_as_mnist(args.records, seed=args.seed)
    rule = 7.0  # the tie-break's width: pixels' data-free rule; unit-norm coefficients: 1
    if args.base == "scatter":  # the same map every site applies before its features
        front = Scattering((1, 28, 28))
        fit_x, fit_y, val_x, val_y = data
        data = (front(fit_x), fit_y, front(val_x), val_y)
        rule = 1.0
    size = data[0][0].numel()
    cells: dict[float, list[tuple[float, float, int, float, float]]] = {}  # eps: settings
    for width in args.bandwidth:
        for pairs in args.pairs:
            torch.manual_seed(args.seed)
            features = RandomFeatures(size, pairs, width, seed=args.seed + 424242)
            for eps in args.epsilon:
                sigma = (  # the ledger's calibration: one release at sampling rate 1 per task
                    noise_for_budget(
                        [(1.0, 1)], target_epsilon=eps, delta=args.delta, accountant="rdp"
                    )
                    if eps > 0
                    else None
                )
                draws = [
                    scores(features, data, sigma=sigma, sites=args.sites, lambdas=args.ridge)
                    for _ in range(args.draws if sigma is not None else 1)
                ]
                per_lambda = torch.tensor(draws, dtype=torch.float64).T  # (lambdas, draws)
                accs = per_lambda.mean(1).tolist()
                errors = (
                    (per_lambda.std(1) / math.sqrt(len(draws))).tolist()
                    if len(draws) > 1
                    else [0.0] * len(accs)
                )
                line = ", ".join(
                    f"lambda {lam:g}: {100 * a:.1f}%" + (f" +- {100 * e:.1f}" if e else "")
                    for lam, a, e in zip(args.ridge, accs, errors, strict=True)
                )
                print(
                    f"epsilon {eps:g} (sigma {sigma or 0:.3f}), bandwidth {width:g}, "
                    f"{pairs} pairs: {line}",
                    flush=True,
                )
                for lam, a, e in zip(args.ridge, accs, errors, strict=True):
                    cells.setdefault(eps, []).append((a, e, pairs, lam, width))
    for eps, options in sorted(cells.items()):
        a, _, pairs, lam, width = choose(options, rule)
        print(
            f"chosen for epsilon {eps:g} ({args.base}): {pairs} pairs, lambda {lam:g}, "
            f"bandwidth {width:g} "
            f"({100 * a:.1f}% on the proxy)"
        )


if __name__ == "__main__":
    main()
