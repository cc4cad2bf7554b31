#!/usr/bin/env bash
# An A/B of two server builds on one bench run: OLD and NEW are started alternately, RUNS times
# each, each run on a fresh server and measured by this tree's load tool (the same client for
# both), so that the machine's drift falls on both sides alike. Prints each run's deliveries/s,
# server CPU per delivery, memory per connection, connection rate and delivery latency, then the
# medians and the NEW/OLD ratios. JSON reports go to target/ab/.
# Usage: scripts/ab.sh OLD_BIN NEW_BIN RUNS MODE [BENCH ARGS...]
#   e.g. scripts/ab.sh /tmp/old/boundary-realtime target/release/boundary-realtime 4 \
#          broadcast --conns 10000 --messages 400 --in-flight 8 --payload-bytes 100
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=$1 NEW=$2 RUNS=$3
shift 3
cargo build --release --quiet
. scripts/lib.sh
OUT=target/ab
rm -rf "$OUT"; mkdir -p "$OUT"
for r in $(seq "$RUNS"); do
  for side in old new; do
    bin=$OLD
    [ "$side" = new ] && bin=$NEW
    SERVER_BIN=$bin bench_fresh ab "$OUT/$side-$r.json" "$@"
  done
done
python3 - "$OUT" "$RUNS" <<'PY'
import json, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
figures = {
    "deliveries/s": lambda d: d["deliveries"]["per_second"],
    "server us per delivery": lambda d: d["server"]["cpu_us_per_delivery"],
    "KiB per idle connection": lambda d: d["server"]["kib_per_conn_idle"],
    "connections/s": lambda d: d["connect"]["per_second"],
    "delivery latency p50 ms": lambda d: d["latency_ms"]["p50"],
    "delivery latency p99 ms": lambda d: d["latency_ms"]["p99"],
}
med = {}
for side in ("old", "new"):
    reports = [json.load(open(f"{out}/{side}-{r}.json")) for r in range(1, runs + 1)]
    for name, get in figures.items():
        values = [get(d) or 0 for d in reports]
        med[(side, name)] = statistics.median(values)
        print(f"{side} {name}: " + ", ".join(f"{v:,.3f}" for v in values))
print()
print("| figure | old (median) | new (median) | new/old |")
print("| --- | --- | --- | --- |")
for name in figures:
    o, n = med[("old", name)], med[("new", name)]
    print(f"| {name} | {o:,.3f} | {n:,.3f} | {n / o if o else 0:.3f} |")
PY
