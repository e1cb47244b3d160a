"""Accuracy against epsilon: final average accuracy of DP runs (and the non-DP run).

    python simulations/plot_privacy_accuracy.py RUN_DIR [RUN_DIR ...] --out privacy_accuracy.png
    python simulations/plot_privacy_accuracy.py --recorded POINTS.json --out privacy_accuracy.png

Each run's summary.json gives final_average_accuracy and, for DP runs, dp_epsilon (the
largest spent by any site), dp_delta and dp_accountant. Runs are grouped into one line per
recipe: the experiment name without its ``-eps<N>`` suffix (``...-dp-syn-eps1`` is the
synthetic-solver recipe). Non-DP runs are drawn as a horizontal reference line.

``--recorded`` redraws from figures kept in a JSON file instead of run folders (the run
folders of a benchmark are not kept): ``{"title", "delta", "accountant", "recipes": [{"label",
"points": [{"epsilon", "accuracy": [one per seed]}]}], "references": [{"label",
"accuracy"}]}``; each point is the mean over seeds with the range as an error bar.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from common.results import load_summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="*")
    parser.add_argument("--recorded", type=Path, default=None, help="figures in a JSON file")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.recorded is not None:
        plot_recorded(json.loads(args.recorded.read_text()), args.out)
        return
    if not args.runs:
        parser.error("give run folders or --recorded FILE")
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


def plot_recorded(table: dict, out: str) -> None:
    """Mean accuracy over seeds against epsilon per recipe, the seeds' range as error bars."""
    fig = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, recipe in enumerate(table["recipes"]):
        pts = sorted((p["epsilon"], [100 * a for a in p["accuracy"]]) for p in recipe["points"])
        eps = [e for e, _ in pts]
        mean = [sum(a) / len(a) for _, a in pts]
        low = [m - min(a) for m, (_, a) in zip(mean, pts, strict=True)]
        high = [max(a) - m for m, (_, a) in zip(mean, pts, strict=True)]
        ax.errorbar(eps, mean, yerr=[low, high], fmt="o-", capsize=3, label=recipe["label"])
        for e, m in zip(eps, mean, strict=True):
            offset = (8, 4) if i % 2 == 0 else (8, -11)  # neighbours' labels apart
            ax.annotate(f"{m:.1f}", (e, m), textcoords="offset points", xytext=offset)
        shown = ", ".join(f"eps {e:g} -> {m:.1f}%" for e, m in zip(eps, mean, strict=True))
        print(f"{recipe['label']}: {shown}")
    for ref, style in zip(table.get("references", []), ("--", ":", "-."), strict=False):
        ax.axhline(100 * ref["accuracy"], color="grey", linestyle=style, label=ref["label"])
    ax.set_xscale("log")
    ax.set_xticks([1, 3, 8], ["1", "3", "8"])
    ax.set_xticks([], minor=True)
    ax.set_xlabel(f"ε spent (sample-level, per site)\nδ = {table['delta']}, {table['accountant']}")
    ax.set_ylabel("final average accuracy (%)")
    ax.set_ylim(30, 100)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(table["title"], fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(out)


if __name__ == "__main__":
    main()
