#!/usr/bin/env bash
# The DP benchmark of docs/notebook/results.md, one run after another:
# federated split-MNIST (5 sites, Dirichlet 0.5), DGR with the DP recipe at epsilon 8, 3, 1
# and without DP, the synthetic-solver recipe at epsilon 8, 3, 1; accuracy against
# epsilon; model audits (site 0) of the no-DP, epsilon=1 and epsilon=8 runs side by side;
# the mechanism audit; the time cost of a DP round. Every experiment is a new federation
# (its own site ledgers and server registry under OUT_DIR/state/, bench_federated.sh).
#   FEDREPLAY_DATA_ROOT=/path/to/data bash simulations/bench_dp.sh OUT_DIR
set -uo pipefail
out="${1:-runs/bench-dp}"
mkdir -p "$out"
bash simulations/bench_federated.sh "$out" dgr_dp_eps8 dgr_dp_eps3 dgr_dp_eps1 dgr_dp_off \
  dgr_dp_syn_eps8 dgr_dp_syn_eps3 dgr_dp_syn_eps1
python simulations/plot_privacy_accuracy.py "$out"/fed-mnist-dgr-dp-* --out "$out/privacy_accuracy.png"
bash simulations/bench_audit.sh "$out"
for eps in 1 2 8; do
  fedreplay audit mechanism --epsilon "$eps" --sample-rate 0.5 --steps 20 --canaries 1000000 \
    --out "$out/mechanism_eps$eps.json" > /dev/null
done
python simulations/bench_dp_cost.py --run-config simulations/fed_mnist_dgr_dp_eps8.toml --task 1 \
  | tee "$out/dp_cost.txt"
