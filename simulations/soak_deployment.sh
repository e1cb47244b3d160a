#!/usr/bin/env bash
# A bounded soak run of the Deployment Engine on loopback: one SuperLink, 5 SuperNodes,
# digits, 3 tasks x 2 rounds; every 5 s the RSS of the SuperLink and of each SuperNode
# process (the long-lived ones; a ClientApp is a fresh process per message) goes to
# OUT/rss.tsv, so one can see whether memory per process stays flat over rounds.
#   bash simulations/soak_deployment.sh OUT_DIR
set -uo pipefail
out="$(realpath -m "${1:-runs/soak}")"; mkdir -p "$out"
port=$((20000 + RANDOM % 20000))
export FLWR_HOME="$out/flwr-home" FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
mkdir -p "$FLWR_HOME"
printf '[superlink]\ndefault = "soak"\n[superlink.soak]\naddress = "127.0.0.1:%s"\ninsecure = true\n' \
  "$port" > "$FLWR_HOME/config.toml"
pids=()
flower-superlink --insecure --host 127.0.0.1 --port "$port" \
  --disable-runtime-dependency-installation > "$out/superlink.log" 2>&1 &
pids+=($!)
sleep 8
for i in 0 1 2 3 4; do
  flower-supernode --insecure --superlink "127.0.0.1:$port" --host 127.0.0.1 \
    --port $((port + 1 + i)) --node-config "partition-id=$i num-partitions=5" \
    > "$out/supernode$i.log" 2>&1 &
  pids+=($!)
done
( printf 'time_s\tsuperlink'; for i in 0 1 2 3 4; do printf '\tsupernode%s' "$i"; done; echo
  start=$(date +%s)
  while sleep 5; do
    printf '%s' $(( $(date +%s) - start ))
    for p in "${pids[@]}"; do printf '\t%s' "$(ps -o rss= -p "$p" 2>/dev/null | tr -d ' ' || echo -)"; done
    echo
  done ) > "$out/rss.tsv" &
sampler=$!
fedreplay run --connection soak --sites 5 --output-dir "$out" \
  --set "tasks.num-tasks=3 fed.rounds-per-task=2 train.iterations=200" --timeout 1200 > "$out/run.log" 2>&1
echo "run exit $?: $(tail -1 "$out/run.log")"
kill "$sampler" "${pids[@]}" 2>/dev/null; wait 2>/dev/null
python - "$out/rss.tsv" <<'EOF'
import sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines()]
head, data = rows[0], [r for r in rows[1:] if all(v.strip().isdigit() for v in r)]
n = len(data)
for j, name in enumerate(head[1:], start=1):
    mb = [int(r[j]) / 1024 for r in data]
    q = max(n // 4, 1)
    first, last = sum(mb[:q]) / q, sum(mb[-q:]) / q
    print(f"{name}: first quarter {first:.0f} MB, last quarter {last:.0f} MB, max {max(mb):.0f} MB")
print(f"{n} samples")
EOF
