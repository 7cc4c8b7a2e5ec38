#!/usr/bin/env bash
# Subscribe churn with presence off and on, side by side (issue 14). One herald per mode,
# pinned to core 0 (--threads 1 --cores 0); the churn client (benches/presence_churn.py: N
# raw path connects and hang-ups, and a herald.v1 watcher of the topic) pinned to core 1.
# Modes, run in turn ROUNDS times:
#   off       no --presence
#   elsewhere --presence other/* (the topic is not listed: one pattern check per subscribe)
#   events    --presence churn/* and the watcher subscribes with "presence":true, so every
#             churn also sends a join and a leave through the topic's owner to the watcher
# Prints, per run, churns/s (client side) and server CPU per churn (utime+stime from
# /proc/PID/stat), then the medians' ratios against off. Bounded: N connections per run.
# Take it under `flock /work/bench.lock`.
#
#   benches/presence_churn.sh HERALD_BINARY N ROUNDS
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${1:?herald binary}; N=${2:?connections per run}; ROUNDS=${3:?rounds}
HZ=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
declare -A RATE CPU
for round in $(seq "$ROUNDS"); do
    for mode in off elsewhere events; do
        args=(--listen 127.0.0.1:0 --threads 1 --cores 0 --stats-interval 0)
        client=()
        case $mode in
            elsewhere) args+=(--presence 'other/*') ;;
            events) args+=(--presence 'churn/*'); client+=(--events) ;;
        esac
        out=$(mktemp)
        taskset -c 0 "$BIN" "${args[@]}" >"$out" 2>&1 &
        pid=$!
        for _ in $(seq 100); do grep -q "listening on ws://" "$out" && break; sleep 0.1; done
        port=$(grep -o "listening on ws://127.0.0.1:[0-9]*" "$out" | head -1 | sed 's/.*://')
        taskset -c 1 python3 "$ROOT/benches/presence_churn.py" "$port" 500 churn/a "${client[@]}" >/dev/null
        c0=$(cpu $pid)
        result=$(taskset -c 1 python3 "$ROOT/benches/presence_churn.py" "$port" "$N" churn/a "${client[@]}")
        c1=$(cpu $pid)
        kill "$pid"; wait "$pid" 2>/dev/null || true; rm -f "$out"
        rate=$(echo "$result" | python3 -c 'import json,sys; print(json.load(sys.stdin)["churns_per_s"])')
        churns=$(echo "$result" | python3 -c 'import json,sys; print(json.load(sys.stdin)["churns"])')
        us=$(python3 -c "print(round(($c1 - $c0) * 1e6 / $HZ / $churns, 1))")
        echo "round $round $mode: $result server_cpu_us_per_churn=$us"
        RATE[$mode]+="$rate "; CPU[$mode]+="$us "
    done
done
median() { python3 -c "import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))" $1; }
off_rate=$(median "${RATE[off]}"); off_cpu=$(median "${CPU[off]}")
for mode in off elsewhere events; do
    r=$(median "${RATE[$mode]}"); c=$(median "${CPU[$mode]}")
    python3 -c "print(f'$mode: median {float($r):.0f} churns/s ({float($r)/float($off_rate):.2f}x off), server {float($c):.1f} us/churn ({float($c)/float($off_cpu):.2f}x off)')"
done
