"""The server's memory of every site's lifetime epsilon, across runs.

A site whose ledger was deleted or replaced would report a lifetime epsilon (or a count
of lifetime DP steps) lower than one it reported before; the server refuses its update
and quarantines the site: its later updates are refused too (a reset site soon reports
its old epsilon again) until an operator, having looked into it, removes the quarantine
(``fedreplay privacy release-site SITE``). The registry is a JSON file in the
server's state folder (``$FEDREPLAY_SERVER_DIR``, else ``~/.cache/fedreplay/server``),
keyed by site id, written atomically after every round. A simulated federation that is
meant to be independent of earlier ones (a benchmark) uses its own server and site
folders.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from common.fileio import atomic_write_text

SERVER_DIR_ENV = "FEDREPLAY_SERVER_DIR"
REGISTRY = "site_privacy_registry.json"
TOLERANCE = 1e-9


def server_dir() -> Path:
    configured = os.environ.get(SERVER_DIR_ENV, "")
    return Path(configured).expanduser() if configured else Path.home() / ".cache/fedreplay/server"


class SiteRegistry:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path if path is not None else server_dir() / REGISTRY
        self.sites: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            try:
                self.sites = dict(json.loads(self.path.read_text(encoding="utf-8"))["sites"])
            except (ValueError, KeyError) as exc:
                raise RuntimeError(
                    f"the server's site registry {self.path} is unreadable ({exc}); restore it "
                    "or move it away deliberately (sites' earlier epsilons are then unchecked)"
                ) from None

    def check(
        self, site_id: str, *, epsilon: float, steps: float, run: str, server_round: int = 0
    ) -> str | None:
        """Why a report by ``site_id`` is refused (None: accepted, and recorded).

        The same report for the same run and round is accepted again: a site answers a
        round repeated by a resumed server with the reply it sent before."""
        if not (math.isfinite(epsilon) and epsilon >= 0 and math.isfinite(steps) and steps > 0):
            return f"reported lifetime epsilon {epsilon!r} / steps {steps!r} are not valid"
        seen = self.sites.get(site_id)
        if seen is not None and seen.get("quarantined"):
            return (
                f"site {site_id!r} is quarantined since its privacy ledger was found reset "
                f"({seen['quarantined']}); an operator must review it and run "
                f"fedreplay privacy release-site {site_id}"
            )
        if (
            seen is not None
            and not seen.get("quarantined")
            and seen.get("run") == run
            and seen.get("round") == server_round
            and float(seen["epsilon"]) == epsilon
            and float(seen["steps"]) == steps
        ):
            return None  # the same reply again
        # a later round of the same run that spent nothing (generator.kind = "embedding":
        # the task's one release was made in an earlier round) reports the same numbers
        idle = (
            seen is not None
            and seen.get("run") == run
            and server_round > int(seen.get("round", 0))
            and float(seen["epsilon"]) == epsilon
            and float(seen["steps"]) == steps
        )
        if seen is not None and (
            epsilon < float(seen["epsilon"]) - TOLERANCE
            or steps < float(seen["steps"])
            or (steps == float(seen["steps"]) and not idle)
        ):
            reason = (
                f"site {site_id!r} reports lifetime epsilon {epsilon:.4f} after {steps:.0f} DP "
                f"steps, but reported {float(seen['epsilon']):.4f} after {seen['steps']:.0f} "
                f"in run {seen['run']}: its privacy ledger was reset or replaced"
            )
            seen["quarantined"] = reason
            return reason + "; refusing its updates"
        self.sites[site_id] = {
            "epsilon": epsilon,
            "steps": steps,
            "run": run,
            "round": server_round,
            "time": time.time(),
        }
        return None

    def release(self, site_id: str) -> dict[str, Any]:
        """Operator action: lift a site's quarantine (keeps its last accepted report)."""
        seen = self.sites.get(site_id)
        if seen is None or not seen.get("quarantined"):
            raise ValueError(f"site {site_id!r} is not quarantined in {self.path}")
        seen["released"] = {"time": time.time(), "quarantine": seen.pop("quarantined")}
        return seen

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps({"sites": self.sites}, indent=1))
