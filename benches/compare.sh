#!/usr/bin/env bash
# Runs the same loadtest against Herald, uWebSockets.js (native pub/sub) and Node `ws`, one
# server at a time, the server pinned to core 0 and the loadtest to core 1, and prints the
# results side by side as a markdown table (also written to OUT/table.md, raw JSON next to it),
# and per fan-out row one HTML page with the servers overlaid (OUT/ROW.html, OUT/ROW.png).
#
#   benches/compare.sh [--rows a,b,c,d,e,f,g,h,b2] [--duration S] [--warmup S]
#                      [--servers herald,uws,ws] [--out DIR] [--sat-rates 2000,5000,...]
#                      [--base-bin PATH] [--herald-args "ARGS"]
#
# Rows (one publisher, 64 B payloads, topic /bench):
#   a   1k subscribers x 100 msg/s            e   connection storm: 10k connections, --connect-rate 0
#   b   10k subscribers x 10 msg/s            f   1k subscribers x 1,000 msg/s
#   c   1k subscribers at saturation          g   15k subscribers x 10 msg/s
#       (2k, 5k, 10k, 20k, 50k msg/s; stops   b2  row b against herald --threads 2 --cores 0,1 and
#       at the first that loses anything,         --threads 1 (the loadtest then shares core 1)
#       delivers < 95% of the offered load
#       or has p99 > 50 ms: a backlog grew;
#       --sat-rates LIST overrides the rates)
#   h   closed loop: 1k subscribers, the publisher keeping 8 messages in flight (loadtest
#       --inflight 8: its own echo is the acknowledgement); saturation throughput
#   d   idle memory: server VmRSS after 10k idle connections minus before, / 10k
#       (held by benches/peers/hold-conns.js, since the loadtest has no hold mode)
#   e uses --max-inflight 500 for every server: uWebSockets.js's listen backlog is fixed at 512.
#
# The server `herald-tls` is this herald serving wss:// only (a P-256 certificate made with
# openssl in OUT); the loadtest then connects with wss:// and --insecure. So
#   benches/compare.sh --rows a,f --servers herald,herald-tls
# measures the server CPU per delivery over TLS against plain in one run (issue 19).
#
# --base-bin PATH adds the server `herald-base`: another herald binary (say, one built before a
# change, copied aside) run exactly like `herald`, so old and new are measured in one run:
#   benches/compare.sh --rows a,c --servers herald-base,herald --base-bin /tmp/herald-before
#
# --herald-args "ARGS" adds flags to the `herald` server only (not herald-base), e.g.
#   --herald-args "--batch-window 0" to measure the new binary with batching off.
#
# Needs: cargo, taskset, jq, ss, timeout; node + npm (Node 20) for the peers and row d.
# Every run is bounded (timeout) and every server is stopped and reaped before the next starts.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PEERS="$ROOT/benches/peers"
HERALD="$ROOT/target/release/herald"
LOADTEST="$ROOT/target/release/loadtest"

ALL_ROWS=(a b c d e f g h b2)
ROWS="a,b,c,d,e,f,g,h,b2"
SERVERS="herald,uws,ws"
DURATION=10
WARMUP=1
OUT=""
SAT_RATES=(2000 5000 10000 20000 50000)
BASE_BIN=""
HERALD_ARGS=""
SAT_P99_MS=50 # row c: a p99 over this means a queue built up (deliveries late, counted in the drain)
TOPIC=/bench

die() { echo "compare.sh: error: $*" >&2; exit 1; }
log() { echo "compare.sh: $*" >&2; }

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

