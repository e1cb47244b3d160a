"""Cost of privacy in time: one DP round and one non-DP round, same settings, one process.

    python simulations/bench_dp_cost.py --run-config simulations/fed_mnist_dgr.toml [--task 1]
        [--iterations N]

Builds site 0 of the configured federation, trains task 0 once without DP (to have a
scholar to replay from), then times two rounds of ``--task`` with replay, without and with
DP-SGD (noise calibrated for the configured run), and prints the times and the ratios. The
first DP round of a task also calibrates that task's noise multiplier (once per site and
task); ``ratio`` is the steady state (second round), ``ratio_first_round`` includes it.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from client.site import Site, SiteIdentity
from common.config import load_config, read_overrides
from common.replay import ReplayPayload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-config", required=True)
    parser.add_argument("--task", type=int, default=1)
    parser.add_argument("--epsilon", type=float, default=8.0)
    parser.add_argument("--iterations", type=int, default=0, help="0 = train.iterations")
    args = parser.parse_args()
    os.environ.setdefault("FEDREPLAY_SITE_DIR", tempfile.mkdtemp(prefix="dp-cost-"))
    overrides = read_overrides(args.run_config)
    if args.iterations:
        overrides["train.iterations"] = args.iterations
    base = load_config(overrides)
    identity = SiteIdentity(0, base.fed.num_sites)
    site = Site(base, identity)
    site.train(0, payload=None, iterations=base.train.iterations, seed=0)
    payload = ReplayPayload(
        args.task,
        {k: v.clone() for k, v in site.solver.state_dict().items()},
        ({k: v.clone() for k, v in site.generator.state_dict().items()},),  # type: ignore[union-attr]
        (1.0,),
        site.stream.classes_seen(args.task - 1),
    )
    times: dict[str, list[float]] = {}
    for name, dp in (("non-dp", False), ("dp", True)):
        cfg = load_config({**overrides, "dp.enabled": dp, "dp.target-epsilon": args.epsilon})
        run = Site(cfg, identity)
        run.learner.solver.load_state_dict(site.solver.state_dict())
        run_id = int(time.time())
        times[name] = []
        for server_round in (1, 2):  # the first DP round of a task also calibrates its noise
            start = time.perf_counter()
            metrics = run.train(
                args.task,
                payload=payload,
                iterations=cfg.train.iterations,
                seed=server_round,
                run_id=run_id,
                server_round=server_round,
            )
            times[name].append(time.perf_counter() - start)
            print(
                f"{name} round {server_round}: {times[name][-1]:.1f} s for "
                f"{cfg.train.iterations} iterations "
                f"({metrics.get('dp-epsilon', 'no')} epsilon after the round)",
                flush=True,
            )
    ratios = [d / n for d, n in zip(times["dp"], times["non-dp"], strict=True)]
    print(
        json.dumps(
            {
                "non-dp_s": times["non-dp"],
                "dp_s": times["dp"],
                "ratio_first_round": ratios[0],
                "ratio": ratios[1],
            }
        )
    )


if __name__ == "__main__":
    main()
