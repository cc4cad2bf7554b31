#!/usr/bin/env bash
# The consumers' budget (docs/benchmarks.md, "Consumers"): a release node with a PostgreSQL
# outbox consumer (batch_size 100) and a Redis stream consumer; one subscriber
# (clients/js/bench/consumer-sink.js). Per run: ROWS rows inserted in one transaction, the
# rate at which they reach the subscriber; ENTRIES stream entries added at once, the same;
# then 10,000 single-row transactions from four writers at about 1,000 a second, the commit-to-delivery
# latency (median, p99). RUNS runs; prints each and the medians.
# Needs the machine's PostgreSQL (127.0.0.1:5432, trust) and redis-server.
# Usage: scripts/consumer_budget.sh [RUNS] [ROWS] [ENTRIES]   (defaults 3 100000 200000)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}; ROWS=${2:-100000}; ENTRIES=${3:-200000}
cargo build --release --quiet
(cd clients/js && [ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error)
OUT=target/consumer-budget; rm -rf "$OUT"; mkdir -p "$OUT"
B=./target/release/boundary-realtime
SECRET=consumer-budget-secret-$(date +%s%N)-$RANDOM$RANDOM$RANDOM$RANDOM
KEY=consumer-budget-key-$RANDOM$RANDOM$RANDOM
DB=rt_consumer_budget_$$
RPORT=16499
PSQL="psql -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1 -q"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true
  $PSQL -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT
$PSQL -d postgres -c "CREATE DATABASE $DB"
redis-server --port $RPORT --bind 127.0.0.1 --save "" --appendonly no > "$OUT/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do redis-cli -p $RPORT ping >/dev/null 2>&1 && break; sleep 0.05; done
cat > "$OUT/config.toml" <<TOML
[topics]
public = ["**"]
[[consumers]]
name = "outbox"
kind = "postgres"
dsn = "host=127.0.0.1 port=5432 user=postgres dbname=$DB"
batch_size = 100
[[consumers]]
name = "stream"
kind = "redis_stream"
url = "redis://127.0.0.1:$RPORT"
stream = "realtime"
batch_size = 100
TOML
REALTIME_JWT__SECRET=$SECRET REALTIME_GRPC__API_KEYS=$KEY "$B" serve --config "$OUT/config.toml" \
  --http-listen 127.0.0.1:18095 --grpc-listen 127.0.0.1:15095 > "$OUT/server.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do grep -q listening "$OUT/server.log" && break; sleep 0.1; done
for _ in $(seq 100); do $PSQL -d $DB -c "SELECT 1 FROM realtime_outbox_leases" >/dev/null 2>&1 && break; sleep 0.1; done
TOKEN=$(REALTIME_JWT__SECRET=$SECRET "$B" token --sub bench)

# sink TOPIC COUNT: starts the subscriber, waits until it is subscribed; its output in $OUT/sink.
sink() {
  node clients/js/bench/consumer-sink.js ws://127.0.0.1:18095/ws "$TOKEN" "$1" "$2" > "$OUT/sink" 2>&1 &
  SINK=$!
  for _ in $(seq 100); do grep -q ready "$OUT/sink" && return 0; sleep 0.05; done
  echo "the subscriber did not subscribe" >&2; return 1
}
field() { tail -1 "$OUT/sink" | python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

printf 'run\toutbox/s\tstream/s\tp50 ms\tp99 ms\trate/s\n'
for r in $(seq "$RUNS"); do
  sink "outbox$r" "$ROWS"
  $PSQL -d $DB -c "INSERT INTO realtime_outbox (method, payload) SELECT 'publish', json_build_object('topic','outbox$r','message',json_build_object('type','n','payload',json_build_object('n',g))) FROM generate_series(1,$ROWS) g"
  wait $SINK; outbox=$(field perSecond)

  sink "stream$r" "$ENTRIES"
  python3 - "$ENTRIES" "stream$r" <<'PY' | redis-cli -p $RPORT --pipe > /dev/null
import sys
n, topic = int(sys.argv[1]), sys.argv[2]
out = sys.stdout
for i in range(1, n + 1):
    p = '{"topic":"%s","message":{"type":"n","payload":{"n":%d}}}' % (topic, i)
    args = ["XADD", "realtime", "*", "method", "publish", "payload", p]
    out.write("*%d\r\n" % len(args) + "".join("$%d\r\n%s\r\n" % (len(a.encode()), a) for a in args))
PY
  wait $SINK; stream=$(field perSecond)

  sink "latency$r" 10000
  # Four writers, each a single-row transaction about every 4 ms: about 1,000 commits a second.
  for w in 0 1 2 3; do
    $PSQL -d $DB -c "DO \$\$ BEGIN FOR i IN 1..2500 LOOP
        INSERT INTO realtime_outbox (method, payload) SELECT 'publish', json_build_object('topic','latency$r','message',json_build_object('type','n','payload',json_build_object('n',i*4+$w,'t',(extract(epoch FROM clock_timestamp())*1000)::bigint)));
        COMMIT; PERFORM pg_sleep(0.0028); END LOOP; END \$\$" &
  done
  wait $SINK
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$outbox" "$stream" "$(field latencyMsP50)" "$(field latencyMsP99)" "$(field perSecond)" | tee -a "$OUT/runs.tsv"
done
python3 - "$OUT/runs.tsv" <<'PY'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().split("\n") if l]
m = lambda i: statistics.median(float(r[i]) for r in rows)
print(f"median: outbox {m(1):.0f}/s, stream {m(2):.0f}/s, commit-to-delivery p50 {m(3):.0f} ms, p99 {m(4):.0f} ms at {m(5):.0f} rows/s")
PY
