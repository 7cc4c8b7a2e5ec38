#!/usr/bin/env bash
# Publish cost with 0, 1k and 100k pattern subscriptions registered on the worker, side by
# side (issue 14). One herald per run (--threads 1 --cores 0: the one worker owns every topic
# and holds every pattern); the client (benches/pattern_publish.py) pinned to core 1. Modes:
# known (every publish to an existing topic) and fresh (every publish to a new topic, so the
# owner walks the pattern index once to see whether a pattern wants it). Prints each run's
# server CPU per publish (over the publishing phase only), then each median's ratio against
# 0 patterns. Bounded: N publishes per run. Take it under `flock /work/bench.lock`.
#
#   benches/pattern_publish.sh HERALD_BINARY N ROUNDS
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${1:?herald binary}; N=${2:?publishes per run}; ROUNDS=${3:?rounds}
declare -A US
for round in $(seq "$ROUNDS"); do
    for mode in known fresh; do
        for patterns in 0 1000 100000; do
            out=$(mktemp)
            taskset -c 0 "$BIN" --listen 127.0.0.1:0 --threads 1 --cores 0 --stats-interval 0 \
                --max-topics-per-conn 1000 >"$out" 2>&1 &
            pid=$!
            for _ in $(seq 100); do grep -q "listening on ws://" "$out" && break; sleep 0.1; done
            port=$(grep -o "listening on ws://127.0.0.1:[0-9]*" "$out" | head -1 | sed 's/.*://')
            result=$(taskset -c 1 python3 "$ROOT/benches/pattern_publish.py" "$port" "$pid" "$patterns" "$N" "$mode")
            kill "$pid"; wait "$pid" 2>/dev/null || true; rm -f "$out"
            echo "round $round: $result"
            us=$(echo "$result" | python3 -c 'import json,sys; print(json.load(sys.stdin)["server_us_per_publish"])')
            US[$mode.$patterns]+="$us "
        done
    done
done
median() { python3 -c "import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))" $1; }
for mode in known fresh; do
    base=$(median "${US[$mode.0]}")
    for patterns in 0 1000 100000; do
        m=$(median "${US[$mode.$patterns]}")
        python3 -c "print(f'$mode, $patterns patterns: median {float($m):.2f} us/publish ({float($m)/float($base):.2f}x 0 patterns)')"
    done
done
