#!/usr/bin/env bash
# The cluster budget of docs/benchmarks.md: each figure measured on a fresh single node and on
# a fresh two-node cluster sharing a fresh Redis, side by side in one run, RUNS times (default
# 3). Writes one JSON per measurement into target/cluster-budget/ (NAME-TOPOLOGY-RUN.json, plus
# Redis figures for the idle runs), then prints the medians as a Markdown table.
# Usage: scripts/cluster_budget.sh [RUNS]   (ONLY=stream,publish measures just those)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
cargo build --release --quiet
OUT=target/cluster-budget
rm -rf "$OUT"; mkdir -p "$OUT"
B=./target/release/boundary-realtime
SECRET=cluster-budget-secret-$(date +%s%N)-$RANDOM$RANDOM$RANDOM$RANDOM
KEY=cluster-budget-key-$RANDOM$RANDOM$RANDOM
RPORT=16399
ulimit -n 20000 2>/dev/null || true
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; PIDS=(); }
trap cleanup EXIT

rcli() { redis-cli -p "$RPORT" "$@"; }

start_redis() {
  redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no > "$OUT/redis.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do rcli ping >/dev/null 2>&1 && return 0; sleep 0.05; done
  echo "redis-server did not start" >&2; return 1
}

# start_node NAME HTTP_PORT GRPC_PORT [redis]
start_node() {
  local name=$1 http=$2 grpc=$3 broker=${4:-memory}
  REALTIME_JWT__SECRET=$SECRET REALTIME_GRPC__API_KEYS=$KEY REALTIME_NODE__ID=$name \
  REALTIME_BROKER__KIND=$broker REALTIME_BROKER__REDIS_URL=redis://127.0.0.1:$RPORT \
    "$B" serve --http-listen 127.0.0.1:$http --grpc-listen 127.0.0.1:$grpc \
    > "$OUT/$name-server.log" 2>&1 &
  local pid=$!
  PIDS+=($pid)
  for _ in $(seq 100); do
    grep -q 'listening' "$OUT/$name-server.log" 2>/dev/null && { LAST_PID=$pid; return 0; }
    sleep 0.1
  done
  echo "node $name did not start; see $OUT/$name-server.log" >&2; return 1
}

# measure NAME TOPOLOGY RUN BENCH_ARGS...   (TOPOLOGY: single | cluster | cluster-other)
# cluster: connections over nodes a and b, calls through b; cluster-other: every connection
# on a, calls through b (so each delivery crosses Redis).
measure() {
  local name=$1 topo=$2 run=$3; shift 3
  # ONLY=name1,name2 measures just those (for a quick look; the report then lacks the rest).
  if [ -n "${ONLY:-}" ] && [[ ",$ONLY," != *",$name,"* ]]; then return 0; fi
  local ws grpc pids
  if [ "$topo" = single ]; then
    start_node single 18080 15051; pids=$LAST_PID
    ws=ws://127.0.0.1:18080/ws; grpc=http://127.0.0.1:15051
  else
    start_redis
    start_node a 18081 15052 redis; local pa=$LAST_PID
    start_node b 18082 15053 redis; local pb=$LAST_PID
    pids=$pa,$pb; grpc=http://127.0.0.1:15053
    if [ "$topo" = cluster-other ]; then ws=ws://127.0.0.1:18081/ws
    else ws=ws://127.0.0.1:18081/ws,ws://127.0.0.1:18082/ws; fi
    sleep 1  # the nodes' first heartbeats
    rcli info memory | grep '^used_memory:' | cut -d: -f2 | tr -d '\r' > "$OUT/$name-$topo-$run.redis-mem-before"
    rcli info stats | grep '^total_commands_processed:' | cut -d: -f2 | tr -d '\r' > "$OUT/$name-$topo-$run.redis-cmds-before"
    rcli info cpu | grep '^used_cpu_user:' | cut -d: -f2 | tr -d '\r' > "$OUT/$name-$topo-$run.redis-cpu-before"
  fi
  "$B" bench "$@" --ws-url "$ws" --grpc-url "$grpc" --api-key "$KEY" --secret "$SECRET" \
    --server-pid "$pids" --quiet --json > "$OUT/$name-$topo-$run.json"
  if [ "$topo" != single ]; then
    rcli info memory | grep '^used_memory:' | cut -d: -f2 | tr -d '\r' > "$OUT/$name-$topo-$run.redis-mem-after"
    rcli info stats | grep '^total_commands_processed:' | cut -d: -f2 | tr -d '\r' > "$OUT/$name-$topo-$run.redis-cmds-after"
    rcli info cpu | grep '^used_cpu_user:' | cut -d: -f2 | tr -d '\r' > "$OUT/$name-$topo-$run.redis-cpu-after"
    rcli info commandstats | grep '^cmdstat_evalsha:' | sed 's/.*usec_per_call=\([0-9.]*\).*/\1/' > "$OUT/$name-$topo-$run.redis-evalsha-usec"
  fi
  cleanup
}

for r in $(seq "$RUNS"); do
  echo "run $r of $RUNS" >&2
  for topo in single cluster; do
    # A burst: calls back to back with 8 (and 32) in flight; 1 in flight is call-latency bound.
    measure broadcast "$topo" "$r" broadcast --conns 10000 --messages 400 --in-flight 8 --payload-bytes 100
    measure broadcast32 "$topo" "$r" broadcast --conns 10000 --messages 400 --in-flight 32 --payload-bytes 100
    measure broadcast1 "$topo" "$r" broadcast --conns 10000 --messages 200 --payload-bytes 100
    measure fanout "$topo" "$r" topic --conns 10000 --groups 1 --messages 400 --in-flight 8 --payload-bytes 100
    measure fanout32 "$topo" "$r" topic --conns 10000 --groups 1 --messages 400 --in-flight 32 --payload-bytes 100
    measure publish "$topo" "$r" topic --conns 1000 --groups 1000 --messages 20000 --in-flight 8 --payload-bytes 100
    measure stream "$topo" "$r" topic --conns 1000 --groups 1000 --messages 100000 --publish-stream --payload-bytes 100
    measure connect "$topo" "$r" idle --conns 10000 --hold 2
  done
  measure user single "$r" user --conns 10000 --messages 5000 --rate 1000 --payload-bytes 100
  measure user cluster-other "$r" user --conns 10000 --messages 5000 --rate 1000 --payload-bytes 100
done
python3 scripts/cluster_report.py "$OUT"
