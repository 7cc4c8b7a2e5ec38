#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what the tests need (Debian's Chromium
# for the real-browser tests, redis-server for the cluster tests; the Autobahn harness sets up
# its own Python 2 on first use),
# runs the Autobahn|Testsuite conformance cases, the JavaScript client's type check and tests
# (clients/js, needs Node >= 20 and npm), then every cargo test of the workspace.
# Exit status: non-zero if anything fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export DEBIAN_FRONTEND=noninteractive

missing=()
if ! command -v chromium >/dev/null; then
  echo "tests/run.sh: installing Debian's chromium for tests/browser.rs" >&2
  missing+=(chromium fonts-dejavu-core)
fi
if ! command -v redis-server >/dev/null; then
  echo "tests/run.sh: installing Debian's redis-server for tests/cluster.rs" >&2
  missing+=(redis-server)
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "tests/run.sh: installing Debian's nodejs and npm for clients/js" >&2
  missing+=(nodejs npm)
fi
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
  # tests/cluster.rs starts its own redis-server instances on private loopback ports; a system
  # service the package may have started (where an init system runs) is not needed.
  if [[ " ${missing[*]} " == *" redis-server "* ]]; then
    service redis-server stop >/dev/null 2>&1 || true
  fi
fi

echo "== Autobahn|Testsuite cases 1-10, 12 and 13 (tests/autobahn/run.sh; about 6 minutes on 2 cores)"
bash tests/autobahn/run.sh </dev/null

# Debug builds check every connection phase change against the lifecycle table
# (worker::conn::Phase::may_enter, a debug_assert): run the suites that drive every phase
# once against a debug build.
echo "== cargo test (debug build: phase-transition checks on) for the lifecycle suites"
cargo test --test lifecycle --test http_publish --test protocol --test http_handshake --test security

# The JavaScript client (clients/js): its locked dev tools (npm ci), its type declarations
# (tsc --noEmit over them and a typed example), then its tests against the release binary.
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "tests/run.sh: clients/js needs Node >= 20, found $(node --version)" >&2
  exit 1
fi
echo "== clients/js: npm ci, tsc --noEmit, node --test (against target/release/herald)"
(cd clients/js && npm ci --no-audit --no-fund </dev/null && npx --no-install tsc --noEmit -p tsconfig.json)
cargo build --release --bin herald
(cd clients/js && node --test --test-concurrency=1 test/*.test.js </dev/null)

# Last, so that its result lines close the log.
echo "== cargo test --workspace --release"
cargo test --workspace --release
