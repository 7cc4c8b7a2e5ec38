#!/usr/bin/env bash
# --socket-send-buffer trade-off: the same fan-out with the kernel's autotuned send buffer
# and with fixed SO_SNDBUF sizes. Herald on core 0, the loadtest on core 1, loopback only.
#
#   bash benches/send_buffer.sh [SECONDS] [SUBSCRIBERS] [RATE] [SIZE]   # default 10 200 400 16384
set -euo pipefail
SECS=${1:-10}; SUBS=${2:-200}; RATE=${3:-400}; SIZE=${4:-16384}
cd "$(dirname "$0")/.."
cargo build --release -q -p herald -p loadtest --bins
printf "| SO_SNDBUF | delivered/s | MB/s | lost | slow closes | p50 µs | p99 µs | server CPU %% |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n"
for buf in 0 262144 65536 16384; do
  log=$(mktemp)
  taskset -c 0 target/release/herald --listen 127.0.0.1:0 --threads 1 --stats-interval 0 \
    --socket-send-buffer "$buf" >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do grep -q "^listening" "$log" && break; sleep 0.1; done
  port=$(sed -n 's/^listening on ws:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$log" | head -1)
  json=$(taskset -c 1 target/release/loadtest --url "ws://127.0.0.1:$port/sb" --connections "$SUBS" \
    --rate "$RATE" --size "$SIZE" --duration "$SECS" --warmup 2 --json --quiet --server-pid "$pid")
  kill -INT "$pid"; wait "$pid" || true
  slow=$(sed -n 's/.*slow_closes=\([0-9]*\).*/\1/p' "$log" | tail -1)
  python3 - "$buf" "$SIZE" "${slow:-?}" <<PY
import json, sys
j = json.loads('''$json''')
buf, size, slow = sys.argv[1], int(sys.argv[2]), sys.argv[3]
lat = j["latency_us"] or {}
label = "autotuned (0)" if buf == "0" else f"{int(buf)//1024} KiB"
print(f"| {label} | {j['delivered_per_sec']:.0f} | {j['delivered_per_sec']*size/1e6:.0f} | {j['lost']} | {slow} | {lat.get('p50','-')} | {lat.get('p99','-')} | {j['server_cpu_pct']} |")
PY
  rm -f "$log"
done
