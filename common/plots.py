"""PNG figures of a run: accuracy matrix, accuracy curves, samples, rounds, privacy.

Uses matplotlib's object API on the Agg canvas (no pyplot, no display, no global state).
Every function writes one PNG, creating parent folders, and returns its path.
Accuracies are passed as fractions in [0, 1] and drawn as percentages.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from common.metrics import AccuracyMatrix

DPI = 120


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", facecolor="white")
    return out


def _percent(values: Sequence[float | None]) -> np.ndarray:
    return np.array([math.nan if v is None else 100.0 * v for v in values], dtype=float)


def _no_data(ax: Axes, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")


def plot_accuracy_matrix(
    matrix: AccuracyMatrix,
    path: str | Path,
    *,
    task_names: list[str] | None = None,
    title: str = "",
) -> Path:
    """Heatmap of ``R[i][j]`` (percent written in each cell; blank = not measured)."""
    n = matrix.num_tasks
    names = task_names or [f"task {j}" for j in range(n)]
    if len(names) != n:
        raise ValueError(f"{len(names)} task names for {n} tasks")
    values = np.array(matrix.rows, dtype=float) * 100.0
    side = min(max(3.0, 0.65 * n + 2.0), 16.0)
    fig = _figure(side + 1.2, side)
    ax = fig.add_subplot()
    cmap = colormaps["viridis"].with_extremes(bad="#eeeeee")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0, vmax=100)
    fontsize = max(6.0, min(10.0, 140.0 / n))
    digits = 1 if n <= 8 else 0
    for i in range(n):
        for j in range(n):
            v = values[i, j]
            if not math.isnan(v):
                color = "black" if v > 60 else "white"
                label = f"{v:.{digits}f}"
                ax.text(j, i, label, ha="center", va="center", color=color, fontsize=fontsize)
    tilt = n > 5 or max((len(name) for name in names), default=0) * n > 40  # labels would touch
    ax.set_xticks(range(n), names, rotation=30 if tilt else 0, ha="right" if tilt else "center")
    ax.set_yticks(range(n), [f"after {name}" for name in names])
    ax.set_xlabel("evaluated on")
    ax.set_ylabel("learned so far")
    ax.set_title(title or "Test accuracy (%) on task j after learning task i")
    fig.colorbar(image, ax=ax, label="accuracy (%)", shrink=0.8)
    return _save(fig, path)


def plot_accuracy_curves(
    curves: Mapping[str, Sequence[float | None]], path: str | Path, *, title: str = ""
) -> Path:
    """Average accuracy over the tasks seen vs. tasks learned, one line per method/run."""
    fig = _figure(7.0, 4.5)
    ax = fig.add_subplot()
    longest = max((len(v) for v in curves.values()), default=0)
    for label, values in curves.items():
        ax.plot(range(1, len(values) + 1), _percent(values), marker="o", label=label)
    if longest:
        ax.set_xticks(range(1, longest + 1))
        ax.set_xlim(0.7, longest + 0.3)
        ax.legend(loc="best", fontsize="small")
    else:
        _no_data(ax)
    ax.set_ylim(0, 102)
    ax.set_xlabel("tasks learned")
    ax.set_ylabel("average accuracy over tasks seen (%)")
    ax.set_title(title or "Average accuracy as tasks arrive")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _row_image(images: Tensor, pad: int = 2) -> np.ndarray:
    """(n, C, H, W) in [0, 1] -> one (H, n*(W+pad)-pad[, 3]) strip with white gaps."""
    x = images.detach().float().cpu().clamp(0, 1).numpy()
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"samples must be (n, 1|3, H, W), got {tuple(x.shape)}")
    n, c, h, w = x.shape
    strip = np.ones((c, h, n * (w + pad) - pad), dtype=np.float32)
    for k in range(n):
        strip[:, :, k * (w + pad) : k * (w + pad) + w] = x[k]
    return strip[0] if c == 1 else strip.transpose(1, 2, 0)


def plot_sample_grid(samples: Mapping[str, Tensor], path: str | Path, *, title: str = "") -> Path:
    """Generated images, one row per task (key = row label, value = (n, C, H, W) in [0, 1])."""
    rows = {name: x for name, x in samples.items() if x.shape[0] > 0}
    cols = max((int(x.shape[0]) for x in rows.values()), default=1)
    fig = _figure(min(1.5 + 0.6 * cols, 18.0), 0.7 + 0.75 * max(len(rows), 1))
    if not rows:
        _no_data(fig.add_subplot(), "no samples")
    for k, (name, x) in enumerate(rows.items()):
        ax = fig.add_subplot(len(rows), 1, k + 1)
        strip = _row_image(x)
        width = strip.shape[1] * cols / x.shape[0]
        ax.imshow(strip, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_xlim(-0.5, width - 0.5)
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_ylabel(name, rotation=0, ha="right", va="center")
    fig.suptitle(title or "Generated samples per task")
    return _save(fig, path)


def plot_rounds(
    rounds: Sequence[int],
    accuracy: Sequence[float | None],
    path: str | Path,
    *,
    task_boundaries: Sequence[int],
    per_task: Mapping[str, Sequence[float | None]] | None = None,
    title: str = "",
) -> Path:
    """Accuracy over federated rounds; a dashed line before the first round of every task
    after the first (``task_boundaries``), labelled with that task's 1-based number."""
    if len(rounds) != len(accuracy):
        raise ValueError(f"{len(rounds)} rounds but {len(accuracy)} accuracies")
    fig = _figure(8.0, 4.5)
    ax = fig.add_subplot()
    for name, values in (per_task or {}).items():
        if len(values) != len(rounds):
            raise ValueError(
                f"per_task[{name!r}] has {len(values)} values for {len(rounds)} rounds"
            )
        ax.plot(rounds, _percent(values), linewidth=1, alpha=0.7, label=name)
    ax.plot(rounds, _percent(accuracy), color="black", linewidth=2.2, marker=".", label="average")
    for k, boundary in enumerate(task_boundaries):
        ax.axvline(boundary - 0.5, color="gray", linestyle="--", linewidth=1)
        ax.text(boundary - 0.5, 101, f" task {k + 2}", fontsize="small", color="gray", va="bottom")
    ax.set_ylim(0, 108)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("federated round")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title or "Accuracy over federated rounds", pad=14)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize="small", ncols=2 if len(per_task or {}) > 4 else 1)
    return _save(fig, path)


