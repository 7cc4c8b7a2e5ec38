#!/usr/bin/env bash
# Idle memory per connection and memory given back, ws:// and wss:// (issue 19), for one or
# more herald binaries side by side in one run. For each binary and scheme: start the server
# pinned to core 0 (--threads 1), open N idle connections with benches/peers/hold-conns.js
# pinned to core 1, read VmRSS before, with them held, and every half second for 10 s after
# the holder exits (the connections close at once).
#
#   [SCHEMES=wss] benches/tls_memory.sh CERT KEY N BIN...   (e.g. /tmp/herald-before target/release/herald)
#
# Prints one line per binary and scheme: rss_kb before / held / after 0.5..10 s, and the
# per-connection delta in bytes. Needs node (benches/peers npm ci), taskset, openssl cert.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CERT=${1:?cert}; KEY=${2:?key}; N=${3:?connections}; shift 3
SCHEMES=${SCHEMES:-ws wss} # SCHEMES=wss: TLS only
rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
for bin in "$@"; do
    for scheme in $SCHEMES; do
        out=$(mktemp)
        taskset -c 0 "$bin" --listen 127.0.0.1:0 --listen-tls 127.0.0.1:0 --tls-cert "$CERT" \
            --tls-key "$KEY" --threads 1 --cores 0 --stats-interval 0 --handshake-timeout 60s >"$out" 2>&1 &
        pid=$!
        for _ in $(seq 50); do grep -q "listening on wss://" "$out" && break; sleep 0.1; done
        addr=$(grep -o "listening on $scheme://[0-9.:]*" "$out" | head -1 | sed "s/listening on $scheme:\/\///")
        sleep 1
        before=$(rss $pid)
        hold=$(mktemp)
        taskset -c 1 node "$ROOT/benches/peers/hold-conns.js" "$scheme://$addr/idle" "$N" --inflight 100 --hold 180 --open-timeout 150 >"$hold" 2>&1 &
        holder=$!
        t0=$(date +%s.%N)
        for _ in $(seq 1200); do grep -q '^open' "$hold" && break; kill -0 $holder 2>/dev/null || break; sleep 0.1; done
        t1=$(date +%s.%N)
        if ! grep -q '^open' "$hold"; then
            echo "$(basename "$bin") $scheme: holder failed: $(cat "$hold")"
            kill $holder $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; continue
        fi
        sleep 2
        held=$(rss $pid)
        kill $holder; wait $holder 2>/dev/null || true
        after=""
        for _ in $(seq 20); do sleep 0.5; after="$after $(rss $pid)"; done
        per=$(( (held - before) * 1024 / N ))
        printf '%s %s: open %d in %.1f s; VmRSS kB before %d, held %d (%d B/conn), after 0.5..10 s:%s\n' \
            "$(basename "$bin")" "$scheme" "$N" "$(echo "$t1 - $t0" | bc)" "$before" "$held" "$per" "$after"
        kill $pid; wait $pid 2>/dev/null || true
        rm -f "$out" "$hold"
    done
done
