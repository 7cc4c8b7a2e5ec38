#!/usr/bin/env bash
# Publishes per second through a Redis Cluster of SHARDS masters (no replicas), and the Redis
# CPU each publish costs. One Herald node (--broker redis+cluster://…) takes every publish;
# the loadtest spreads TOPICS topics (one publisher and one subscriber each, raw mode) over
# the node at RATE messages/s in total, open loop. Publishes reach Redis through the
# node's publishing bridge (one pipelined EVALSHA per message, each shard's share sent
# before any answer is read), so the shards work in parallel.
#
#   benches/cluster_shards.sh SHARDS RATE [DURATION] [TOPICS]   e.g. benches/cluster_shards.sh 3 60000 10
#
# Prints the loadtest report, then, from Redis itself: publishes numbered (the publish
# script's calls, INFO commandstats) per second, and Redis CPU time (utime + stime from
# /proc/PID/stat, every shard together) per publish. Needs release builds of herald and
# loadtest, redis-server and redis-cli. HERALD_CORES, REDIS_CORES, LOADTEST_CORES pin them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SHARDS=${1:?SHARDS}
RATE=${2:?RATE}
DURATION=${3:-10}
TOPICS=${4:-48}
BIN=${CARGO_TARGET_DIR:-target}/release
HERALD_CORES=${HERALD_CORES:-0}
REDIS_CORES=${REDIS_CORES:-1}
LOADTEST_CORES=${LOADTEST_CORES:-1}
WORK=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

ports=()
redis_pids=()
for i in $(seq "$SHARDS"); do
  port=$(free_port)
  bus=$(free_port)
  taskset -c "$REDIS_CORES" redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
    --cluster-enabled yes --cluster-port "$bus" --cluster-config-file "$WORK/nodes-$port.conf" \
    --dir "$WORK" >"$WORK/redis-$port.log" 2>&1 &
  pids+=($!)
  redis_pids+=($!)
  ports+=("$port")
done
for port in "${ports[@]}"; do
  for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
done
if [[ "$SHARDS" == 1 ]]; then
  redis-cli -p "${ports[0]}" cluster addslotsrange 0 16383 >/dev/null
else
  redis-cli --cluster create $(for p in "${ports[@]}"; do echo "127.0.0.1:$p"; done) \
    --cluster-replicas 0 --cluster-yes >/dev/null
fi
for port in "${ports[@]}"; do
  for _ in $(seq 200); do
    redis-cli -p "$port" cluster info | grep -q 'cluster_state:ok' && break
    sleep 0.1
  done
done
seeds=$(for p in "${ports[@]}"; do printf '127.0.0.1:%s,' "$p"; done)

taskset -c "$HERALD_CORES" "$BIN/herald" --listen 127.0.0.1:0 --threads 1 \
  --broker "redis+cluster://${seeds%,}" --stats-interval 0 >"$WORK/herald.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q '^broker: up' "$WORK/herald.log" && break; sleep 0.1; done
hport=$(sed -n 's/^listening on ws:\/\/127.0.0.1:\([0-9]*\)$/\1/p' "$WORK/herald.log")
urls=()
for t in $(seq "$TOPICS"); do urls+=(--url "ws://127.0.0.1:$hport/bench-$t"); done

cpu_ticks() {
  local total=0 pid
  for pid in "${redis_pids[@]}"; do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo "$total"
}
publishes() {
  local total=0 port n
  for port in "${ports[@]}"; do
    n=$(redis-cli -p "$port" info commandstats | sed -n 's/^cmdstat_evalsha:calls=\([0-9]*\),.*/\1/p')
    total=$((total + ${n:-0}))
  done
  echo "$total"
}
echo "shards: $SHARDS; topics: $TOPICS; rate: $RATE msg/s; load: $(cut -d' ' -f1-3 /proc/loadavg)"
cpu0=$(cpu_ticks); pub0=$(publishes); t0=$(date +%s.%N)
taskset -c "$LOADTEST_CORES" "$BIN/loadtest" "${urls[@]}" --connections "$TOPICS" \
  --publishers "$TOPICS" --rate "$RATE" --size 64 --warmup 0 --duration "$DURATION" \
  --cores "$LOADTEST_CORES"
cpu1=$(cpu_ticks); pub1=$(publishes); t1=$(date +%s.%N)
hz=$(getconf CLK_TCK)
# Publishes are sent during DURATION only (no warmup): their count over it is the rate.
python3 - "$SHARDS" "$((pub1 - pub0))" "$((cpu1 - cpu0))" "$hz" "$DURATION" "$t0" "$t1" <<'EOF'
import sys
shards, n, ticks, hz, secs = (int(a) for a in sys.argv[1:6])
wall = float(sys.argv[7]) - float(sys.argv[6])
print(f"redis: {n} publishes numbered = {n / secs:,.0f} publishes/s over the {secs} s of sending, "
      f"through {shards} shard(s); Redis CPU {ticks / hz:.2f} s (all shards, {wall:.1f} s wall "
      f"incl. start and drain) = {ticks / hz * 1e6 / max(n, 1):.2f} µs per publish")
EOF
grep -E '^broker: (down|gap)' "$WORK/herald.log" || true
