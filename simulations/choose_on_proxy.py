#!/usr/bin/env python
"""Choose a recipe's settings on public data no site holds: the whole platform, run on the
proxy.

A DP benchmark's settings (model sizes, learning rates, steps, feature counts) must not be
chosen on the records the sites hold (a choice that depends on private data is itself a
release) nor on the test set (the figure would be optimistic). This script runs a recipe,
unchanged but for ``data.name = "digits-mnist"`` (scikit-learn's digits drawn as MNIST,
as many training records as MNIST: ``common.data.datasets.digits_as_mnist``), once per
combination of the candidate settings given, and chooses the combination with the best
final average accuracy on the proxy's own test split. The rule is fixed before any run:
the largest proxy accuracy; a tie (within 0.5 points) goes to the earlier combination,
so list the cheaper candidates first.

    python simulations/choose_on_proxy.py \\
        --run-config simulations/fed_mnist_dgr_dp_embedding_eps1.toml \\
        --grid embedding.features=500,2000 --grid embedding.fit-steps=1000,3000 \\
        --out docs/results/dp/choose_embedding_eps1.jsonl

Where a grid would be too many runs, ``--candidate "k=v k2=v2"`` (repeatable) lists the
settings to try one by one instead; an empty candidate is the recipe as shipped (list it
first, so a tie keeps it):

    python simulations/choose_on_proxy.py --run-config simulations/fed_mnist_dgr_dp_eps8.toml \\
        --candidate "" --candidate "solver.hidden=400" --candidate "replay.retries=0" \\
        --out docs/results/dp/choose_dpsgd_models_eps8.jsonl

Each run is ``simulations/run_inprocess.py`` in a process of its own (one torch thread;
``--jobs 2`` runs two at a time, so wall times are not reported). One JSON line per run
goes to ``--out`` as it finishes (an interrupted sweep keeps what it measured); the last
lines printed are the choice and the overrides to ship.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROXY = "digits-mnist"
TIE = 0.005  # a smaller gain on the proxy's 359 test images is not a difference


def parse_grid(items: list[str]) -> list[tuple[str, list[str]]]:
    """``key=v1,v2`` -> (key, [v1, v2]); values are TOML as in ``--set``."""
    grid = []
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise SystemExit(f"choose_on_proxy: --grid {item!r} is not key=v1,v2,...")
        grid.append((key.strip(), [v.strip() for v in values.split(",")]))
    return grid


def parse_candidate(text: str) -> dict[str, str]:
    """``"k=v k2=v2"`` -> {k: v, k2: v2}; ``""`` -> {} (the recipe as shipped)."""
    setting = {}
    for item in text.split():
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise SystemExit(f"choose_on_proxy: --candidate {text!r}: {item!r} is not key=value")
        setting[key.strip()] = value.strip()
    return setting


def run_one(config: str, setting: dict[str, str], seed: int, out_dir: Path) -> dict:
    """One in-process federation on the proxy; its final average accuracy."""
    sets = " ".join(f"{k}={v}" for k, v in setting.items())
    cmd = [
        sys.executable,
        str(REPO / "simulations" / "run_inprocess.py"),
        "--run-config",
        config,
        "--set",
        f"data.name='{PROXY}' seed={seed} {sets}",
        "--output-dir",
        str(out_dir),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.strip()]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout)[-2000:]
        return {"setting": setting, "seed": seed, "error": f"exit {proc.returncode}: {tail}"}
    run = Path(lines[-1].strip())
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    return {
        "setting": setting,
        "seed": seed,
        "proxy_final": summary.get("final_average_accuracy"),
        "status": summary.get("status"),
        "run": str(run),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-config", required=True, help="the recipe (TOML) to choose for")
    ap.add_argument("--grid", action="append", default=[], help="key=v1,v2 (repeatable)")
    ap.add_argument(
        "--candidate",
        action="append",
        default=[],
        help='"k=v k2=v2": one setting to try (repeatable; "" = as shipped); not with --grid',
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time")
    ap.add_argument("--out", required=True, help="JSON lines, one per run")
    args = ap.parse_args(argv)
    if args.grid and args.candidate:
        raise SystemExit("choose_on_proxy: give --grid or --candidate, not both")
    grid = parse_grid(args.grid)
    if not grid and not args.candidate:
        raise SystemExit("choose_on_proxy: give --grid key=v1,v2 or --candidate 'k=v ...'")
    keys = [k for k, _ in grid]
    settings = (
        [parse_candidate(c) for c in args.candidate]
        if args.candidate
        else [
            dict(zip(keys, combo, strict=True))
            for combo in itertools.product(*(v for _, v in grid))
        ]
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="choose-on-proxy-"))
    print(
        f"{len(settings)} runs of {args.run_config} on {PROXY}; run folders under {work}",
        flush=True,
    )
    results: list[dict] = []
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [pool.submit(run_one, args.run_config, s, args.seed, work) for s in settings]
        for future in futures:  # in the grid's order, so ties go to the earlier setting
            r = future.result()
            results.append(r)
            with out.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({"config": args.run_config, "proxy": PROXY, **r}) + "\n")
            shown = f"{100 * r['proxy_final']:.1f}%" if "proxy_final" in r else r["error"]
            print(f"{r['setting']}: {shown}", flush=True)
    scored = [
        r for r in results if r.get("proxy_final") is not None and r.get("status") == "completed"
    ]
    if not scored:
        print("choose_on_proxy: no run completed; nothing chosen", file=sys.stderr)
        return 1
    top = max(r["proxy_final"] for r in scored)
    chosen = next(r for r in scored if r["proxy_final"] >= top - TIE)
    print(f"chosen: {chosen['setting']} ({100 * chosen['proxy_final']:.1f}% on the proxy)")
    ship = " ".join(f"{k} = {v}" for k, v in chosen["setting"].items())
    print("ship: " + (ship or "the recipe as it is"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
