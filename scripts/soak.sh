#!/usr/bin/env bash
# Soak test (not part of CI): starts a release server on loopback, then runs examples/soak.rs
# against it for MINUTES (default 10) with STABLE held and CHURN churning connections.
# Prints progress every 30 s and a SUMMARY JSON line at the end; the server's log goes to
# target/soak-server.log. Usage: scripts/soak.sh [MINUTES] [STABLE] [CHURN]
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${1:-10}
STABLE=${2:-2000}
CHURN=${3:-1000}
cargo build --release --quiet --bin boundary-realtime --example soak
. scripts/lib.sh
start_server soak
./target/release/examples/soak --ws-url ws://127.0.0.1:18080/ws --grpc-url http://127.0.0.1:15051 \
  --api-key "$KEY" --secret "$SECRET" --server-pid "$PID" \
  --stable "$STABLE" --churn "$CHURN" --minutes "$MINUTES"
