#!/usr/bin/env bash
# Single-site split-MNIST, class-incremental, the DGM paper's protocols: A5 (5 tasks of 2
# classes) and A10 (10 tasks of 1 class), one run after another (timings undisturbed):
# DGMa, DGMw, DGR with the VAE and with the conv AC-GAN, fine-tuning (none) and joint.
# Usage: bash simulations/bench_dgm.sh [OUT_DIR] [protocol...]   (protocols: a5 a10)
# Needs MNIST under $FEDREPLAY_DATA_ROOT (or data.download=true). Each run's summary.json
# has the accuracy matrix, wall time and (DGM) the generator's size after every task.
set -uo pipefail
out="$(realpath -m "${1:-runs/bench-dgm}")"; shift || true  # absolute: a relative output-dir goes under ~/fedreplay
protocols=("$@"); [ ${#protocols[@]} -gt 0 ] || protocols=(a5 a10)
mkdir -p "$out"
declare -A runs=(
  [dgma]="single_mnist_dgm.toml|dgm.variant='activations'"
  [dgmw]="single_mnist_dgm.toml|dgm.variant='weights'"
  [dgr-vae]="single_mnist_dgr.toml|"
  [dgr-convgan]="single_mnist_dgr_convgan.toml|"
  [none]="single_mnist_none.toml|"
  [joint]="single_mnist_joint.toml|"
)
for protocol in "${protocols[@]}"; do
  per_task=2; [ "$protocol" = a10 ] && per_task=1
  for name in dgma dgmw dgr-vae dgr-convgan none joint; do
    IFS='|' read -r config extra <<< "${runs[$name]}"
    echo "=== ${protocol} ${name} ($(date -u +%H:%M:%S))"
    fedreplay single --run-config "simulations/${config}" --no-progress \
      --set "output-dir='${out}/${protocol}' experiment='${protocol}-${name}' tasks.classes-per-task=${per_task} ${extra}" \
      > "${out}/${protocol}-${name}.log" 2>&1
    echo "exit $? : $(tail -2 "${out}/${protocol}-${name}.log" | head -1)"
  done
  fedreplay compare "${out}/${protocol}"/* --out "${out}/${protocol}-comparison"
done
