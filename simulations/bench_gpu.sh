#!/bin/bash
# The two speed benchmarks of docs/notebook/results.md ("Speed") on one machine with a GPU, one after
# the other: single-site DGR (simulations/single_mnist_dgr.toml) and federated ensemble DGR
# (simulations/fed_mnist_dgr_ensemble.toml, 5 sites) through the in-process grid
# (simulations/run_inprocess.py: the real ClientApp and strategy, sites one after another,
# no Ray). device = "auto" picks the GPU.
#
#   FEDREPLAY_DATA_ROOT=/path/to/data bash simulations/bench_gpu.sh OUT [both|single|fed] ["k=v ..."]
#
# OUT gets env.txt (GPU, torch, each stage's exit code and process seconds), single.log,
# fed.log and runs.tar.gz (the run folders without checkpoints). The optional third
# argument is passed to both runs as --set (a smoke run: "train.iterations=20 tasks.num-tasks=2").
# A machine without a package registry: put wheels of flwr, opacus and what they import
# that the machine lacks in .whl/ (docs/notebook/results.md, "On a GPU", lists them); they are
# installed into a private folder first.
set -u
OUTD=$1; WHAT=${2:-both}; SMOKE=${3:-}
PY=${PY:-python3}
RUNS=$(mktemp -d)/gpuruns; STATE=$(dirname "$RUNS")/state
if [ -d .whl ]; then
  SITE=$(dirname "$RUNS")/site
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/*.whl || exit 3
  export PYTHONPATH=$SITE:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
mkdir -p "$OUTD" "$RUNS"
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
  echo "cpus $(nproc)"
  $PY -c "import torch,sys;print(sys.version.split()[0],'torch',torch.__version__,'cuda',torch.cuda.is_available(),torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
} 2>&1 | tee "$OUTD/env.txt"
keep() { tar czf "$OUTD/runs.tar.gz" --exclude='*.pt' --exclude='*.html' -C "$(dirname "$RUNS")" gpuruns; }
if [ "$WHAT" != fed ]; then
  S=$SECONDS
  FEDREPLAY_OUTPUT_DIR=$RUNS/single FEDREPLAY_SITE_DIR=$STATE/single \
    $PY -m server.single --run-config simulations/single_mnist_dgr.toml ${SMOKE:+--set "$SMOKE"} \
    > "$OUTD/single.log" 2>&1
  echo "single rc=$? process_s=$((SECONDS - S))" | tee -a "$OUTD/env.txt"
  tail -4 "$OUTD/single.log"
  keep
fi
if [ "$WHAT" != single ]; then
  S=$SECONDS
  FEDREPLAY_SITE_DIR=$STATE/sites FEDREPLAY_SERVER_DIR=$STATE/server \
    $PY simulations/run_inprocess.py --run-config simulations/fed_mnist_dgr_ensemble.toml \
    --sites 5 --output-dir "$RUNS/fed" ${SMOKE:+--set "$SMOKE"} > "$OUTD/fed.log" 2>&1
  echo "fed rc=$? process_s=$((SECONDS - S))" | tee -a "$OUTD/env.txt"
  tail -4 "$OUTD/fed.log"
  keep
fi
