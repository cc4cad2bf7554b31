#!/usr/bin/env bash
# The Centrifugo endpoint's cost beside the native endpoint's (docs/benchmarks.md#centrifugo-endpoint):
# idle memory per connection (15,000 connections) and server CPU per delivery in a broadcast
# burst (10,000 connections, 400 Broadcast calls, 8 in flight), for native, centrifuge-json and
# centrifuge-protobuf, each on a fresh release server, interleaved, RUNS times (default 3).
# Writes one JSON per run into target/centrifuge-budget/ and prints the medians and ratios.
# Usage: scripts/centrifuge_budget.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
cargo build --release --quiet
. scripts/lib.sh
OUT=target/centrifuge-budget
mkdir -p "$OUT"
B=./target/release/boundary-realtime

measure() {
  local name=$1 protocol=$2; shift 2
  local path=/ws
  [ "$protocol" = native ] || path=/connection/websocket
  start_server cfbudget
  "$B" bench "$@" --protocol "$protocol" --ws-url "ws://127.0.0.1:18080$path" \
    --grpc-url 127.0.0.1:15051 --api-key "$KEY" --secret "$SECRET" --server-pid "$PID" \
    --quiet --json > "$OUT/$name.json"
  kill "$PID"; wait "$PID" 2>/dev/null || true
  trap - EXIT
}

for r in $(seq "$RUNS"); do
  for p in native centrifuge-json centrifuge-protobuf; do
    echo "run $r of $RUNS: $p" >&2
    measure "idle-$p-$r" "$p" idle --conns 15000 --hold 3
    measure "broadcast-$p-$r" "$p" broadcast --conns 10000 --messages 400 --in-flight 8 --payload-bytes 100
  done
done

python3 - "$OUT" "$RUNS" <<'PY'
import json, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
def med(kind, p, key):
    vals = [json.load(open(f"{out}/{kind}-{p}-{r}.json"))["server"][key] for r in range(1, runs + 1)]
    return statistics.median(vals)
rows = []
for p in ["native", "centrifuge-json", "centrifuge-protobuf"]:
    rows.append((p, med("idle", p, "kib_per_conn_idle"), med("broadcast", p, "cpu_us_per_delivery")))
base = rows[0]
print(f"{'protocol':<22}{'KiB/conn idle':>15}{'ratio':>8}{'us CPU/delivery':>18}{'ratio':>8}")
for p, kib, us in rows:
    print(f"{p:<22}{kib:>15.2f}{kib / base[1]:>8.2f}{us:>18.3f}{us / base[2]:>8.2f}")
PY
