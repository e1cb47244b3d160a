"""Where run folders are created: one rule for every way in (``flwr run .``, ``fedreplay
run``, ``fedreplay single``, ``simulations/run_inprocess.py``), so one config writes to one
place whichever started it."""

from __future__ import annotations

import os
from pathlib import Path

OUTPUT_DIR_ENV = "FEDREPLAY_OUTPUT_DIR"
DEFAULT_OUTPUT_BASE = "~/fedreplay"


def resolve_output_dir(configured: str) -> Path:
    """Where a federated run's folders are created, independent of the working directory.

    The ServerApp runs in a process started by the SuperLink, whose working directory is
    wherever that SuperLink was started (for ``flwr run``'s local SuperLink: the directory
    of the *first* ``flwr run`` that started it), so a relative ``output-dir`` is resolved
    against ``$FEDREPLAY_OUTPUT_DIR`` if set (as seen by the ServerApp process), else against
    ``~/fedreplay``. The default ``output-dir = "runs"`` therefore lands in
    ``~/fedreplay/runs``. An absolute ``output-dir`` (``~`` expanded) is used as is.
    """
    path = Path(configured or "runs").expanduser()
    if path.is_absolute():
        return path
    base = os.environ.get(OUTPUT_DIR_ENV, "") or DEFAULT_OUTPUT_BASE
    return (Path(base).expanduser() / path).absolute()


def output_base(cli_dir: str | None, configured: str) -> Path:
    """The folder run folders are created in, absolute: a ``--output-dir`` typed on a
    command line is a shell path (against the current directory); otherwise the config's
    ``output-dir`` by :func:`resolve_output_dir`."""
    if cli_dir:
        return Path(cli_dir).expanduser().absolute()
    return resolve_output_dir(configured)
