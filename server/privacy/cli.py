"""``fedreplay privacy``: sites' lifetime privacy ledgers and the operator's actions on them.

fedreplay privacy show [SITE ...] [--sites-dir D] [--json]
    Every site's lifetime ledger on this machine: budget, lifetime epsilon, each run's own
    share, budget changes.
fedreplay privacy raise-budget SITE --to EPS --reason TEXT [--sites-dir D]
    Raise a site's lifetime budget (recorded in its ledger with who, when and why).
fedreplay privacy release-site SITE [--server-dir D]
    Lift the server's quarantine of a site whose ledger was found reset, after review.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# the ledgers' modules load torch: imported where they are used, so --help answers at once


def site_summary(root: Path, site_id: str) -> dict[str, Any]:
    """One site's lifetime ledger as a report (read under the site's lock)."""
    from common.privacy.ledger import SiteLedger

    with SiteLedger.open(root, site_id, dp=None) as ledger:
        runs = {
            key: {
                "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(run["started"])),
                "composition": run["composition"],
                "target_epsilon": run["target_epsilon"],
                "run_epsilon": ledger.run_epsilon(key),
                "rounds": sum(1 for r in ledger.rows if r["run"] == key),
            }
            for key, run in ledger.state["runs"].items()
        }
        return {
            "site_id": site_id,
            "budget": ledger.budget,
            "epsilon": ledger.epsilon,
            "delta": ledger.delta,
            "accountant": ledger.accountant,
            "steps": ledger.steps,
            "record_partitions": sum(1 for p in ledger.partitions.values() if not p.merged_into),
            "runs": runs,
            "budget_log": ledger.state["budget_log"],
        }


def _print_site(s: dict[str, Any]) -> None:
    print(
        f"{s['site_id']}: epsilon {s['epsilon']:.3f} of lifetime budget {s['budget']:g} "
        f"(delta {s['delta']:.0e}, {s['accountant']}, {s['steps']} DP steps, "
        f"{s['record_partitions']} record partitions)"
    )
    for key, run in s["runs"].items():
        print(
            f"  run {key} ({run['started']}, {run['composition']}, target "
            f"{run['target_epsilon']:g}): {run['rounds']} rounds, this run's share "
            f"{run['run_epsilon']:.3f}"
        )
    for change in s["budget_log"]:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(change["time"]))
        print(
            f"  budget {change['from']:g} -> {change['to']:g} on {when} by {change['by']}: "
            f"{change['reason']}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fedreplay privacy", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    show = sub.add_parser("show", help="sites' lifetime ledgers across runs")
    show.add_argument("sites", nargs="*", help="site ids (default: every site found)")
    show.add_argument("--sites-dir", type=Path, default=None, help="default: $FEDREPLAY_SITE_DIR")
    show.add_argument("--json", action="store_true")
    up = sub.add_parser("raise-budget", help="raise a site's lifetime budget (recorded)")
    up.add_argument("site")
    up.add_argument("--to", type=float, required=True)
    up.add_argument("--reason", required=True)
    up.add_argument("--sites-dir", type=Path, default=None)
    rel = sub.add_parser("release-site", help="lift the server's quarantine of a site")
    rel.add_argument("site")
    rel.add_argument("--server-dir", type=Path, default=None, help="default: $FEDREPLAY_SERVER_DIR")
    args = p.parse_args(argv)
    from common.privacy.ledger import PrivacyStateError
    from common.privacy.operator import raise_budget
    from common.privacy.record_index import INDEX
    from common.privacy.session import privacy_root
    from server.sites.registry import REGISTRY, SiteRegistry, server_dir

    try:
        if args.command == "show":
            root = args.sites_dir / "privacy" if args.sites_dir else privacy_root()
            sites = args.sites or sorted(
                d.name for d in root.glob("*") if d.is_dir() and d.name != INDEX
            )
            if not sites:
                print(f"no site ledgers under {root}", file=sys.stderr)
                return 2
            summaries = [site_summary(root, s) for s in sites]
            if args.json:
                print(json.dumps(summaries, indent=1))
            else:
                for s in summaries:
                    _print_site(s)
            return 0
        if args.command == "raise-budget":
            root = args.sites_dir / "privacy" if args.sites_dir else privacy_root()
            entry = raise_budget(root, args.site, to=args.to, reason=args.reason)
            print(f"{args.site}: budget {entry['from']:g} -> {entry['to']:g} (recorded)")
            return 0
        registry = SiteRegistry((args.server_dir or server_dir()) / REGISTRY)
        registry.release(args.site)
        registry.save()
        print(f"{args.site}: quarantine lifted in {registry.path}")
        return 0
    except (PrivacyStateError, ValueError) as exc:
        print(f"fedreplay privacy: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
