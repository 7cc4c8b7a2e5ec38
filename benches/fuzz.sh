#!/usr/bin/env bash
# Coverage-guided fuzzing of Herald's peer-facing parsers with AFL++ through afl.rs
# (`cargo afl`), which works on the stable toolchain. Run by hand, not in CI:
#
#   bash benches/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     # default 300 s, all targets
#
# Needs cargo-afl once: `cargo install cargo-afl && cargo afl config --build`.
# Each target starts from its committed seeds (fuzz/corpus/TARGET, made by
# benches/fuzz_seeds.py) and runs for the given time; findings land in
# target/fuzz/TARGET/default/{crashes,hangs} and are copied to fuzz/regressions/TARGET/,
# which tests/fuzz_regressions.rs replays under `cargo test`. A summary line per target
# (executions, paths found, crashes, hangs) goes to stdout and target/fuzz/summary.txt.
set -euo pipefail

SECS=${1:-300}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(frame frame_deflate http_head v1_request tls_websocket)

cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/target/fuzz
mkdir -p "$OUT"

command -v cargo-afl >/dev/null || { echo "cargo-afl missing: cargo install cargo-afl && cargo afl config --build" >&2; exit 2; }
(cd fuzz && cargo afl build --release -q)

# A shared machine: no core binding, no CPU-governor check, and core dumps may go to a
# handler (AFL then cannot tell crashes from it, but the target's panics abort).
export AFL_NO_AFFINITY=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1
export AFL_NO_UI=1 AFL_QUIET=1

: >"$OUT/summary.txt"
found=0
for t in "${TARGETS[@]}"; do
  rm -rf "${OUT:?}/$t"
  # -V: stop after SECS; the outer timeout only guards against a stuck fuzzer. -t 1000: an
  # input is a hang after 1 s (a run takes µs; the TLS target's handshake well under 1 ms),
  # generous so that a loaded, shared machine does not report slow runs as hangs.
  timeout $((SECS + 60)) cargo afl fuzz -t 1000 -i "fuzz/corpus/$t" -o "$OUT/$t" -V "$SECS" \
    "fuzz/target/release/$t" >"$OUT/$t.log" 2>&1 || true
  stats=$OUT/$t/default/fuzzer_stats
  if [ ! -f "$stats" ]; then
    echo "$t: no fuzzer_stats (see $OUT/$t.log)" | tee -a "$OUT/summary.txt"
    found=1
    continue
  fi
  get() { awk -F': *' -v k="$1" '$1 ~ "^"k" *$" {print $2}' "$stats"; }
  line="$t: ran $(get run_time)s, execs $(get execs_done) ($(get execs_per_sec)/s), corpus $(get corpus_count), edges $(get edges_found)/$(get total_edges) ($(get bitmap_cvg)), crashes $(get saved_crashes), hangs $(get saved_hangs)"
  echo "$line" | tee -a "$OUT/summary.txt"
  for kind in crashes hangs; do
    for f in "$OUT/$t/default/$kind"/id:*; do
      [ -e "$f" ] || continue
      mkdir -p "fuzz/regressions/$t"
      cp "$f" "fuzz/regressions/$t/$kind-$(sha1sum "$f" | cut -c1-12)"
      found=1
    done
  done
done
[ "$found" = 0 ] || echo "findings copied to fuzz/regressions/: replay with cargo test --test fuzz_regressions"
exit "$found"
