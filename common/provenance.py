"""Where a result came from: fedreplay's version and commit, the versions of the stack,
the date and the machine. Read from package metadata and git, never by importing torch
(``fedreplay --version`` answers at once)."""

from __future__ import annotations

import datetime as dt
import platform
import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path

STACK = ("flwr", "torch", "torchvision", "opacus", "numpy")
REPO = Path(__file__).resolve().parent.parent


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


@cache
def commit() -> str:
    """The git commit of this checkout (``+dirty`` with uncommitted changes), or ``unknown``
    for an installed copy outside git."""
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "") if head else "unknown"


def provenance() -> dict[str, str]:
    """fedreplay's version and commit, the stack's versions, the date (UTC) and machine."""
    return {
        "fedreplay": _version("fedreplay"),
        "commit": commit(),
        **{dist: _version(dist) for dist in STACK},
        "python": platform.python_version(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.node()} ({platform.machine()}, {platform.system()})",
    }


def version_line() -> str:
    """``fedreplay 0.1.0 (commit abc123) with flwr 1.41.0, torch 2.x, ...``"""
    p = provenance()
    stack = ", ".join(f"{d} {p[d]}" for d in STACK)
    return f"fedreplay {p['fedreplay']} (commit {p['commit']}) with {stack}; python {p['python']}"
