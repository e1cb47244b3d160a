#!/usr/bin/env bash
# Federated split-MNIST benchmarks, one after another (timings are not disturbed by each
# other). Usage: bash simulations/bench_federated.sh OUT_DIR [config names...]
# Default list: dgr, dgr_ensemble, dgr_per_task, none, lwf, ewc, exact, joint, dgr_20sites, dgr_dp_eps8,
# dgr_dp_eps3, dgr_dp_eps1, dgr_dp_off (the DP recipe without DP). Each run's folder holds summary.json, rounds.jsonl,
# resources.json (peak memory), plots; a comparison table is written at the end.
# Each experiment simulates a new federation: its sites' lifetime privacy ledgers and the
# server's registry live in OUT_DIR/state/NAME/ (a real site's ledger is never reset).
set -uo pipefail
out="${1:-runs/bench-fed-mnist}"; shift || true
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(dgr dgr_ensemble dgr_per_task none lwf ewc exact joint dgr_20sites dgr_dp_eps8 dgr_dp_eps3 dgr_dp_eps1 dgr_dp_off)
mkdir -p "$out"
for name in "${names[@]}"; do
  sites=5; [ "$name" = dgr_20sites ] && sites=20
  echo "=== fed_mnist_${name} ($(date -u +%H:%M:%S))"
  FEDREPLAY_SITE_DIR="$out/state/$name/sites" FEDREPLAY_SERVER_DIR="$out/state/$name/server" \
  fedreplay run --run-config "simulations/fed_mnist_${name}.toml" \
    --sites "$sites" --output-dir "$out" > "$out/${name}.log" 2>&1
  echo "exit $? : $(tail -1 "$out/${name}.log")"
done
fedreplay compare "$out"/fed-mnist-* --out "$out/comparison"
