#!/usr/bin/env bash
# Soak: one herald (2 workers, history) under steady subscribers plus continuous churn, for
# real time. Run by hand, not in CI:
#
#   bash benches/soak.sh [SECONDS] [OUT_DIR]      # default 600 s, out: target/soak
#
# Load (loopback only, every loop bounded in time):
#   - loadtest: STEADY_SUBS raw-path subscribers on /steady, STEADY_RATE msg/s; it counts
#     every message lost, duplicated or out of order.
#   - benches/soak_churn.py: CHURN_RATE new clients per second (readers that leave after
#     0.5-3 s, never-reading clients with 4 KiB receive buffers held 5 s (one in twelve),
#     herald.v1 clients
#     that resubscribe with `since` and check the stream is exact), HTTP publishers on two
#     topics, and a burst of BURST messages to the churn topic every minute.
# Every SAMPLE_EVERY seconds: herald's RSS, open fds, /proc/net/sockstat TCP and the last
# stats line, into samples.csv. Then benches/soak_report.py judges the run (exit status) and
# draws samples.png.
set -euo pipefail

DURATION=${1:-600}
OUT=${2:-target/soak}
STEADY_SUBS=${STEADY_SUBS:-3000}
STEADY_RATE=${STEADY_RATE:-20}
CHURN_RATE=${CHURN_RATE:-200}
BURST=${BURST:-2000}
SAMPLE_EVERY=${SAMPLE_EVERY:-5}
WARMUP=${WARMUP:-120}

cd "$(dirname "$0")/.."
mkdir -p "$OUT"
cargo build --release -q -p herald -p loadtest --bins
HERALD=target/release/herald
LOADTEST=target/release/loadtest

# A free port: bind 0, read it back.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

# --socket-send-buffer: a stalled client pins at most ~128 KiB of kernel memory, so the minute's
# burst pushes the never-readers over --max-backlog (slow closes, then aborts) within seconds.
"$HERALD" --listen "127.0.0.1:$PORT" --threads 2 --history 1000 --max-message 65536 --max-backlog 262144 \
  --socket-send-buffer "${SNDBUF:-65536}" \
  --stats-interval "${SAMPLE_EVERY}s" >"$OUT/herald.log" 2>"$OUT/herald.err" &
HERALD_PID=$!
PIDS=("$HERALD_PID")
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
for _ in $(seq 100); do grep -q "^listening on" "$OUT/herald.log" 2>/dev/null && break; sleep 0.1; done

sample() {
  local t=$1 rss fds tcp stats
  rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$HERALD_PID/status")
  fds=$(ls "/proc/$HERALD_PID/fd" | wc -l)
  # TCP: inuse N orphan N tw N alloc N mem N
  tcp=$(awk '/^TCP:/ {print $3","$5","$11}' /proc/net/sockstat)
  stats=$(grep '^stats:' "$OUT/herald.log" | tail -1 || true)
  field() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<<"$stats"; }
  local conns
  conns=$(sed -n 's/^stats: conns=\([0-9]*\).*/\1/p' <<<"$stats")
  echo "$t,$rss,$fds,$tcp,${conns:-0},$(field slow_closes),$(field aborts),$(field full_drops)" >>"$OUT/samples.csv"
}
echo "t_s,rss_kib,fds,tcp_inuse,tcp_orphan,tcp_mem_pages,conns,slow_closes,aborts,full_drops" >"$OUT/samples.csv"
START=$(date +%s.%N)
sample 0

"$LOADTEST" --url "ws://127.0.0.1:$PORT/steady" --connections "$STEADY_SUBS" --rate "$STEADY_RATE" \
  --size 64 --warmup 5 --duration "$DURATION" --drain 5 --json --quiet >"$OUT/loadtest.json" 2>"$OUT/loadtest.err" &
LOADTEST_PID=$!
PIDS+=("$LOADTEST_PID")
python3 benches/soak_churn.py --port "$PORT" --duration "$DURATION" --rate "$CHURN_RATE" \
  --burst "$BURST" --report "$OUT/churn.json" >"$OUT/churn.log" 2>&1 &
CHURN_PID=$!
PIDS+=("$CHURN_PID")

# Sample until both loads have finished (the loadtest stops itself after warmup + duration +
# drain; the churn after its duration and at most 15 s more), bounded at twice the duration.
LIMIT=$(( DURATION * 2 + 60 ))
while kill -0 "$LOADTEST_PID" 2>/dev/null || kill -0 "$CHURN_PID" 2>/dev/null; do
  sleep "$SAMPLE_EVERY"
  now=$(python3 -c "import time; print(round(time.time() - $START))")
  sample "$now"
  [ "$now" -lt "$LIMIT" ] || { echo "soak: loads still running after ${LIMIT}s" >&2; exit 1; }
done
LOADTEST_RC=0; wait "$LOADTEST_PID" || LOADTEST_RC=$?
CHURN_RC=0; wait "$CHURN_PID" || CHURN_RC=$?
kill -TERM "$HERALD_PID"; wait "$HERALD_PID" || true
echo "loadtest exit $LOADTEST_RC, churn exit $CHURN_RC"

python3 benches/soak_report.py "$OUT" --warmup "$WARMUP"
