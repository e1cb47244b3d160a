#!/usr/bin/env python
"""The hostile-site benchmark of docs/notebook/results.md: one hostile site among five, every attack
of server.robust.attacks, final average accuracy with the default protections and without them.

    python simulations/bench_hostile.py --out runs/bench-hostile
    python simulations/bench_hostile.py --out DIR --set "data.name='mnist'" --seeds 0 1
    python simulations/bench_hostile.py --out DIR --modes default --attacks alie \
        --run-config simulations/fed_mnist_dgr_ensemble.toml     # a benchmark config instead

Runs in one process through the in-process grid (the real ServerApp logic and ClientApp,
sites one after another). "unprotected" is fed.aggregation='fedavg' with robust.update-clip=0
and robust.weight-cap=0 (a plain example-weighted FedAvg, which is what the platform did
before the bounds). Writes OUT/hostile.json and OUT/hostile.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from client.client_app import app as client_app  # noqa: E402
from common.config import load_config, user_overrides  # noqa: E402
from common.results import load_summary  # noqa: E402
from server.robust.attacks import ATTACKS, hostile_hook  # noqa: E402
from server.run.federation import FederatedRun  # noqa: E402
from server.run.finish import RunFailed  # noqa: E402
from server.run.inprocess import InProcessGrid  # noqa: E402

BASE = {
    "data.name": "digits",
    "fed.num-sites": 5,
    "tasks.num-tasks": 2,
    "fed.rounds-per-task": 2,
    "train.iterations": 200,
    "partition.kind": "dirichlet",
    "partition.alpha": 0.5,
    "replay.mode": "ensemble",
    "generator.quality": False,
    "vae.kl-weight": 1.0,  # as measured (docs/notebook/results.md); "auto" gives digits 0.25
}
UNPROTECTED = {"fed.aggregation": "fedavg", "robust.update-clip": 0.0, "robust.weight-cap": 0.0}
HOSTILE_NODE = 1001  # the second site (partition 1); steal-id claims site-0's identity


def one_run(overrides: dict, attack: str | None, out: Path) -> dict:
    # every run is a fresh federation: its own site ledgers and server registry
    os.environ["FEDREPLAY_SITE_DIR"] = tempfile.mkdtemp(dir=out)
    os.environ["FEDREPLAY_SERVER_DIR"] = tempfile.mkdtemp(dir=out)
    cfg = load_config({**overrides, "output-dir": str(out / "runs")})
    hook = hostile_hook(attack, node_id=HOSTILE_NODE) if attack else None
    grid = InProcessGrid(
        client_app, cfg.to_run_config(), num_nodes=cfg.fed.num_sites, reply_hook=hook
    )
    start = time.perf_counter()
    try:
        run = FederatedRun(cfg).run(grid)
    except RunFailed as exc:
        return {"status": "failed", "accuracy": 0.0, "reason": str(exc)}
    summary = load_summary(run.path)
    rounds = run.read_jsonl("rounds.jsonl")
    hostile = str(HOSTILE_NODE)
    return {
        "status": summary["status"],
        "accuracy": summary["final_average_accuracy"],
        "newest": summary["accuracy_matrix"][-1][-1],  # an average hides a newest task pulled down
        "rejected_rounds": sum(1 for r in rounds if hostile in r["failures"]),
        "bounded_rounds": sum(
            1
            for r in rounds
            for s in r["sites"]
            if s["node_id"] == HOSTILE_NODE
            and (s["influence"].get("clipped") or s["influence"].get("weight_capped"))
        ),
        "aggregation": summary.get("aggregation"),
        "wall_s": round(time.perf_counter() - start, 1),
        "run": str(run.path),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/bench-hostile")
    p.add_argument(
        "--run-config",
        help="a benchmark config instead of the digits suite (generator quality not evaluated)",
    )
    p.add_argument("--set", action="append", default=[], help='overrides "k=v k2=v2"')
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--attacks", nargs="+", default=list(ATTACKS))
    p.add_argument(
        "--modes",
        nargs="+",
        choices=("default", "unprotected"),
        default=["default", "unprotected"],
        help="which protections to run (default: both)",
    )
    args = p.parse_args(argv)
    out = Path(args.out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    base: dict[str, object]
    if args.run_config:
        base = {**user_overrides(args.run_config, []), "generator.quality": False}
    else:
        base = dict(BASE)
    base.update(user_overrides(None, args.set))
    rows = []
    for seed in args.seeds:
        for attack in [None, *args.attacks]:
            for mode in args.modes:
                extra = UNPROTECTED if mode == "unprotected" else {}
                result = one_run({**base, **extra, "seed": seed}, attack, out)
                row = {"attack": attack or "honest", "mode": mode, "seed": seed,
                       "sites": base["fed.num-sites"], **result}  # fmt: skip
                rows.append(row)
                print(json.dumps(row), flush=True)
                (out / "hostile.json").write_text(
                    json.dumps({"base": base, "rows": rows}, indent=1)
                )
    (out / "hostile.md").write_text(table(rows))
    print(table(rows))
    return 0


def table(rows: list[dict]) -> str:
    def mean(attack: str, mode: str) -> float | None:
        accs = [r["accuracy"] for r in rows if r["attack"] == attack and r["mode"] == mode]
        return 100 * sum(accs) / len(accs) if accs else None  # None: the mode was not run

    def newest(attack: str, mode: str) -> float | None:
        accs = [r.get("newest", 0.0) for r in rows if r["attack"] == attack and r["mode"] == mode]
        return 100 * sum(accs) / len(accs) if accs else None

    def cells(attack: str, mode: str) -> str:
        acc, honest = mean(attack, mode), mean("honest", mode)
        if acc is None or honest is None:
            return "not run | | "
        new, new_honest = newest(attack, mode), newest("honest", mode)
        drop = f"{new_honest - new:+.1f}" if new is not None and new_honest is not None else ""
        return f"{acc:.1f}% | {honest - acc:+.1f} | {new:.1f}% ({drop})"

    sites = {r.get("sites", 5) for r in rows}
    lines = [
        f"| attack (one site of {'/'.join(map(str, sorted(sites)))}) | default: final acc. | "
        "drop | newest task (drop) | hostile replies rejected / bounded | unprotected FedAvg: "
        "final acc. | drop | newest task (drop) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for attack in dict.fromkeys(r["attack"] for r in rows):
        hit = [r for r in rows if r["attack"] == attack and r["mode"] == "default"]
        rej = sum(r.get("rejected_rounds", 0) for r in hit)
        bnd = sum(r.get("bounded_rounds", 0) for r in hit)
        what = ATTACKS.get(attack, "no attack")
        lines.append(
            f"| {attack}: {what} | {cells(attack, 'default')} | {rej} / {bnd} "
            f"| {cells(attack, 'unprotected')} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