while (($#)); do
    case $1 in
        --rows) ROWS=${2:?--rows needs a value}; shift 2 ;;
        --rows=*) ROWS=${1#*=}; shift ;;
        --duration) DURATION=${2:?--duration needs a value}; shift 2 ;;
        --duration=*) DURATION=${1#*=}; shift ;;
        --warmup) WARMUP=${2:?--warmup needs a value}; shift 2 ;;
        --warmup=*) WARMUP=${1#*=}; shift ;;
        --servers) SERVERS=${2:?--servers needs a value}; shift 2 ;;
        --servers=*) SERVERS=${1#*=}; shift ;;
        --sat-rates) IFS=, read -r -a SAT_RATES <<<"${2:?--sat-rates needs a value}"; shift 2 ;;
        --sat-rates=*) IFS=, read -r -a SAT_RATES <<<"${1#*=}"; shift ;;
        --base-bin) BASE_BIN=${2:?--base-bin needs a value}; shift 2 ;;
        --base-bin=*) BASE_BIN=${1#*=}; shift ;;
        --herald-args) HERALD_ARGS=${2?--herald-args needs a value}; shift 2 ;;
        --herald-args=*) HERALD_ARGS=${1#*=}; shift ;;
        --out) OUT=${2:?--out needs a value}; shift 2 ;;
        --out=*) OUT=${1#*=}; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

[[ $DURATION =~ ^[1-9][0-9]*$ ]] || die "--duration must be a positive whole number of seconds, not '$DURATION'"
[[ $WARMUP =~ ^[0-9]+$ ]] || die "--warmup must be a whole number of seconds, not '$WARMUP'"
for r in "${SAT_RATES[@]}"; do
    [[ $r =~ ^[1-9][0-9]*$ ]] || die "--sat-rates must be positive whole msg/s values, not '$r'"
done
IFS=, read -r -a ROW_LIST <<<"$ROWS"
IFS=, read -r -a SERVER_LIST <<<"$SERVERS"
((${#ROW_LIST[@]})) || die "--rows is empty"
((${#SERVER_LIST[@]})) || die "--servers is empty"
for r in "${ROW_LIST[@]}"; do
    [[ " ${ALL_ROWS[*]} " == *" $r "* ]] || die "unknown row '$r' (rows: ${ALL_ROWS[*]})"
done
for s in "${SERVER_LIST[@]}"; do
    [[ $s == herald || $s == uws || $s == ws || $s == herald-base || $s == herald-tls ]] || die "unknown server '$s' (servers: herald, uws, ws, herald-base, herald-tls)"
    [[ $s != herald-base || -x $BASE_BIN ]] || die "server herald-base needs --base-bin PATH (an executable herald)"
done

# ---------------------------------------------------------------- prerequisites
for tool in cargo taskset jq ss timeout awk; do
    command -v "$tool" >/dev/null || die "'$tool' not found on PATH"
done
taskset -c 0,1 true 2>/dev/null || die "cores 0 and 1 must both be available (taskset -c 0,1 failed)"

need_node=0
[[ " ${ROW_LIST[*]} " == *" d "* ]] && need_node=1 # the idle-connection holder is a node script
[[ ",$SERVERS," == *,uws,* || ",$SERVERS," == *,ws,* ]] && need_node=1
if ((need_node)); then
    command -v node >/dev/null || die "node not found on PATH (the uws/ws peers and row d need Node.js 20)"
    command -v npm >/dev/null || die "npm not found on PATH (needed once to install benches/peers)"
    node_major=$(node -p 'process.versions.node.split(".")[0]')
    ((node_major == 20)) || log "warning: Node $(node --version); the peers are pinned and checked on Node 20"
fi

# Sockets: the servers (Node ones especially) inherit this soft limit. 20,000 is the hard limit here.
hard=$(ulimit -Hn)
if [[ $hard == unlimited ]] || ((hard > 1048576)); then hard=1048576; fi
ulimit -n "$hard" || die "cannot raise the open-file limit to $hard"
(($(ulimit -n) >= 16000)) || log "warning: open-file limit $(ulimit -n): rows b, d, e, g need ~10k-15k sockets per process"

if [[ -z $OUT ]]; then OUT="$ROOT/target/bench-compare/$(date +%Y%m%d-%H%M%S)"; fi
mkdir -p "$OUT" || die "cannot create --out directory '$OUT'"
OUT=$(cd "$OUT" && pwd)

log "building herald and loadtest (release)"
(cd "$ROOT" && cargo build --release -p herald -p loadtest) >&2 || die "cargo build failed"
[[ -x $HERALD && -x $LOADTEST ]] || die "build did not produce $HERALD and $LOADTEST"

if ((need_node)); then
    if [[ ! -f $PEERS/node_modules/.package-lock.json || $PEERS/package-lock.json -nt $PEERS/node_modules/.package-lock.json ]]; then
        log "installing peer dependencies (npm ci in benches/peers)"
        (cd "$PEERS" && npm ci --ignore-scripts --no-audit --no-fund) >&2 || die "npm ci in benches/peers failed"
    fi
    (cd "$PEERS" && node -e 'require("uwebsockets"); require("ws")') 2>/dev/null ||
        die "benches/peers: cannot load uwebsockets/ws (uWebSockets.js 20 ships for Linux x64 glibc, Node 16-25); try: cd benches/peers && npm ci"
fi

CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------- process helpers
SRV_PID="" SRV_PORT="" SRV_NAME="" HOLD_PID="" LT_PID=""

alive() { # pid: running (not gone, not a zombie)
    local st
    st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $st && $st != Z ]]
}

STOP_RC=0
stop_pid() { # pid what: SIGTERM, wait up to 15 s, then SIGKILL; reap; exit status in STOP_RC
    local pid=$1 what=$2 i rc=0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then
        log "warning: $what (pid $pid) ignored SIGTERM for 15 s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || rc=$?
    STOP_RC=$rc
}

cleanup() {
    [[ -n $LT_PID ]] && alive "$LT_PID" && kill -TERM "$LT_PID" 2>/dev/null # timeout passes it on
    [[ -n $HOLD_PID ]] && alive "$HOLD_PID" && kill -KILL "$HOLD_PID" 2>/dev/null
    [[ -n $SRV_PID ]] && alive "$SRV_PID" && kill -KILL "$SRV_PID" 2>/dev/null
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_server() { # name tag: starts it pinned, sets SRV_PID / SRV_PORT
    local name=$1 tag=$2 i line
    local so="$OUT/logs/$tag.$name.out" se="$OUT/logs/$tag.$name.err"
    mkdir -p "$OUT/logs"
    case $name in
        herald) taskset -c 0 "$HERALD" --listen 127.0.0.1:0 --threads 1 --cores 0 --stats-interval 0 $HERALD_ARGS >"$so" 2>"$se" & ;;
        herald-base) taskset -c 0 "$BASE_BIN" --listen 127.0.0.1:0 --threads 1 --cores 0 --stats-interval 0 >"$so" 2>"$se" & ;;
        herald-tls)
            [[ -f $OUT/tls-key.pem ]] || openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
                -nodes -keyout "$OUT/tls-key.pem" -out "$OUT/tls-cert.pem" -days 2 -subj /CN=localhost \
                -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null || die "openssl could not make a certificate"
            taskset -c 0 "$HERALD" --listen 127.0.0.1:0 --tls-cert "$OUT/tls-cert.pem" --tls-key "$OUT/tls-key.pem" \
                --threads 1 --cores 0 --stats-interval 0 >"$so" 2>"$se" & ;;
        herald-2t) taskset -c 0,1 "$HERALD" --listen 127.0.0.1:0 --threads 2 --cores 0,1 --stats-interval 0 >"$so" 2>"$se" & ;;
        uws) taskset -c 0 node "$PEERS/uws-server.js" 0 >"$so" 2>"$se" & ;;
        ws) taskset -c 0 node "$PEERS/ws-server.js" 0 >"$so" 2>"$se" & ;;
        *) die "internal: unknown server $name" ;;
    esac
    SRV_PID=$! SRV_NAME=$name SRV_PORT="" SRV_SCHEME=ws
    for ((i = 0; i < 100; i++)); do
        line=$(head -n1 "$so" 2>/dev/null || true)
        if [[ $line =~ ^listening\ on\ (wss?)://127\.0\.0\.1:([0-9]+)$ ]]; then
            SRV_SCHEME=${BASH_REMATCH[1]} SRV_PORT=${BASH_REMATCH[2]}
            return 0
        fi
        alive "$SRV_PID" || die "$name exited before listening; see $se:"$'\n'"$(tail -n5 "$se")"
        sleep 0.1
    done
    die "$name printed no 'listening on ws://127.0.0.1:PORT' line within 10 s (first line: '$line'); see $so, $se"
}

stop_server() {
    [[ -n $SRV_PID ]] || return 0
    local i
    stop_pid "$SRV_PID" "$SRV_NAME"
    ((STOP_RC == 0)) || log "warning: $SRV_NAME exited with status $STOP_RC on SIGTERM (expected 0)"
    for ((i = 0; i < 50; i++)); do # the port must be free again before the next run
        [[ -z $(ss -Hltn "sport = :$SRV_PORT") ]] && break
        sleep 0.1
    done
    [[ -z $(ss -Hltn "sport = :$SRV_PORT") ]] || die "port $SRV_PORT still listening after $SRV_NAME exited"
    SRV_PID="" SRV_PORT="" SRV_NAME=""
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime of a live process

# Runs the loadtest (pinned to core 1) against the current server; JSON to $OUT/$tag.json.
# Returns non-zero if it failed or timed out (its stderr is in $OUT/$tag.err).
run_loadtest() { # tag loadtest-args...
    local tag=$1 rc=0
    shift
    local budget=$((DURATION + WARMUP + 120))
    # In the background + wait, so that a SIGINT/SIGTERM to this script is handled at once.
    local tls=()
    [[ $SRV_SCHEME == wss ]] && tls=(--insecure)
    timeout -k 5 "$budget" taskset -c 1 "$LOADTEST" --url "$SRV_SCHEME://127.0.0.1:$SRV_PORT$TOPIC" "${tls[@]}" "$@" \
        --cores 1 --json --quiet --server-pid "$SRV_PID" >"$OUT/$tag.json" 2>"$OUT/$tag.err" &
    LT_PID=$!
    wait "$LT_PID" || rc=$?
    LT_PID=""
    if ((rc != 0)) || ! jq -e . "$OUT/$tag.json" >/dev/null 2>&1; then
        log "warning: loadtest for $tag failed (status $rc): $(tail -n3 "$OUT/$tag.err" | tr '\n' ' ')"
        return 1
    fi
}

# ---------------------------------------------------------------- results
declare -A CELL          # "row|metric|server" -> text
declare -A ROW_METRICS   # row -> metric names, '|' separated, in order
declare -A ROW_TITLE
ROW_TITLE[a]="(a) 1k subs × 100 msg/s"
ROW_TITLE[b]="(b) 10k subs × 10 msg/s"
ROW_TITLE[c]="(c) 1k subs, saturation"
ROW_TITLE[d]="(d) idle memory, 10k conns"
ROW_TITLE[e]="(e) connection storm, 10k conns"
ROW_TITLE[f]="(f) 1k subs × 1,000 msg/s"
ROW_TITLE[g]="(g) 15k subs × 10 msg/s"
ROW_TITLE[b2]="(b2) row b, herald threads"
ROW_TITLE[h]="(h) 1k subs, closed loop, 8 in flight"
FANOUT_METRICS="delivered/s|lost|p50 / p99 µs|server CPU %|server ns/delivery|loadtest CPU %"
ROW_METRICS[a]=$FANOUT_METRICS
ROW_METRICS[b]=$FANOUT_METRICS
ROW_METRICS[f]=$FANOUT_METRICS
ROW_METRICS[g]=$FANOUT_METRICS
ROW_METRICS[c]="max rate, lost 0|$FANOUT_METRICS|first failing rate"
ROW_METRICS[d]="idle RSS / conn|VmRSS before → after"
ROW_METRICS[e]="handshakes/s|connect p50 / p99 µs|errors|server CPU µs/handshake"
ROW_METRICS[b2]=$FANOUT_METRICS
ROW_METRICS[h]=$FANOUT_METRICS

commas() { sed ':a;s/\B[0-9]\{3\}\>/,&/;ta' <<<"$1"; }

# Fills the fan-out metric cells of row/server from a loadtest JSON file.
fanout_cells() { # row server json
    local row=$1 srv=$2 f=$3 v
    v=$(jq -r '.delivered_per_sec | round' "$f")
    CELL["$row|delivered/s|$srv"]=$(commas "$v")
    CELL["$row|lost|$srv"]=$(jq -r '
        [.lost | tostring]
        + (if .duplicates > 0 then ["dup \(.duplicates)"] else [] end)
        + (if .out_of_order > 0 then ["ooo \(.out_of_order)"] else [] end)
        + (if (.errors | length) > 0 then ["errors: " + (.errors | to_entries | map("\(.key) \(.value)") | join(", "))] else [] end)
        | join("; ")' "$f")
    CELL["$row|p50 / p99 µs|$srv"]=$(jq -r 'def r: if . == null then "–" else (. | round | tostring) end;
        "\(.latency_us.p50 | r) / \(.latency_us.p99 | r)"' "$f")
    CELL["$row|server CPU %|$srv"]=$(jq -r 'if .server_cpu_pct == null then "–" else (.server_cpu_pct * 10 | round / 10 | tostring) end' "$f")
    CELL["$row|server ns/delivery|$srv"]=$(jq -r 'if .server_ns_per_delivery == null then "–" else (.server_ns_per_delivery | round | tostring) end' "$f")
    CELL["$row|loadtest CPU %|$srv"]=$(jq -r 'if .wall_s > 0 then (.loadtest_cpu_s / .wall_s * 1000 | round / 10 | tostring) else "–" end' "$f")
}

fail_cells() { # row server why
    local m ms
    IFS='|' read -r -a ms <<<"${ROW_METRICS[$1]}"
    for m in "${ms[@]}"; do CELL["$1|$m|$2"]="–"; done
    CELL["$1|${ms[0]}|$2"]="failed: $3"
}

summary() { # json -> one progress line
    jq -r '"\(.delivered_per_sec | round) deliveries/s, lost \(.lost), p50/p99 \(.latency_us.p50 // "–")/\(.latency_us.p99 // "–") µs, server CPU \(.server_cpu_pct // "–")%, \(.server_ns_per_delivery // "–") ns/delivery"' "$1"
}

# ---------------------------------------------------------------- rows
fanout_row() { # row subscribers rate|inflight:N [server-list]
    local row=$1 subs=$2 rate=$3 srv tag load
    shift 3
    if [[ $rate == inflight:* ]]; then load=(--inflight "${rate#inflight:}"); else load=(--rate "$rate"); fi
    for srv in "$@"; do
        tag="$row-$srv"
        log "[$row] $srv: $subs subscribers × ${load[*]} for ${DURATION}s"
        start_server "$srv" "$tag"
        if run_loadtest "$tag" --connections "$subs" --publishers 1 "${load[@]}" --size 64 \
            --duration "$DURATION" --warmup "$WARMUP"; then
            fanout_cells "$row" "$srv" "$OUT/$tag.json"
            log "[$row] $srv: $(summary "$OUT/$tag.json")"
        else
            fail_cells "$row" "$srv" "loadtest error"
        fi
        stop_server
    done
}

saturation_row() { # c: increasing rates until one loses or falls short
    local srv rate tag best ok why
    for srv in "${SERVER_LIST[@]}"; do
        best="" why="none (all passed)"
        for rate in "${SAT_RATES[@]}"; do
            tag="c-$srv-$rate"
            log "[c] $srv: 1000 subscribers × $rate msg/s for ${DURATION}s"
            start_server "$srv" "$tag"
            ok=0
            if run_loadtest "$tag" --connections 1000 --publishers 1 --rate "$rate" --size 64 \
                --duration "$DURATION" --warmup "$WARMUP"; then
                log "[c] $srv: $(summary "$OUT/$tag.json")"
                if jq -e --argjson p99max "$((SAT_P99_MS * 1000))" '.lost == 0 and (.errors | length) == 0
                          and .expected > 0 and .delivered_per_sec >= 0.95 * .expected / .duration_s
                          and .latency_us.p99 != null and .latency_us.p99 <= $p99max' "$OUT/$tag.json" >/dev/null; then
                    ok=1
                else
                    why="$(commas "$rate") msg/s: $(jq -r '"lost \(.lost), \(.delivered_per_sec / (.expected / .duration_s) * 100 | round)% of offered, p99 \(.latency_us.p99 // 0 | round) µs"' "$OUT/$tag.json")"
                fi
            else
                why="$(commas "$rate") msg/s: loadtest error"
            fi
            stop_server
            ((ok)) || break
            best=$rate
        done
        if [[ -n $best ]]; then
            fanout_cells c "$srv" "$OUT/c-$srv-$best.json"
            CELL["c|max rate, lost 0|$srv"]="$(commas "$best") msg/s"
        else
            fail_cells c "$srv" "lost at $(commas "${SAT_RATES[0]}") msg/s"
        fi
        CELL["c|first failing rate|$srv"]=$why
    done
}

vmrss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

memory_row() { # d: VmRSS delta per idle connection
    local n=10000 srv tag before after i
    for srv in "${SERVER_LIST[@]}"; do
        tag="d-$srv"
        log "[d] $srv: $n idle connections"
        start_server "$srv" "$tag"
        sleep 1
        before=$(vmrss_kib "$SRV_PID")
        taskset -c 1 node "$PEERS/hold-conns.js" "ws://127.0.0.1:$SRV_PORT$TOPIC" "$n" --hold 120 \
            >"$OUT/$tag.hold.out" 2>"$OUT/$tag.hold.err" &
        HOLD_PID=$!
        for ((i = 0; i < 900; i++)); do # up to 90 s
            grep -q '^open ' "$OUT/$tag.hold.out" 2>/dev/null && break
            alive "$HOLD_PID" || break
            sleep 0.1
        done
        if grep -q '^open ' "$OUT/$tag.hold.out" 2>/dev/null; then
            sleep 2 # let the server settle (allocations after the last upgrade, Node's GC)
            after=$(vmrss_kib "$SRV_PID")
            CELL["d|idle RSS / conn|$srv"]="$(((after - before) * 1024 / n)) B"
            CELL["d|VmRSS before → after|$srv"]="$(commas "$before") → $(commas "$after") KiB"
            log "[d] $srv: VmRSS $before KiB -> $after KiB: $(((after - before) * 1024 / n)) B per connection"
        else
            fail_cells d "$srv" "holder: $(tail -n1 "$OUT/$tag.hold.err")"
            log "warning: [d] $srv: the holder did not open $n connections: $(tail -n1 "$OUT/$tag.hold.err")"
        fi
        stop_pid "$HOLD_PID" hold-conns.js
        HOLD_PID=""
        stop_server
    done
}

connect_row() { # e: connection storm
    local n=10000 srv tag t0 t1
    for srv in "${SERVER_LIST[@]}"; do
        tag="e-$srv"
        log "[e] $srv: storm of $n connections, --connect-rate 0 --max-inflight 500"
        start_server "$srv" "$tag"
        t0=$(cpu_ticks "$SRV_PID")
        # 500 in flight: below uWebSockets.js's fixed listen backlog of 512 (uSockets hardcodes it;
        # Herald and the ws peer use 4096), so the storm measures handshakes, not SYN retransmits.
        if run_loadtest "$tag" --mode connect --connections "$n" --connect-rate 0 --max-inflight 500; then
            t1=$(cpu_ticks "$SRV_PID")
            CELL["e|handshakes/s|$srv"]=$(commas "$(jq -r '.handshakes_per_sec | round' "$OUT/$tag.json")")
            CELL["e|connect p50 / p99 µs|$srv"]=$(jq -r 'def r: if . == null then "–" else (. | round | tostring) end;
                "\(.connect_latency_us.p50 | r) / \(.connect_latency_us.p99 | r)"' "$OUT/$tag.json")
            CELL["e|errors|$srv"]=$(jq -r 'if (.errors | length) == 0 then "0" else (.errors | to_entries | map("\(.key) \(.value)") | join(", ")) end' "$OUT/$tag.json")
            CELL["e|server CPU µs/handshake|$srv"]=$(awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$n" 'BEGIN { printf "%.1f", t * 1e6 / hz / n }')
            log "[e] $srv: $(jq -r '"\(.handshakes_per_sec | round) handshakes/s, connect p99 \(.connect_latency_us.p99) µs, errors \(.errors)"' "$OUT/$tag.json")"
        else
            fail_cells e "$srv" "loadtest error"
        fi
        stop_server
    done
}

ran_rows=()
for row in "${ROW_LIST[@]}"; do
    case $row in
        a) fanout_row a 1000 100 "${SERVER_LIST[@]}" ;;
        b) fanout_row b 10000 10 "${SERVER_LIST[@]}" ;;
        c) saturation_row ;;
        d) memory_row ;;
        e) connect_row ;;
        f) fanout_row f 1000 1000 "${SERVER_LIST[@]}" ;;
        g) fanout_row g 15000 10 "${SERVER_LIST[@]}" ;;
        h) fanout_row h 1000 inflight:8 "${SERVER_LIST[@]}" ;;
        b2) fanout_row b2 10000 10 herald herald-2t ;;
    esac
    ran_rows+=("$row")
