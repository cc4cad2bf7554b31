#!/usr/bin/env bash
# Publish fan-out measurement (not part of CI): a release server on loopback and
# examples/fanout.rs with SUBSCRIBERS (default 10000) subscribers of one topic, PUBLISHES
# (default 200) publishes. Usage: scripts/fanout.sh [SUBSCRIBERS] [PUBLISHES]
set -euo pipefail
cd "$(dirname "$0")/.."
SUBSCRIBERS=${1:-10000}
PUBLISHES=${2:-200}
cargo build --release --quiet --bin boundary-realtime --example fanout
SECRET=fanout-secret-$RANDOM$RANDOM$RANDOM
KEY=fanout-api-key-$RANDOM$RANDOM$RANDOM
ulimit -n 20000 2>/dev/null || true
REALTIME_JWT__SECRET=$SECRET REALTIME_GRPC__API_KEYS=$KEY REALTIME_NODE__ID=fanout \
  ./target/release/boundary-realtime serve --http-listen 127.0.0.1:18080 --grpc-listen 127.0.0.1:15051 \
  > target/fanout-server.log 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  grep -q 'listening' target/fanout-server.log 2>/dev/null && break
  sleep 0.1
done
./target/release/examples/fanout --api-key "$KEY" --secret "$SECRET" --server-pid "$PID" \
  --subscribers "$SUBSCRIBERS" --publishes "$PUBLISHES"
