"""Client-level DP over the federation's lifetime, not per run.

Under client-level DP the server adds the noise, and its guarantee is about a whole site's
participation, which does not end with a run: a site in two runs of the same federation
is in both releases. The server keeps every run's releases in
``<server dir>/client_level_ledger.json`` (``$FEDREPLAY_SERVER_DIR``; a simulation launched
by ``fedreplay run`` has a folder of its own), keyed by run key (a resumed run rewrites its
own entry, never adds a second), and every epsilon it reports is the composition of all of
them: the lifetime ε. The run's own share is reported beside it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from common.fileio import atomic_write_text
from common.privacy.accountant import Event, compute_epsilon

LEDGER = "client_level_ledger.json"


class ClientLevelLedger:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.runs: dict[str, dict[str, Any]] = {}
        if path.is_file():
            try:
                self.runs = dict(json.loads(path.read_text(encoding="utf-8"))["runs"])
            except (ValueError, KeyError, TypeError) as exc:
                raise RuntimeError(
                    f"the server's client-level ledger {path} is unreadable ({exc}); restore "
                    "it from your backups: without it the federation's lifetime epsilon is unknown"
                ) from None

    def prior(self, run_key: str) -> list[Event]:
        """The releases of every other run of this federation."""
        return [
            (float(r["noise_multiplier"]), 1.0, int(r["releases"]))
            for key, r in sorted(self.runs.items())
            if key != run_key and int(r["releases"]) > 0
        ]

    def record(self, run_key: str, *, noise_multiplier: float, releases: int) -> None:
        self.runs[run_key] = {
            "noise_multiplier": noise_multiplier,
            "releases": releases,
            "time": time.time(),
        }
        atomic_write_text(self.path, json.dumps({"runs": self.runs}, indent=1))

    def epsilons(
        self, run_key: str, *, noise_multiplier: float, releases: int, delta: float
    ) -> tuple[list[float], float]:
        """(the lifetime epsilon after each of this run's releases, this run's own)."""
        prior = self.prior(run_key)
        lifetime = [
            compute_epsilon([*prior, (noise_multiplier, 1.0, i + 1)], delta=delta, kind="rdp")
            for i in range(releases)
        ]
        own = (
            compute_epsilon([(noise_multiplier, 1.0, releases)], delta=delta, kind="rdp")
            if releases
            else 0.0
        )
        return lifetime, own
