#!/usr/bin/env bash
# Every test of the project, on a fresh machine: the Rust suites (unit, property, end to end
# over loopback), the JavaScript client against the real binary (node --test), the demo page in
# headless Chromium, the Python and Node backend examples against a live server, and the official
# Centrifugo SDKs (centrifuge-js from npm, centrifuge-python from PyPI) against the Centrifugo
# endpoint.
# Needs: the Rust toolchain, Node.js with npm, Python 3, Debian's chromium (or CHROMIUM=path) and
# redis-server (the cluster tests start their own); it checks for them first.
# JS packages come from the lockfiles (npm ci); Python packages go to target/py-venv.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s (%ss)\n' "$1" "$SECONDS"; }

step "what the suites need"
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
missing=()
command -v redis-server >/dev/null || missing+=("redis-server (cluster tests): apt-get install redis-server")
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  missing+=("Node.js 20 or later with npm (JS client, browser and SDK tests): https://nodejs.org, or Debian 13's nodejs and npm")
elif [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
  missing+=("Node.js 20 or later (Playwright needs it; this is $(node --version)): Debian 12's nodejs is 18; install 20+ from https://nodejs.org or NodeSource, or use Debian 13")
fi
if ! command -v python3 >/dev/null; then
  missing+=("Python 3 with venv (backend examples, Centrifugo SDK tests): apt-get install python3 python3-venv")
elif ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  missing+=("Python's venv module (backend examples, Centrifugo SDK tests): apt-get install python3-venv")
fi
[ -x "$CHROMIUM" ] || missing+=("Chromium at $CHROMIUM (demo page test): apt-get install chromium, or set CHROMIUM")
if [ ${#missing[@]} -gt 0 ]; then
  printf 'missing:\n' >&2
  printf '  %s\n' "${missing[@]}" >&2
  exit 1
fi

# Every suite's output also goes to one log, from which the closing line counts the tests.
mkdir -p target
LOG=target/test-output.log
: > "$LOG"

step "cargo test"
cargo test --locked --workspace 2>&1 | tee -a "$LOG"

# The JS, browser and SDK tests start the binary `cargo test` just built for the Rust tests
# (building it again with `cargo build` would compile the crate a second time: the test build's
# dependency features differ).
export BOUNDARY_BIN="$PWD/target/debug/boundary-realtime"

step "JS client tests (node --test, against the real server)"
(cd clients/js && npm ci --no-audit --no-fund --loglevel=error && npm test) 2>&1 | tee -a "$LOG"

step "the Centrifugo SDKs against the real server: centrifuge-js (JSON and Protobuf builds)"
(cd clients/js && npm run test:centrifuge) 2>&1 | tee -a "$LOG"

step "demo page in headless Chromium"
(cd clients/js && CHROMIUM="$CHROMIUM" npm run test:e2e) 2>&1 | tee -a "$LOG"

step "backend examples (Python and Node) and the docs' snippets (README, grpc-api.md) against a live server"
if [ ! -x target/py-venv/bin/python ]; then
  python3 -m venv target/py-venv
fi
target/py-venv/bin/pip install --quiet --disable-pip-version-check -r examples/python/requirements.txt -r tests/sdk/requirements.txt
(cd examples/node && npm ci --no-audit --no-fund --loglevel=error)
(cd clients/js && PYTHON="$PWD/../../target/py-venv/bin/python" npm run test:examples) 2>&1 | tee -a "$LOG"

step "the Centrifugo SDKs against the real server: centrifuge-python (JSON and Protobuf)"
target/py-venv/bin/python -W ignore::ResourceWarning tests/sdk/centrifuge_python_test.py 2>&1 | tee -a "$LOG"

step "all tests passed"
# cargo's "test result: ok. N passed", node's "# pass N", unittest's "Ran N tests".
count() { grep -Eo "$1" "$LOG" | grep -Eo '[0-9]+' | awk '{s += $1} END {print s + 0}'; }
total=$(( $(count 'test result: ok\. [0-9]+ passed') + $(count '^# pass [0-9]+') + $(count '^Ran [0-9]+ tests') ))
echo "tests: $total passed, 0 failed"