def plot_epsilon(
    per_site: Mapping[str, tuple[Sequence[int], Sequence[float]]],
    path: str | Path,
    *,
    delta: float,
    accountant: str,
    title: str = "",
    per_task: Mapping[str, tuple[Sequence[int], Sequence[float]]] | None = None,
) -> Path:
    """Privacy budget spent (epsilon) over rounds, one line per site.

    With ``per_task`` (per-task composition), a second panel shows the epsilon of the
    records of the task being learned, which starts again at every task boundary.
    """
    fig = _figure(12.0 if per_task else 7.0, 4.5)
    axes = fig.subplots(1, 2) if per_task else [fig.add_subplot()]
    panels = [(axes[0], per_site, "site's ε (largest over its tasks)" if per_task else "")]
    if per_task:
        panels.append((axes[1], per_task, "ε of the current task's records"))
    for ax, lines, label in panels:
        for site, (rounds, eps) in lines.items():
            ax.plot(rounds, eps, marker="o" if len(rounds) <= 30 else None, label=str(site))
        if lines:
            ax.legend(fontsize="small")
        else:
            _no_data(ax)
        ax.set_ylim(bottom=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("federated round")
        ax.set_ylabel(f"ε spent (δ = {delta:.3g}, {accountant.upper()} accountant)")
        if label:
            ax.set_title(label, fontsize="medium")
        ax.grid(alpha=0.3)
    fig.suptitle(title or "Privacy budget spent per site")
    return _save(fig, path)
