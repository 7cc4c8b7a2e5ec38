#!/usr/bin/env bash
# 100,000 subscribers over a cluster of six Herald nodes and one Redis, on one machine
# (one process holds at most about 19.9 k sockets here). One topic, one publisher on the
# first node, the loadtest spreading subscribers over the six nodes (--cluster: every
# subscriber must get every message, whichever node it is on).
#
#   benches/cluster_100k.sh RATE [DURATION]      e.g. benches/cluster_100k.sh 1 30
#
# Needs release builds of herald and loadtest (cargo build --release --workspace) and
# redis-server. Prints the loadtest report, then each node's peak RSS and the kernel's
# memory (slab and TCP buffers) per connection at the peak.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RATE=${1:-1}
DURATION=${2:-30}
BIN=${CARGO_TARGET_DIR:-target}/release
HERALD_CORES=${HERALD_CORES:-0}
LOADTEST_CORES=${LOADTEST_CORES:-1}
WORK=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

RPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
taskset -c "$HERALD_CORES" redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no \
  >"$WORK/redis.log" 2>&1 &
pids+=($!)
sleep 0.5

urls=()
herald_pids=()
for i in 1 2 3 4 5 6; do
  # One worker per node, pinned when the nodes share one core (the default).
  pin=()
  [[ "$HERALD_CORES" =~ ^[0-9]+$ ]] && pin=(--cores "$HERALD_CORES")
  taskset -c "$HERALD_CORES" "$BIN/herald" --listen 127.0.0.1:0 --threads 1 "${pin[@]}" \
    --broker "redis://127.0.0.1:$RPORT" --stats-interval 0 >"$WORK/node$i.log" 2>&1 &
  pids+=($!)
  herald_pids+=($!)
done
for i in 1 2 3 4 5 6; do
  for _ in $(seq 100); do grep -q '^broker: up' "$WORK/node$i.log" && break; sleep 0.1; done
  port=$(sed -n 's/^listening on ws:\/\/127.0.0.1:\([0-9]*\)$/\1/p' "$WORK/node$i.log")
  urls+=(--url "ws://127.0.0.1:$port/storm")
done

rss_kb() {
  local total=0 r
  for pid in "${herald_pids[@]}"; do
    r=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    total=$((total + r))
  done
  echo "$total"
}
slab_kb() { awk '/^Slab:/ {print $2}' /proc/meminfo; }
tcp_pages() { awk '/^TCP:/ {for (i=1;i<=NF;i++) if ($i=="mem") print $(i+1)}' /proc/net/sockstat; }
slab0=$(slab_kb); tcp0=$(tcp_pages); rss0=$(rss_kb)

# Sample every node's RSS and the kernel's memory while the run goes on; keep the peaks.
(
  while true; do
    rss=$(rss_kb)
    conns=$(awk '/^TCP:/ {print $3}' /proc/net/sockstat)
    echo "$rss $(slab_kb) $(tcp_pages) $conns"
    sleep 1
  done
) >"$WORK/samples" &
sampler=$!
pids+=($sampler)

taskset -c "$LOADTEST_CORES" "$BIN/loadtest" "${urls[@]}" --cluster --connections "${CONNS:-100000}" \
  --publishers 1 --rate "$RATE" --size 64 --duration "$DURATION" --cores "$LOADTEST_CORES"

kill "$sampler" 2>/dev/null || true
sort -n -k4 "$WORK/samples" | tail -1 | {
  read -r rss slab tcp inuse
  echo "peak: TCP sockets in use $inuse; herald RSS, six nodes together: $((rss0 / 1024)) MiB before, $((rss / 1024)) MiB at the peak: $(((rss - rss0) * 1024 / ${CONNS:-100000})) B per subscriber"
  echo "kernel: slab +$(((slab - slab0) / 1024)) MiB, TCP buffers +$(((tcp - tcp0) * 4 / 1024)) MiB, over ${CONNS:-100000} connections (both ends on this machine): $(((slab - slab0) * 1024 / ${CONNS:-100000})) B slab + $(((tcp - tcp0) * 4096 / ${CONNS:-100000})) B buffers per connection"
}
for i in 1 2 3 4 5 6; do grep -E '^broker: (down|gap)' "$WORK/node$i.log" || true; done
