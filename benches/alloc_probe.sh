#!/usr/bin/env bash
# Where an idle connection's memory goes (issue 19): benches/alloc_probe (a separate crate:
# herald with jemalloc's counters printed every 0.5 s) pinned to core 0, N idle connections held by
# benches/peers/hold-conns.js pinned to core 1. Prints, per scheme, jemalloc's allocated /
# active / resident / metadata bytes and VmRSS before and with the connections held, and the
# per-connection deltas.
#
#   cargo build --release --manifest-path benches/alloc_probe/Cargo.toml
#   benches/alloc_probe.sh CERT KEY N [SCHEMES...]     (default schemes: ws wss)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CERT=${1:?cert}; KEY=${2:?key}; N=${3:?connections}; shift 3
SCHEMES=${*:-ws wss}
BIN="$ROOT/benches/alloc_probe/target/release/herald-alloc-probe"
rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
last() { grep '^jemalloc allocated' "$1" | tail -1 | awk '{print $3, $5, $7, $9}'; }
for scheme in $SCHEMES; do
    out=$(mktemp)
    taskset -c 0 "$BIN" --listen 127.0.0.1:0 --listen-tls 127.0.0.1:0 --tls-cert "$CERT" \
        --tls-key "$KEY" --threads 1 --cores 0 --stats-interval 0 --handshake-timeout 60s >"$out" 2>&1 &
    pid=$!
    for _ in $(seq 50); do grep -q "listening on wss://" "$out" && break; sleep 0.1; done
    addr=$(grep -o "listening on $scheme://[0-9.:]*" "$out" | head -1 | sed "s/listening on $scheme:\/\///")
    sleep 1.5
    read -r a0 c0 r0 m0 <<<"$(last "$out")"; v0=$(rss $pid)
    hold=$(mktemp)
    taskset -c 1 node "$ROOT/benches/peers/hold-conns.js" "$scheme://$addr/idle" "$N" --inflight 100 --hold 180 --open-timeout 150 >"$hold" 2>&1 &
    holder=$!
    for _ in $(seq 1500); do grep -q '^open' "$hold" && break; kill -0 $holder 2>/dev/null || break; sleep 0.1; done
    sleep 2.5
    read -r a1 c1 r1 m1 <<<"$(last "$out")"; v1=$(rss $pid)
    kill $holder; wait $holder 2>/dev/null || true
    head -1 "$out"
    printf '%s, %d held, bytes per connection: allocated %d, active %d, resident %d, metadata %d, VmRSS %d\n' \
        "$scheme" "$N" $(( (a1 - a0) / N )) $(( (c1 - c0) / N )) $(( (r1 - r0) / N )) $(( (m1 - m0) / N )) $(( (v1 - v0) * 1024 / N ))
    kill $pid; wait $pid 2>/dev/null || true
    rm -f "$out" "$hold"
done