done

# ---------------------------------------------------------------- table
declare -A SERVER_TITLE=([herald]="herald (1 thread)" [herald-base]="herald --base-bin (1 thread)" [uws]="uWebSockets.js pub/sub" [ws]="Node ws" [herald-2t]="herald --threads 2 (cores 0,1)" [herald-tls]="herald wss:// (1 thread)")

print_table() { # title rows... (servers from the global $TABLE_SERVERS)
    local row m s line ms
    printf '| row | metric |'
    for s in "${TABLE_SERVERS[@]}"; do printf ' %s |' "${SERVER_TITLE[$s]}"; done
    printf '\n|---|---|'
    for s in "${TABLE_SERVERS[@]}"; do printf -- '--:|'; done
    printf '\n'
    for row in "$@"; do
        IFS='|' read -r -a ms <<<"${ROW_METRICS[$row]}"
        local first=1
        for m in "${ms[@]}"; do
            if ((first)); then line="| ${ROW_TITLE[$row]} | $m |"; else line="| | $m |"; fi
            first=0
            for s in "${TABLE_SERVERS[@]}"; do line+=" ${CELL["$row|$m|$s"]:-–} |"; done
            echo "$line"
        done
    done
}

{
    echo "Herald vs uWebSockets.js vs Node ws — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, server on core 0, loadtest on core 1;"
    echo "one publisher, 64 B, ${DURATION}s measured after ${WARMUP}s warmup; raw JSON in $OUT"
    echo
    main_rows=()
    for r in "${ran_rows[@]}"; do [[ $r != b2 ]] && main_rows+=("$r"); done
    if ((${#main_rows[@]})); then
        TABLE_SERVERS=("${SERVER_LIST[@]}")
        print_table "${main_rows[@]}"
        echo
    fi
    if [[ " ${ran_rows[*]} " == *" b2 "* ]]; then
        TABLE_SERVERS=(herald herald-2t)
        print_table b2
        echo
        echo "(b2: the loadtest stays on core 1, which the 2-thread herald shares; loadtest CPU % is over its whole run)"
    fi
} | tee "$OUT/table.md"

# ---------------------------------------------------------------- pictures
# One HTML page per fan-out row with the servers overlaid (the loadtest's --html page, filled
# with every server's JSON by benches/report_html.py), and a PNG of it when Chromium is there.
for r in "${ran_rows[@]}"; do
    [[ $r == a || $r == b || $r == e || $r == f || $r == g ]] || continue
    runs=()
    for srv in "${SERVER_LIST[@]}"; do
        [[ -s $OUT/$r-$srv.json ]] && runs+=("$srv=$OUT/$r-$srv.json")
    done
    ((${#runs[@]})) || continue
    python3 "$ROOT/benches/report_html.py" "$OUT/$r.html" "${runs[@]}" || { log "warning: $r.html not written"; continue; }
    if command -v chromium >/dev/null; then
        timeout 60 chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1400,1700 \
            --screenshot="$OUT/$r.png" "file://$OUT/$r.html" >/dev/null 2>&1 || log "warning: no picture of $r.html"
    fi
    log "row $r: $OUT/$r.html${runs:+ (servers overlaid)}"
done
