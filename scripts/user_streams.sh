#!/usr/bin/env bash
# The user-stream budget of docs/benchmarks.md: SendToUser with user streams off
# (REALTIME_USERS__HISTORY_SIZE=0) and on (the default), alternately, RUNS times (default 3),
# on a two-node cluster sharing a fresh Redis: connections on node a, calls through node b, so
# every call takes a broker round trip. Prints each run's calls/s and server CPU per delivery,
# then the medians and the on/off ratios. (On one node, scripts/ab.sh with a wrapper that sets
# the variable compares the two the same way.)
# Usage: scripts/user_streams.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
cargo build --release --quiet
OUT=target/user-streams
rm -rf "$OUT"; mkdir -p "$OUT"
B=./target/release/boundary-realtime
SECRET=user-streams-secret-$(date +%s%N)-$RANDOM$RANDOM$RANDOM$RANDOM
KEY=user-streams-key-$RANDOM$RANDOM$RANDOM
RPORT=16398
ulimit -n 20000 2>/dev/null || true
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; PIDS=(); }
trap cleanup EXIT

start_node() {
  local name=$1 http=$2 grpc=$3 size=$4
  REALTIME_JWT__SECRET=$SECRET REALTIME_GRPC__API_KEYS=$KEY REALTIME_NODE__ID=$name \
  REALTIME_BROKER__KIND=redis REALTIME_BROKER__REDIS_URL=redis://127.0.0.1:$RPORT \
  REALTIME_USERS__HISTORY_SIZE=$size \
    "$B" serve --http-listen 127.0.0.1:$http --grpc-listen 127.0.0.1:$grpc > "$OUT/$name-server.log" 2>&1 &
  PIDS+=($!)
  LAST_PID=$!
  for _ in $(seq 100); do grep -q 'listening' "$OUT/$name-server.log" 2>/dev/null && return 0; sleep 0.1; done
  echo "node $name did not start" >&2; return 1
}

for r in $(seq "$RUNS"); do
  for side in off on; do
    size=0; [ "$side" = on ] && size=32
    redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no > "$OUT/redis.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
    start_node a 18091 15061 "$size"; pa=$LAST_PID
    start_node b 18092 15062 "$size"; pb=$LAST_PID
    sleep 1
    "$B" bench user --conns 2000 --messages 20000 --in-flight 8 --payload-bytes 100 \
      --ws-url ws://127.0.0.1:18091/ws --grpc-url http://127.0.0.1:15062 --api-key "$KEY" \
      --secret "$SECRET" --server-pid "$pa,$pb" --quiet --json > "$OUT/$side-$r.json"
    cleanup
  done
done
python3 - "$OUT" "$RUNS" <<'PY'
import json, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
figures = {
    "calls/s": lambda d: d["deliveries"]["per_second"],
    "server us per delivery": lambda d: d["server"]["cpu_us_per_delivery"],
    "delivery latency p50 ms": lambda d: d["latency_ms"]["p50"],
}
med = {}
for side in ("off", "on"):
    reports = [json.load(open(f"{out}/{side}-{r}.json")) for r in range(1, runs + 1)]
    for name, get in figures.items():
        values = [get(d) or 0 for d in reports]
        print(f"{side} {name}: " + ", ".join(f"{v:,.3f}" for v in values))
        med[(side, name)] = statistics.median(values)
print("\n| figure | streams off (median) | streams on (median) | on/off |\n| --- | --- | --- | --- |")
for name in figures:
    a, b = med[("off", name)], med[("on", name)]
    print(f"| {name} | {a:,.3f} | {b:,.3f} | {b / a if a else 0:.3f} |")
PY
