"""What releasing a task's record count costs under DP (the count every reply's size,
sampling rate and FedAvg weight is computed from, common.privacy.session.COUNT_NOISE).

For each target epsilon and task size, the noise multiplier a site calibrates for its
DP-SGD plan with and without the count's Gaussian release (noise COUNT_NOISE records,
sensitivity 1, composed first), and the share of the budget the count takes. Plan: the
DP configs' (simulations/fed_mnist_dgr_dp_eps*.toml): expected batch 512, 3 rounds x (150
solver + 50 VAE) steps per task, delta 1e-5, RDP.

    python simulations/bench_count_release.py   # prints a Markdown table, writes JSON
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from common.privacy.accountant import compute_epsilon
from common.privacy.calibrate import noise_for_budget
from common.privacy.session import COUNT_NOISE

DELTA, BATCH, STEPS = 1e-5, 512, 3 * (150 + 50)


def main() -> int:
    rows = []
    for eps in (1.0, 3.0, 8.0):
        for n in (600, 2400, 12000):
            plan = [(min(1.0, BATCH / n), STEPS)]
            count = [(COUNT_NOISE, 1.0, 1)]
            plain = noise_for_budget(plan, target_epsilon=eps, delta=DELTA, accountant="rdp")
            with_count = noise_for_budget(
                plan, target_epsilon=eps, delta=DELTA, accountant="rdp", prior=count
            )
            alone = compute_epsilon(count, delta=DELTA, kind="rdp")
            rows.append(
                {
                    "epsilon": eps,
                    "records": n,
                    "sigma_without_count": plain,
                    "sigma_with_count": with_count,
                    "sigma_increase_pct": 100 * (with_count / plain - 1),
                    "count_epsilon_alone": alone,
                }
            )
    print("| eps | records of the task | sigma (no count) | sigma (count released) | + | count |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['epsilon']:g} | {r['records']} | {r['sigma_without_count']:.3f} | "
            f"{r['sigma_with_count']:.3f} | {r['sigma_increase_pct']:.1f}% | "
            f"{r['count_epsilon_alone']:.3f} |"
        )
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/results/count_release.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
