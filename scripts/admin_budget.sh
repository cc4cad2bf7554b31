#!/usr/bin/env bash
# The admin console's budget (docs/benchmarks.md, "The admin console"): a release node holding
# CONNS idle connections (bench idle); its CPU over WINDOW seconds with no console open, then
# with the console open in headless Chromium (signed in, live stream on, first page listed),
# interleaved RUNS times; and the console's first render (sign-in click to the connections
# listed). Prints each run and the medians.
# Usage: scripts/admin_budget.sh [RUNS] [CONNS] [WINDOW]   (defaults 3 10000 30)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}; CONNS=${2:-10000}; WINDOW=${3:-30}
cargo build --release --quiet
(cd clients/js && [ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error)
OUT=target/admin-budget; rm -rf "$OUT"; mkdir -p "$OUT"
B=./target/release/boundary-realtime
SECRET=admin-budget-secret-$(date +%s%N)-$RANDOM$RANDOM$RANDOM$RANDOM
KEY=admin-budget-key-$RANDOM$RANDOM$RANDOM
ulimit -n 20000 2>/dev/null || true
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

REALTIME_JWT__SECRET=$SECRET REALTIME_GRPC__API_KEYS=$KEY REALTIME_ADMIN__ENABLED=true \
  REALTIME_LIMITS__MAX_CONNECTIONS_PER_USER=0 \
  "$B" serve --http-listen 127.0.0.1:18090 --grpc-listen 127.0.0.1:15090 > "$OUT/server.log" 2>&1 &
SERVER=$!; PIDS+=($SERVER)
for _ in $(seq 100); do grep -q listening "$OUT/server.log" && break; sleep 0.1; done
"$B" bench idle --conns "$CONNS" --hold 100000 --ws-url ws://127.0.0.1:18090/ws \
  --secret "$SECRET" --quiet > "$OUT/bench.log" 2>&1 &
PIDS+=($!)
conns() { curl -s -H "Authorization: Bearer $KEY" -d '{}' http://127.0.0.1:18090/api/v1/GetStats \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["connections"])'; }
for _ in $(seq 600); do [ "$(conns)" = "$CONNS" ] && break; sleep 0.5; done
echo "connections: $(conns)"
sleep 5 # the connects' after-effects settle

ticks() { awk '{print $14+$15}' "/proc/$SERVER/stat"; }
HZ=$(getconf CLK_TCK)
# cpu SECONDS: the server's CPU over that long, in percent of one core.
cpu() { local a b; a=$(ticks); sleep "$1"; b=$(ticks); python3 -c "print(round(($b-$a)*100/$HZ/$1, 2))"; }

printf 'run\twithout %%\twith %%\tfirst render ms\n'
for r in $(seq "$RUNS"); do
  without=$(cpu "$WINDOW")
  node clients/js/bench/admin-open.js http://127.0.0.1:18090/admin "$KEY" $((WINDOW + 10)) > "$OUT/page-$r.log" 2>&1 &
  PAGE=$!
  for _ in $(seq 300); do grep -q '^ready' "$OUT/page-$r.log" && break; sleep 0.1; done
  render=$(awk '/^ready/{print $2}' "$OUT/page-$r.log")
  sleep 2 # the sign-in's first requests done: measure the console held open
  with=$(cpu "$WINDOW")
  wait "$PAGE" || true
  printf '%s\t%s\t%s\t%s\n' "$r" "$without" "$with" "$render" | tee -a "$OUT/runs.tsv"
  sleep 3
done
python3 - "$OUT/runs.tsv" <<'PY'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().split("\n") if l]
w = statistics.median(float(r[1]) for r in rows)
o = statistics.median(float(r[2]) for r in rows)
f = statistics.median(float(r[3]) for r in rows)
print(f"median: without {w:.2f} % of a core, with the console open {o:.2f} %, difference {o - w:+.2f} points; first render {f:.0f} ms")
PY
