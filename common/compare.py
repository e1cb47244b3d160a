"""Compare finished runs: ``fedreplay compare RUN_DIR [RUN_DIR ...] --out DIR``.

Reads each run folder's ``summary.json``; a folder without a valid, completed summary is
listed as FAILED (never skipped) and makes the exit code 1. Writes ``comparison.md``,
``comparison.json``, ``comparison.png`` and ``comparison.html`` (one self-contained page:
the table, the curves and every run's samples side by side) into ``--out``, prints the
table and, as the last line, the output folder.
"""

from __future__ import annotations

import argparse
import glob
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.run_report import byte_size, comparison_page

# common.results and common.plots load torch and matplotlib: imported where used, so that
# `fedreplay compare --help` answers at once

GLOB_CHARS = "*?["


@dataclass
class RunResult:
    """One row of the comparison: a run folder and its summary, or why it failed."""

    name: str
    path: str
    summary: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


def expand(patterns: Sequence[str]) -> list[tuple[str, str]]:
    """Folders named or matched by glob patterns, in order, without duplicates.

    Returns ``(path, error)`` pairs; a pattern matching nothing yields an error entry.
    """
    found: list[tuple[str, str]] = []
    seen: set[str] = set()
    for pattern in patterns:
        if any(ch in pattern for ch in GLOB_CHARS):
            matches = sorted(m for m in glob.glob(pattern) if Path(m).is_dir())
            if not matches:
                found.append((pattern, "pattern matched no folder"))
        else:
            matches = [pattern]
        for m in matches:
            key = str(Path(m).resolve())
            if key not in seen:
                seen.add(key)
                found.append((m, ""))
    return found


def collect(patterns: Sequence[str]) -> list[RunResult]:
    from common.results import load_summary

    results = []
    for path, error in expand(patterns):
        run = RunResult(name=Path(path).name or path, path=path, error=error)
        if not error:
            try:
                summary = load_summary(path, require_completed=False)
                if summary["status"] != "completed":
                    run.error = f"status is {summary['status']!r}"
                run.summary = summary
            except ValueError as exc:
                run.error = str(exc)
        results.append(run)
    return results


def _pct(v: Any, signed: bool = False) -> str:
    if not isinstance(v, int | float):
        return "n/a"
    return f"{100 * v:+.1f}%" if signed else f"{100 * v:.1f}%"


def _privacy(s: Mapping[str, Any]) -> str:
    """``eps 7.99, delta 1e-05`` (its scope is in each run's report), or ``none``."""
    if s.get("dp_scope") is None:
        return "none"
    eps, delta = s.get("dp_epsilon"), s.get("dp_delta")
    shown = "eps n/a" if eps is None else f"eps {float(eps):.2f}"
    level = "client-level" if str(s["dp_scope"]).startswith("client") else "sample-level"
    return shown + ("" if delta is None else f", delta {float(delta):.0e}") + f" ({level})"


def settings(runs: Sequence[RunResult]) -> dict[str, dict[str, Any]]:
    """run name -> the settings (as a user types them) whose values differ between the
    runs; a run without a readable config.json has none."""
    from common.config import run_config_of

    configs = {}
    for r in runs:
        try:
            configs[r.name] = run_config_of(json.loads((Path(r.path) / "config.json").read_text()))
        except (OSError, ValueError):
            configs[r.name] = {}
    keys = sorted({k for c in configs.values() for k in c})
    ignore = {"output-dir", "experiment"}  # differ by design
    differing = [
        k for k in keys if k not in ignore and len({repr(c.get(k)) for c in configs.values()}) > 1
    ]
    return {name: {k: c.get(k) for k in differing} for name, c in configs.items()}


def table(runs: Sequence[RunResult]) -> str:
    """The markdown comparison table (byte columns only when some run reports them)."""
    with_bytes = any("bytes_up_per_site_round" in r.summary for r in runs)
    diff = settings(runs)
    head = ["run", "status", "method", "dataset", "sites", "final avg acc", "forgetting"]
    head += ["BWT", "privacy", "wall time", "settings that differ"]
    if with_bytes:
        head += ["bytes up/site-round", "bytes down/site-round"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in runs:
        s = r.summary
        if r.ok:
            cells = [
                r.name,
                "ok",
                str(s["method"]),
                str(s["dataset"]),
                str(s.get("num_sites", 1)),
                _pct(s["final_average_accuracy"]),
                _pct(s["average_forgetting"]),
                _pct(s["backward_transfer"], signed=True),
                _privacy(s),
                f"{s['wall_time_s']:.0f} s",
                ", ".join(f"{k}={v}" for k, v in diff.get(r.name, {}).items()) or "-",
            ]
            if with_bytes:
                cells += [byte_size(s.get("bytes_up_per_site_round"))]
                cells += [byte_size(s.get("bytes_down_per_site_round"))]
        else:
            reason = r.error.replace("|", "/").replace("\n", " ")
            cells = [r.name, f"FAILED: {reason}"] + ["-"] * (len(head) - 2)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write(runs: Sequence[RunResult], out: Path) -> str:
    """Write comparison.md/.json/.png into ``out``; returns the markdown table."""
    from common.plots import plot_accuracy_curves
    from common.results import dumps_json

    out.mkdir(parents=True, exist_ok=True)
    text = table(runs)
    failed = sum(not r.ok for r in runs)
    note = f"\n\n{failed} of {len(runs)} runs FAILED.\n" if failed else "\n"
    (out / "comparison.md").write_text("# Run comparison\n\n" + text + note, encoding="utf-8")
    records = [
        {"run": r.name, "path": r.path, "status": "ok" if r.ok else "failed", "error": r.error}
        | ({"summary": r.summary} if r.summary else {})
        for r in runs
    ]
    (out / "comparison.json").write_text(dumps_json(records, indent=2) + "\n", encoding="utf-8")
    curves: dict[str, list[float | None]] = {}
    for r in runs:
        if r.ok:
            label = r.name if r.name not in curves else f"{r.name} ({r.path})"
            curves[label] = r.summary["average_accuracy_per_task"]
    plot_accuracy_curves(curves, out / "comparison.png", title="Average accuracy per task")
    lines = [line.strip("|").split("|") for line in text.splitlines()]
    header, rows = [c.strip() for c in lines[0]], [[c.strip() for c in r] for r in lines[2:]]
    figures = [(out / "comparison.png", "Average accuracy after each task")]
    figures += [(Path(r.path) / "samples.png", f"{r.name}: generated samples") for r in runs]
    (out / "comparison.html").write_text(comparison_page(header, rows, figures), encoding="utf-8")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fedreplay compare", description="Compare the summaries of finished runs."
    )
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders or glob patterns")
    parser.add_argument("--out", required=True, type=Path, help="folder for the comparison")
    args = parser.parse_args(argv)
    runs = collect(args.runs)
    print(write(runs, args.out))
    failed = [r for r in runs if not r.ok]
    if failed:
        print(f"{len(failed)} of {len(runs)} runs FAILED")
    print(args.out)
    return 1 if failed else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
