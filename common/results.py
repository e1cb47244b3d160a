"""Run folders and the ``summary.json`` contract.

Every run (single-site or federated) writes into its own folder
``<output_dir>/<experiment>-<YYYYmmdd-HHMMSS>[-N]``: ``config.json``, per-round JSONL
logs, plots and, once it has finished, ``summary.json``. A run succeeded exactly when
``summary.json`` exists and passes :func:`validate_summary`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.config import ExperimentConfig
from common.fileio import atomic_write_text
from common.metrics import AccuracyMatrix

SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.json"

_NUMBER = (int, float)
# key -> (kind, required). kinds: "fraction", "number", "number?", "count", "str", "rows", "list"
SUMMARY_SCHEMA: dict[str, tuple[str, bool]] = {
    "final_average_accuracy": ("fraction", True),
    "average_forgetting": ("number?", True),
    "backward_transfer": ("number?", True),
    "accuracy_matrix": ("rows", True),
    "average_accuracy_per_task": ("list", True),
    "wall_time_s": ("number", True),
    "method": ("str", True),
    "dataset": ("str", True),
    "scenario": ("str", True),
    "num_tasks": ("count", True),
    "experiment": ("str", True),
    "status": ("str", True),
    "rounds": ("count", False),
    "num_sites": ("count", False),
    "bytes_up_per_site_round": ("number", False),
    "bytes_down_per_site_round": ("number", False),
}


def to_jsonable(obj: Any) -> Any:
    """Plain JSON values: NaN/inf -> None, numpy/torch scalars and arrays -> Python."""
    if isinstance(obj, float | np.floating):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, torch.Tensor | np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if obj is None or isinstance(obj, str):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} in JSON: {obj!r}")


def dumps_json(obj: Any, *, indent: int | None = 2) -> str:
    """Strict JSON text of ``obj`` after :func:`to_jsonable` (never emits NaN)."""
    return json.dumps(to_jsonable(obj), indent=indent, allow_nan=False)


def _timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


@dataclasses.dataclass(frozen=True)
class RunFolder:
    """One run's output folder."""

    path: Path

    @classmethod
    def create(cls, output_dir: str | Path, experiment: str) -> RunFolder:
        """Make a fresh ``<output_dir>/<experiment>-<stamp>[-N]`` (never reuses a folder)."""
        parent = Path(output_dir)
        parent.mkdir(parents=True, exist_ok=True)
        base = f"{experiment}-{_timestamp()}"
        for n in range(10_000):
            path = parent / (base if n == 0 else f"{base}-{n}")
            try:
                path.mkdir()
            except FileExistsError:
                continue
            return cls(path)
        raise RuntimeError(f"cannot find a free run folder name for {parent / base}")

    def file(self, name: str) -> Path:
        return self.path / name

    def write_json(self, name: str, obj: Any) -> Path:
        """Write ``obj`` as JSON atomically (temp file + ``os.replace``)."""
        text = dumps_json(obj, indent=2) + "\n"  # fails before touching the disk
        target = self.file(name)
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    def read_json(self, name: str) -> Any:
        return json.loads(self.file(name).read_text(encoding="utf-8"))

    def append_jsonl(self, name: str, record: Mapping[str, Any]) -> Path:
        """Append one JSON line (e.g. a per-round log record)."""
        target = self.file(name)
        with target.open("a", encoding="utf-8") as fh:
            fh.write(dumps_json(record, indent=None) + "\n")
        return target

    def rewrite_jsonl(self, name: str, records: Sequence[Mapping[str, Any]]) -> Path:
        """Replace a JSON-lines file atomically (a resumed run drops rounds it redoes)."""
        text = "".join(dumps_json(r, indent=None) + "\n" for r in records)
        atomic_write_text(self.file(name), text)
        return self.file(name)

    def read_jsonl(self, name: str) -> list[Any]:
        lines = self.file(name).read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def save_config(self, cfg: ExperimentConfig) -> Path:
        return self.write_json(CONFIG_FILE, cfg.to_dict())

    def write_summary(self, summary: Mapping[str, Any]) -> Path:
        """Validate (as stored: numpy/torch scalars converted) and write ``summary.json``."""
        clean = to_jsonable(summary)
        validate_summary(clean, require_completed=False)  # a failed run is recorded too
        return self.write_json(SUMMARY_FILE, clean)


