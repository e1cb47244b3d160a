"""A run's scalars as TensorBoard event files, so ``tensorboard --logdir RUN`` opens it
where researchers already look.

Written once at the end of a run into ``<run>/tensorboard/`` from what the run folder
holds (``rounds.jsonl`` and the accuracy matrix), so a resumed run's file is whole:

- ``round/accuracy`` and ``round/accuracy-task-<j>`` (step: the global round);
- ``round/sites-<status>`` (trained, sat out, failed, refused: :mod:`server.sites.status`),
  ``round/epsilon-max`` (DP runs), ``round/bytes-up`` (all sites);
- ``task/average-accuracy`` and ``task/accuracy-task-<j>`` (step: tasks learned).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

TENSORBOARD = "tensorboard"


def write_scalars(
    run_dir: Path, rounds: Sequence[dict[str, Any]], matrix: Sequence[Sequence[float | None]]
) -> Path:
    """Write the event file; returns its folder."""
    from torch.utils.tensorboard import SummaryWriter

    folder = Path(run_dir) / TENSORBOARD
    writer = SummaryWriter(log_dir=str(folder))
    # the statuses server.sites.status gave (trained, sat out, ...), as the run recorded them
    seen = sorted({s["status"] for e in rounds for s in (e.get("site_status") or {}).values()})
    try:
        for entry in rounds:
            step = int(entry["round"])
            if entry.get("accuracy") is not None:
                writer.add_scalar("round/accuracy", float(entry["accuracy"]), step)
            for j, acc in enumerate(entry.get("accuracies") or []):
                if acc is not None:
                    writer.add_scalar(f"round/accuracy-task-{j + 1}", float(acc), step)
            statuses = Counter(s["status"] for s in (entry.get("site_status") or {}).values())
            for status in seen:
                name = status.replace(" ", "-")
                writer.add_scalar(f"round/sites-{name}", statuses[status], step)
            sites = entry.get("sites") or []
            eps = [s["metrics"]["dp-epsilon"] for s in sites if "dp-epsilon" in s["metrics"]]
            if eps:
                writer.add_scalar("round/epsilon-max", max(eps), step)
            up = sum(s["metrics"].get("bytes-up", 0.0) for s in sites)
            writer.add_scalar("round/bytes-up", up, step)
        for i, row in enumerate(matrix):
            seen = [float(a) for a in row[: i + 1] if a is not None]
            if seen:
                writer.add_scalar("task/average-accuracy", sum(seen) / len(seen), i + 1)
            for j, acc in enumerate(row[: i + 1]):
                if acc is not None:
                    writer.add_scalar(f"task/accuracy-task-{j + 1}", float(acc), i + 1)
    finally:
        writer.close()
    return folder
