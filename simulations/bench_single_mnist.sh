#!/usr/bin/env bash
# Single-site split-MNIST class-incremental benchmark: dgr, none, exact, joint, then a
# comparison table and plot. Usage: bash simulations/bench_single_mnist.sh [OUT_DIR]
# Needs MNIST under $FEDREPLAY_DATA_ROOT (or data.download=true).
set -euo pipefail
out="$(realpath -m "${1:-runs/bench-single-mnist}")"  # absolute: a relative output-dir goes under ~/fedreplay
mkdir -p "$out"
for method in dgr none exact joint; do
  /usr/bin/time -v fedreplay single --run-config "simulations/single_mnist_${method}.toml" \
    --set "output-dir='${out}'" --no-progress 2> "${out}/${method}.time.log" | tee "${out}/${method}.log"
done
fedreplay compare "${out}"/single-mnist-* --out "${out}/comparison"
