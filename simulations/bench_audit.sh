#!/usr/bin/env bash
# The audited runs of docs/results.md ("Audits of the released models"): the DP recipe
# without DP and at epsilon = 8, each with a tenth of every task's training records
# withheld from all sites (audit.holdout = 0.1: the audit's non-members, same distribution
# as the members) and 200 canaries at site 0; then the full model audit of site 0.
#   FEDREPLAY_DATA_ROOT=/path/to/data bash simulations/bench_audit.sh OUT_DIR
set -uo pipefail
out="${1:-runs/bench-audit}"
mkdir -p "$out"
for name in dgr_dp_off dgr_dp_eps8; do
  echo "=== fed_mnist_${name} with audit.holdout=0.1 ($(date -u +%H:%M:%S))"
  python simulations/run_federated.py --run-config "simulations/fed_mnist_${name}.toml" \
    --set "audit.holdout=0.1" --set "experiment='fed-mnist-${name//_/-}-audited'" \
    --output-dir "$out" > "$out/${name}.log" 2>&1
  rc=$?
  run="$(tail -1 "$out/${name}.log")"
  echo "exit $rc : $run"
  if [ "$rc" -eq 0 ]; then
    echo "=== audit $run ($(date -u +%H:%M:%S))"
    fedreplay-audit models "$run" --sites 0 2> "$out/${name}_audit.log" | tail -30
  fi
done
