"""One line per instruction at the site: what it trained, sent and spent.

A SuperNode's own log shows only Flower's message ids; a site's IT needs to read, at the
site, what left it. Every train instruction ends with one line (trained / sat out / failed
/ refused, the task, the records count it released, bytes received and sent, epsilon spent
and left), on the SuperNode's console (stderr) and appended to
``<site dir>/logs/<site id>.log``. The line holds only what the reply itself carries, or
less: it is the site's own view, it never leaves the site.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from common.sitestate import check_site_id

log = logging.getLogger("fedreplay.site")
LOGS = "logs"


def _console() -> None:
    """The site's lines reach the SuperNode's console, whatever Flower set up."""
    if not any(getattr(h, "_fedreplay_site", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("fedreplay site | %(message)s"))
        handler._fedreplay_site = True  # type: ignore[attr-defined]
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def _kb(n: float) -> str:
    return f"{n / 1024:.0f} kB"


def train_line(
    site_id: str, server_round: int, task: int, metrics: Mapping[str, float], *, again: bool
) -> str:
    """``site-0 round 3 (task 2): trained, count 1440, received 90 kB, sent 88 kB, ...``"""
    what = "trained" if metrics.get("num-examples", 0.0) > 0 else "sat out (no update sent)"
    parts = [f"{site_id} round {server_round} (task {task + 1}): {what}"]
    if again:
        parts.append("the same reply as before (answered already; nothing trained or spent)")
    if metrics.get("num-examples", 0.0) > 0:
        parts.append(f"record count sent {metrics['num-examples']:.0f}")
    parts.append(
        f"received {_kb(metrics.get('bytes-down', 0.0))}, sent {_kb(metrics.get('bytes-up', 0.0))}"
    )
    if "dp-epsilon" in metrics:
        parts.append(
            f"epsilon {metrics['dp-epsilon']:.3f} spent in the site's lifetime"
            + (f", {metrics['dp-budget-left']:.3f} left" if "dp-budget-left" in metrics else "")
        )
    own = metrics.get("dp-epsilon-own-noise")
    if own is not None and own > metrics.get("dp-epsilon", own) + 1e-9:  # distributed noise
        parts.append(f"epsilon {own:.3f} against a server colluding with every other site")
    return ", ".join(parts)


def write(root: Path, site_id: str, line: str) -> None:
    """The line on the console and in ``<root>/logs/<site id>.log``."""
    _console()
    log.info(line)
    path = root / LOGS / f"{check_site_id(site_id)}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
