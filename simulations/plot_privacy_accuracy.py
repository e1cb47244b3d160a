"""Accuracy against epsilon: final average accuracy of DP runs (and the non-DP run).

    python simulations/plot_privacy_accuracy.py RUN_DIR [RUN_DIR ...] --out privacy_accuracy.png

Each run's summary.json gives final_average_accuracy and, for DP runs, dp_epsilon (the
largest spent by any site), dp_delta and dp_accountant. Runs are grouped into one line per
recipe: the experiment name without its ``-eps<N>`` suffix (``...-dp-syn-eps1`` is the
synthetic-solver recipe). Non-DP runs are drawn as a horizontal reference line.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from common.results import load_summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    points, reference = [], None
    for run in args.runs:
        s = load_summary(run)
        if s.get("dp_epsilon") is None:
            reference = s["final_average_accuracy"]
        else:
            points.append(
                (
                    s["dp_epsilon"],
                    s["final_average_accuracy"],
                    s["dp_delta"],
                    f"{s['dp_accountant']}, {s.get('dp_composition', 'sequential')} composition",
                    Path(run).name,
                )
            )
    points.sort()
    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    recipes: dict[str, list[tuple[float, float]]] = {}
    for eps, acc, _, _, name in points:
        recipe = re.sub(r"-eps[0-9.]+-\d{8}-\d{6}$", "", name)
        recipes.setdefault(recipe, []).append((eps, acc))
    for recipe, xy in recipes.items():
        label = (
            "mean embedding (one release per task)"
            if "-embedding" in recipe
            else "synthetic solver (DP VAE only)"
            if "-syn" in recipe
            else "DP recipe (real data)"
        )
        ax.plot([x for x, _ in xy], [100 * y for _, y in xy], "o-", label=label)
        for eps, acc in xy:
            ax.annotate(
                f"{100 * acc:.1f}%",
                (eps, 100 * acc),
                textcoords="offset points",
                xytext=(0, 6),
                ha="center",
            )
    if reference is not None:
        ax.axhline(
            100 * reference, color="grey", linestyle="--", label=f"no DP ({100 * reference:.1f}%)"
        )
    delta = points[0][2] if points else None
    accountant = points[0][3] if points else "-"
    ax.set_xlabel(f"ε spent (sample-level, per site)\nδ = {delta}, {accountant}")
    ax.set_ylabel("final average accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend()
    ax.set_title("federated split-MNIST: accuracy vs privacy")
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    for eps, acc, _, _, name in points:
        print(f"{name}: epsilon {eps:.2f} -> {100 * acc:.1f}%")
    if reference is not None:
        print(f"no DP: {100 * reference:.1f}%")
    print(args.out)


if __name__ == "__main__":
    main()
