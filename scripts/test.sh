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
command -v node >/dev/null || missing+=("Node.js with npm (JS client tests): apt-get install nodejs npm")
command -v python3 >/dev/null || missing+=("Python 3 (backend example): apt-get install python3 python3-venv")
[ -x "$CHROMIUM" ] || missing+=("Chromium at $CHROMIUM (demo page test): apt-get install chromium, or set CHROMIUM")
if [ ${#missing[@]} -gt 0 ]; then
  printf 'missing:\n' >&2
  printf '  %s\n' "${missing[@]}" >&2
  exit 1
fi

step "cargo test"
cargo test --locked --workspace

# The JS, browser and SDK tests start the binary `cargo test` just built for the Rust tests
# (building it again with `cargo build` would compile the crate a second time: the test build's
# dependency features differ).
export BOUNDARY_BIN="$PWD/target/debug/boundary-realtime"

step "JS client tests (node --test, against the real server)"
(cd clients/js && npm ci --no-audit --no-fund --loglevel=error && npm test)

step "the Centrifugo SDKs against the real server: centrifuge-js (JSON and Protobuf builds)"
(cd clients/js && npm run test:centrifuge)

step "demo page in headless Chromium"
(cd clients/js && CHROMIUM="$CHROMIUM" npm run test:e2e)

step "backend examples (Python and Node) and the docs' snippets (README, grpc-api.md) against a live server"
if [ ! -x target/py-venv/bin/python ]; then
  python3 -m venv target/py-venv
fi
target/py-venv/bin/pip install --quiet --disable-pip-version-check -r examples/python/requirements.txt -r tests/sdk/requirements.txt
(cd examples/node && npm ci --no-audit --no-fund --loglevel=error)
(cd clients/js && PYTHON="$PWD/../../target/py-venv/bin/python" npm run test:examples)

step "the Centrifugo SDKs against the real server: centrifuge-python (JSON and Protobuf)"
target/py-venv/bin/python -W ignore::ResourceWarning tests/sdk/centrifuge_python_test.py

step "all tests passed"
