#!/usr/bin/env bash
# The chaos run of docs/benchmarks.md: three nodes over two Redis instances (nothing kept on
# disk), clients that stay subscribed and recover with `since`, a steady publisher, and every
# 20 s a node killed with SIGKILL (then started again) or a Redis instance restarted, in turn.
# At the end the load tool's chaos mode checks that every acknowledged publication reached
# each subscriber of its topic exactly once and in order, or that the subscriber was told
# `recovered: false`: no silent gap, no repeat. Exits 1 on any violation.
# Usage: scripts/chaos.sh [SECONDS]   (default 660: eleven minutes of publishing)
# Env: RATE publications/s (default 20), CLIENTS (default 30), TOPICS (default 6),
# EVERY seconds between failures (default 20), PERSIST=1 to run Redis with an append-only file
# fsynced at every write (a restarted instance then loses nothing, and clients recover).
# Writes target/chaos/ (logs, report.json).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TOTAL=${1:-660}
RATE=${RATE:-20}
CLIENTS=${CLIENTS:-30}
TOPICS=${TOPICS:-6}
EVERY=${EVERY:-20}
command -v redis-server >/dev/null || { echo "needs redis-server" >&2; exit 1; }
cargo build --release --quiet
B=$PWD/target/release/boundary-realtime
OUT=target/chaos
rm -rf "$OUT"; mkdir -p "$OUT"
SECRET=chaos-secret-$(date +%s%N)-$RANDOM$RANDOM$RANDOM$RANDOM
KEY=chaos-key-$RANDOM$RANDOM$RANDOM
RPORTS=(16479 16480)
HTTP=(18191 18192 18193)
GRPC=(15191 15192 15193)
URLS="redis://127.0.0.1:${RPORTS[0]},redis://127.0.0.1:${RPORTS[1]}"
declare -A PID
stop_all() { for p in "${PID[@]}"; do kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap stop_all EXIT
ulimit -n 20000 2>/dev/null || true

start_redis() {  # start_redis J
  local port=${RPORTS[$1]}
  local keep=(--save "" --appendonly no)
  if [ "${PERSIST:-0}" = 1 ]; then
    mkdir -p "$OUT/data$1"
    keep=(--save "" --appendonly yes --appendfsync always --dir "$PWD/$OUT/data$1")
  fi
  redis-server --port "$port" --bind 127.0.0.1 "${keep[@]}" >> "$OUT/redis$1.log" 2>&1 &
  PID[redis$1]=$!
  for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && return 0; sleep 0.05; done
  echo "redis $1 did not start" >&2; return 1
}

start_node() {  # start_node I
  REALTIME_JWT__SECRET=$SECRET REALTIME_GRPC__API_KEYS=$KEY REALTIME_NODE__ID=node$1 \
  REALTIME_BROKER__KIND=redis REALTIME_BROKER__REDIS_URLS=$URLS REALTIME_BROKER__NODE_TTL_MS=3000 \
    "$B" serve --http-listen 127.0.0.1:${HTTP[$1]} --grpc-listen 127.0.0.1:${GRPC[$1]} \
    >> "$OUT/node$1.log" 2>&1 &
  PID[node$1]=$!
}

wait_ready() {  # wait_ready I
  for _ in $(seq 200); do
    curl -sf "http://127.0.0.1:${HTTP[$1]}/readyz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "node $1 not ready; see $OUT/node$1.log" >&2
}

start_redis 0; start_redis 1
for i in 0 1 2; do start_node "$i"; done
for i in 0 1 2; do wait_ready "$i"; done

WS=$(printf 'ws://127.0.0.1:%s/ws,' "${HTTP[@]}"); WS=${WS%,}
GR=$(printf 'http://127.0.0.1:%s,' "${GRPC[@]}"); GR=${GR%,}
"$B" bench chaos --ws-url "$WS" --grpc-url "$GR" --api-key "$KEY" --secret "$SECRET" \
  --conns "$CLIENTS" --groups "$TOPICS" --rate "$RATE" --messages $((SECONDS_TOTAL * RATE)) \
  --drain-timeout 60s --timeout $((SECONDS_TOTAL + 300))s --quiet --json \
  > "$OUT/report.json" 2> "$OUT/bench.log" &
BENCH=$!

# The failures, in turn: a node killed (and started again 2 s later), then an instance
# restarted (down 2 s), until 30 s before the publisher ends.
step=0
started=$(date +%s)
while [ $(( $(date +%s) - started + EVERY + 30 )) -lt "$SECONDS_TOTAL" ] && kill -0 "$BENCH" 2>/dev/null; do
  sleep "$EVERY"
  if [ $((step % 2)) -eq 0 ]; then
    i=$(( (step / 2) % 3 ))
    echo "$(date +%T) SIGKILL node$i" | tee -a "$OUT/events.log"
    kill -9 "${PID[node$i]}" 2>/dev/null || true
    wait "${PID[node$i]}" 2>/dev/null || true
    sleep 2
    start_node "$i"
  else
    j=$(( (step / 2) % 2 ))
    echo "$(date +%T) restart redis$j" | tee -a "$OUT/events.log"
    kill -9 "${PID[redis$j]}" 2>/dev/null || true
    wait "${PID[redis$j]}" 2>/dev/null || true
    sleep 2
    start_redis "$j"
  fi
  step=$((step + 1))
done
echo "$(date +%T) no more failures; waiting for the publisher and the check" | tee -a "$OUT/events.log"
wait "$BENCH" || { echo "the load tool failed:" >&2; cat "$OUT/bench.log" >&2; exit 1; }
cat "$OUT/bench.log" >&2
python3 - "$OUT/report.json" "$step" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["chaos"]
print(f"failures injected: {sys.argv[2]}")
for k in ("published", "acknowledged", "gave_up", "clients", "reconnects", "received", "told_lost", "violations"):
    print(f"{k}: {r[k]}")
for v in r["first_violations"]:
    print("  " + v)
sys.exit(1 if r["violations"] else 0)
PY
