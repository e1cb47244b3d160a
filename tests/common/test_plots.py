"""Every plot writes a non-empty PNG that PIL can open."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from common.metrics import AccuracyMatrix
from common.plots import (
    plot_accuracy_curves,
    plot_accuracy_matrix,
    plot_epsilon,
    plot_rounds,
    plot_sample_grid,
)


def check_png(path: Path, expected: Path) -> tuple[int, int]:
    assert path == expected and path.is_file() and path.stat().st_size > 1000
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "RGBA"
        width, height = im.size
    assert width > 200 and height > 150
    return width, height


def test_accuracy_matrix(tmp_path: Path) -> None:
    m = AccuracyMatrix(3)
    m.record(0, [0.99])
    m.record(1, [0.6, 0.95])
    out = plot_accuracy_matrix(m, tmp_path / "sub" / "matrix.png", task_names=["0/1", "2/3", "4/5"])
    w, h = check_png(out, tmp_path / "sub" / "matrix.png")
    assert w > h  # square heatmap plus a colourbar
    with pytest.raises(ValueError):
        plot_accuracy_matrix(m, tmp_path / "bad.png", task_names=["a"])


def test_accuracy_curves(tmp_path: Path) -> None:
    curves: dict[str, list[float | None]] = {
        "dgr": [0.99, 0.9, 0.85],
        "none": [0.99, 0.5, None],
        "joint": [0.99],
    }
    check_png(plot_accuracy_curves(curves, tmp_path / "c.png"), tmp_path / "c.png")
    check_png(plot_accuracy_curves({}, tmp_path / "e.png", title="empty"), tmp_path / "e.png")


def test_sample_grid_gray_and_rgb(tmp_path: Path) -> None:
    gray = {f"task {k}": torch.rand(8, 1, 28, 28) for k in range(3)}
    w, h = check_png(plot_sample_grid(gray, tmp_path / "g.png"), tmp_path / "g.png")
    assert w > h
    rgb = {"svhn": torch.rand(5, 3, 32, 32), "mnist": torch.rand(3, 1, 28, 28)}
    check_png(plot_sample_grid(rgb, tmp_path / "rgb.png", title="mixed"), tmp_path / "rgb.png")
    with pytest.raises(ValueError):
        plot_sample_grid({"bad": torch.rand(2, 2, 4, 4)}, tmp_path / "bad.png")


def test_rounds(tmp_path: Path) -> None:
    rounds = list(range(1, 7))
    acc = [0.5, 0.9, 0.6, 0.8, 0.55, 0.7]
    per_task: dict[str, list[float | None]] = {
        "task 0": [0.5, 0.9, 0.4, 0.7, 0.3, 0.5],
        "task 1": [None, None, 0.8, 0.9, 0.6, 0.7],
    }
    out = plot_rounds(rounds, acc, tmp_path / "r.png", task_boundaries=[1, 3, 5], per_task=per_task)
    check_png(out, tmp_path / "r.png")
    with pytest.raises(ValueError):
        plot_rounds([1, 2], [0.5], tmp_path / "bad.png", task_boundaries=[])


def test_epsilon(tmp_path: Path) -> None:
    ledger = {"site 0": ([1, 2, 3], [0.5, 0.9, 1.2]), "site 1": ([1, 2, 3], [0.4, 0.8, 1.1])}
    out = plot_epsilon(ledger, tmp_path / "eps.png", delta=1e-5, accountant="rdp")
    check_png(out, tmp_path / "eps.png")
    per_task = {"site 0": ([1, 2, 3], [0.5, 0.9, 0.6]), "site 1": ([1, 2, 3], [0.4, 0.8, 0.5])}
    both = plot_epsilon(
        ledger, tmp_path / "eps2.png", delta=1e-5, accountant="rdp", per_task=per_task
    )
    check_png(both, tmp_path / "eps2.png")
