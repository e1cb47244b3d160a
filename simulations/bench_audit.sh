#!/usr/bin/env bash
# The model audits of docs/notebook/results.md ("Audits of the released models"), side by side:
# the DP recipe's runs without DP, at epsilon = 1 and at epsilon = 8 (made by
# bench_federated.sh into OUT_DIR), each attacked on site 0 (which holds the 200 canaries):
# loss attack and LiRA (4 shadows) on the solver, GAN-Leaks on the generator, canary bounds with their
# reach. Non-members come from the test split (these runs have no audit holdout).
#   FEDREPLAY_DATA_ROOT=/path/to/data bash simulations/bench_audit.sh OUT_DIR
set -uo pipefail
out="${1:-runs/bench-dp}"
for name in off eps1 eps8; do
  run="$(ls -d "$out"/fed-mnist-dgr-dp-"$name"-* 2>/dev/null | tail -1)"
  [ -n "$run" ] || { echo "no run fed-mnist-dgr-dp-$name-* in $out"; continue; }
  echo "=== audit $run ($(date -u +%H:%M:%S))"
  fedreplay audit models "$run" --sites 0 --shadows 4 2> "$out/audit_$name.log" | tail -30
done