def build_summary(
    *,
    matrix: AccuracyMatrix,
    wall_time_s: float,
    method: str,
    dataset: str,
    scenario: str,
    experiment: str,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``summary.json`` content of a completed run; ``extra`` keys are added last."""
    summary: dict[str, Any] = {
        "experiment": experiment,
        "status": "completed",
        "method": method,
        "dataset": dataset,
        "scenario": scenario,
        "num_tasks": matrix.num_tasks,
        "final_average_accuracy": matrix.final_average_accuracy(),
        "average_forgetting": matrix.forgetting(),
        "backward_transfer": matrix.backward_transfer(),
        "average_accuracy_per_task": matrix.average_accuracy_per_task(),
        "forgetting_per_task": matrix.forgetting_per_task(),
        "accuracy_matrix": matrix.to_list(),
        "wall_time_s": float(wall_time_s),
    }
    summary.update(extra or {})
    return summary


def _is_number(v: Any) -> bool:
    return isinstance(v, _NUMBER) and not isinstance(v, bool)


def _is_cell(v: Any) -> bool:
    return v is None or _is_number(v)


def _problem(kind: str, v: Any) -> str | None:
    if kind == "str":
        return None if isinstance(v, str) and v else "must be a non-empty string"
    if kind == "count":
        ok = isinstance(v, int) and not isinstance(v, bool) and v >= 1
        return None if ok else "must be an integer >= 1"
    if kind == "number?":
        return None if _is_cell(v) else "must be a number or null"
    if kind == "number":
        ok = _is_number(v) and math.isfinite(v) and v >= 0
        return None if ok else "must be a finite number >= 0"
    if kind == "fraction":
        return None if _is_number(v) and 0.0 <= v <= 1.0 else "must be a number in [0, 1]"
    if kind == "list":
        ok = isinstance(v, list) and all(_is_cell(x) for x in v)
        return None if ok else "must be a list of numbers/nulls"
    ok = isinstance(v, list) and all(isinstance(r, list) and all(map(_is_cell, r)) for r in v)
    return None if ok else "must be a list of lists of numbers/nulls"


def validate_summary(d: Mapping[str, Any], *, require_completed: bool = True) -> None:
    """Raise ``ValueError`` naming every missing or ill-typed key of a summary.

    Judged as stored (NaN -> null, numpy/torch scalars -> Python); with
    ``require_completed`` the ``status`` must also be ``"completed"``.
    """
    if not isinstance(d, Mapping):
        raise ValueError(f"summary must be a JSON object, got {type(d).__name__}")
    try:
        d = to_jsonable(d)  # judge the summary as it will be stored
    except TypeError as exc:
        raise ValueError(f"invalid summary: {exc}") from None
    problems = []
    for key, (kind, required) in SUMMARY_SCHEMA.items():
        if key not in d:
            if required:
                problems.append(f"{key}: missing")
            continue
        why = _problem(kind, d[key])
        if why:
            problems.append(f"{key}: {why} (got {d[key]!r})")
    if not problems:
        n, rows = d["num_tasks"], d["accuracy_matrix"]
        if len(rows) != n or any(len(r) != n for r in rows):
            problems.append(f"accuracy_matrix: must be {n} x {n} (num_tasks)")
        if len(d["average_accuracy_per_task"]) != n:
            problems.append(f"average_accuracy_per_task: must have {n} entries (num_tasks)")
        if require_completed and d["status"] != "completed":
            problems.append(f"status: is {d['status']!r}, not 'completed'")
    if problems:
        raise ValueError("invalid summary: " + "; ".join(problems))


def load_summary(run_dir: str | Path, *, require_completed: bool = True) -> dict[str, Any]:
    """Read and validate ``<run_dir>/summary.json`` (``ValueError`` if absent or invalid)."""
    path = Path(run_dir) / SUMMARY_FILE
    if not path.is_file():
        raise ValueError(f"no {SUMMARY_FILE} in {run_dir} (run unfinished or not a run folder)")
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    validate_summary(summary, require_completed=require_completed)
    return dict(summary)


def _pct(v: Any, *, signed: bool = False) -> str:
    if not _is_number(v) or not math.isfinite(v):
        return "n/a"
    return f"{100 * v:+.1f}%" if signed else f"{100 * v:.1f}%"


def _seconds(v: Any) -> str:
    return f"{v:.0f} s" if _is_number(v) and math.isfinite(v) else "? s"


def summary_line(summary: Mapping[str, Any]) -> str:
    """One human line, e.g. ``dgr on mnist: final avg acc 91.2%, forgetting 5.1%, ...``."""
    line = (
        f"{summary.get('method', '?')} on {summary.get('dataset', '?')}: "
        f"final avg acc {_pct(summary.get('final_average_accuracy'))}, "
        f"forgetting {_pct(summary.get('average_forgetting'))}, "
        f"BWT {_pct(summary.get('backward_transfer'), signed=True)}, "
        f"{_seconds(summary.get('wall_time_s'))}"
    )
    if summary.get("num_sites") is not None:
        line += f", {summary['num_sites']} sites"
    if summary.get("rounds") is not None:
        line += f", {summary['rounds']} rounds"
    return line
