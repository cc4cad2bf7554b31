#!/usr/bin/env bash
# Publish fan-out measurement (not part of CI): a release server on loopback and
# examples/fanout.rs with SUBSCRIBERS (default 10000) subscribers of one topic, PUBLISHES
# (default 200) publishes. Usage: scripts/fanout.sh [SUBSCRIBERS] [PUBLISHES]
set -euo pipefail
cd "$(dirname "$0")/.."
SUBSCRIBERS=${1:-10000}
PUBLISHES=${2:-200}
cargo build --release --quiet --bin boundary-realtime --example fanout
. scripts/lib.sh
start_server fanout
./target/release/examples/fanout --api-key "$KEY" --secret "$SECRET" --server-pid "$PID" \
  --subscribers "$SUBSCRIBERS" --publishes "$PUBLISHES"
