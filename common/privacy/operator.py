"""Operator actions on sites' lifetime ledgers (``fedreplay privacy``)."""

from __future__ import annotations

import getpass
import json
import time
from pathlib import Path
from typing import Any

from common.privacy.ledger import LEDGER, SiteLedger


def raise_budget(root: Path, site_id: str, *, to: float, reason: str) -> dict[str, Any]:
    """Operator action: raise a site's lifetime budget to ``to``; recorded in the ledger."""
    if not reason.strip():
        raise ValueError("raising a privacy budget needs a reason (it is recorded)")
    with SiteLedger.open(Path(root), site_id, dp=None) as ledger:
        if not to > ledger.budget:
            raise ValueError(f"the budget of {site_id!r} is {ledger.budget}; {to} is no raise")
        entry = {
            "time": time.time(),
            "from": ledger.budget,
            "to": float(to),
            "reason": reason,
            "by": getpass.getuser(),
            "epsilon_spent": ledger.epsilon,
        }
        ledger.state["budget_log"].append(entry)
        ledger.state["budget"] = float(to)
        ledger.dirty = True
    return entry


def read_ledgers(root: Path) -> dict[str, dict[str, Any]]:
    """Every site ledger under ``root`` (read-only, for reports): {site id: state}."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(root).glob(f"*/{LEDGER}")):
        out[path.parent.name] = json.loads(path.read_text(encoding="utf-8"))
    return out
