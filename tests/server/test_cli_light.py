"""The commands an operator types first answer without loading torch or Flower: the help of
every command, the version, and the deployment tools (keys, a site's policy)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROBE = """
import contextlib, io, sys
from server.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    try:
        main({args!r})
    except SystemExit:
        pass
heavy = sorted(m for m in ("torch", "flwr", "opacus") if m in sys.modules)
print(",".join(heavy))
"""


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["--version"],
        ["pki", "--help"],
        ["site", "--help"],
        ["protocol", "--help"],
        *([tool, "--help"] for tool in ("run", "single", "audit", "privacy", "compare", "report")),
        ["audit", "egress", "--help"],
        ["privacy", "show", "--help"],
    ],
    ids=lambda a: " ".join(a),
)
def test_the_first_commands_load_nothing_heavy(args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(args=args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"fedreplay {' '.join(args)} imported {done.stdout}"
