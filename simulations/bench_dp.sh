#!/usr/bin/env bash
# The DP benchmark of docs/results.md, one run after another on a quiet machine:
# federated split-MNIST (5 sites, Dirichlet 0.5), DGR with the DP recipe at epsilon 8, 3, 1
# and without DP; accuracy against epsilon; the non-DP and epsilon=8 runs again with an
# audit holdout, and their model audits;
# the time cost of a DP round.
#   FEDREPLAY_DATA_ROOT=/path/to/data bash simulations/bench_dp.sh OUT_DIR
set -uo pipefail
out="${1:-runs/bench-dp}"
mkdir -p "$out"
bash simulations/bench_federated.sh "$out" dgr_dp_eps8 dgr_dp_eps3 dgr_dp_eps1 dgr_dp_off
python simulations/plot_privacy_accuracy.py "$out"/fed-mnist-dgr-dp-* --out "$out/privacy_accuracy.png"
bash simulations/bench_audit.sh "$out/audited"
python simulations/bench_dp_cost.py --run-config simulations/fed_mnist_dgr_dp_eps8.toml --task 1 \
  | tee "$out/dp_cost.txt"
