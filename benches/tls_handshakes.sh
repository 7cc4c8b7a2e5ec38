#!/usr/bin/env bash
# TLS handshakes (issue 19): server CPU per handshake and handshakes/s, full and resumed
# (TLS 1.3 tickets), herald against uWebSockets.js's SSLApp with the same certificate, in one
# run. Each server is pinned to core 0 (herald --threads 1), the storm (benches/peers/
# tls-storm.js, K handshakes in flight) to core 1. Per server: a warm-up, a storm of N full
# handshakes, N more that keep their tickets, then a reconnect storm of N resuming with them.
# Server CPU is utime+stime from /proc/PID/stat around each storm.
#
#   benches/tls_handshakes.sh CERT KEY N SERVER...   (SERVER: a herald binary, or `uws`)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PEERS="$ROOT/benches/peers"
CERT=${1:?cert}; KEY=${2:?key}; N=${3:?handshakes}; shift 3
HZ=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
storm() { # PORT N ARGS... -> JSON line
    taskset -c 1 node "$PEERS/tls-storm.js" "$@"
}
for server in "$@"; do
    out=$(mktemp); sessions=$(mktemp)
    if [[ $server == uws ]]; then
        TLS_CERT=$CERT TLS_KEY=$KEY taskset -c 0 node "$PEERS/uws-server.js" 0 >"$out" 2>&1 &
        name=uws-SSLApp
    else
        taskset -c 0 "$server" --listen 127.0.0.1:0 --tls-cert "$CERT" --tls-key "$KEY" \
            --threads 1 --cores 0 --stats-interval 0 --handshake-timeout 60s >"$out" 2>&1 &
        name=$(basename "$server")
    fi
    pid=$!
    for _ in $(seq 100); do grep -q "listening on wss://" "$out" && break; sleep 0.1; done
    port=$(grep -o "listening on wss://127.0.0.1:[0-9]*" "$out" | head -1 | sed 's/.*://')
    storm "$port" 500 >/dev/null
    for phase in full save resumed; do
        args=("$port" "$N" --inflight 100)
        [[ $phase == save ]] && args+=(--save "$sessions")
        [[ $phase == resumed ]] && args+=(--load "$sessions")
        c0=$(cpu $pid)
        result=$(storm "${args[@]}")
        c1=$(cpu $pid)
        [[ $phase == save ]] && continue
        us=$(echo "($c1 - $c0) * 1000000 / $HZ / $N" | bc)
        echo "$name $phase: $result server_cpu_us_per_handshake=$us"
    done
    kill $pid; wait $pid 2>/dev/null || true
    rm -f "$out" "$sessions"
done
