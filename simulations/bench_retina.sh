#!/usr/bin/env bash
# RetinaMNIST (28x28 RGB fundus images, 5 diabetic-retinopathy grades), class-incremental
# (tasks {0,1}, {2,3}, {4}), single site and 3 sites (IID), 3 seeds each: DGR with the conv
# VAE and the conv AC-GAN against fine-tuning (none) and joint training. Small data: the
# spread over seeds matters more than one run. Runs one after another.
# Usage: [SEEDS="0 1 2"] bash simulations/bench_retina.sh [OUT_DIR] [sites...]   (default sites: 1 3)
# Needs RetinaMNIST under $FEDREPLAY_DATA_ROOT (or data.download=true).
set -uo pipefail
out="$(realpath -m "${1:-runs/bench-retina}")"; shift || true  # absolute: a relative output-dir goes under ~/fedreplay
sites=("$@"); [ ${#sites[@]} -gt 0 ] || sites=(1 3)
mkdir -p "$out"
common="data.name='retinamnist' tasks.classes-per-task=2 solver.arch='cnn' solver.hidden=64 train.iterations=300 train.batch-size=64 replay.mode='global' eval.samples-per-class=100"
declare -A methods=(
  [dgr-convvae]="method='dgr' generator.kind='vae' generator.arch='conv' generator.hidden=32 generator.latent-dim=32"
  [dgr-convgan]="method='dgr' generator.kind='gan' generator.arch='conv' generator.hidden=32 generator.latent-dim=32"
  [none]="method='none'"
  [joint]="method='joint'"
)
for n in "${sites[@]}"; do
  for seed in ${SEEDS:-0 1 2}; do
    for name in dgr-convvae dgr-convgan none joint; do
      exp="retina-${n}sites-${name}-seed${seed}"
      echo "=== ${exp} ($(date -u +%H:%M:%S))"
      if [ "$n" = 1 ]; then
        fedreplay single --no-progress --set "${common} ${methods[$name]} seed=${seed} experiment='${exp}' output-dir='${out}/${n}sites'" > "${out}/${exp}.log" 2>&1
      else
        FEDREPLAY_SITE_DIR="$out/state/$exp/sites" FEDREPLAY_SERVER_DIR="$out/state/$exp/server" \
        python simulations/run_inprocess.py --set "${common} ${methods[$name]} seed=${seed} experiment='${exp}' fed.num-sites=${n} output-dir='${out}/${n}sites'" > "${out}/${exp}.log" 2>&1
      fi
      echo "exit $? : $(tail -2 "${out}/${exp}.log" | head -1)"
    done
  done
done
