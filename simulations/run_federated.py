#!/usr/bin/env python
"""Kept for old commands: ``python simulations/run_federated.py ARGS`` is ``fedreplay run ARGS``
(:mod:`server.launch.cli`)."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from server.launch.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
