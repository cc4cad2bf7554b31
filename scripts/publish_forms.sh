#!/usr/bin/env bash
# Publications per second through the three forms, on a fresh release server each run: unary
# Publish (8 calls in flight), PublishBatch (100 items a call, 8 in flight) and one
# PublishStream, each to 1,000 topics with one subscriber each, RUNS times (default 3), the
# forms interleaved. Prints each run and the medians (publications/s, server CPU per
# publication). JSON reports go to target/publish-forms/.
# Usage: scripts/publish_forms.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
cargo build --release --quiet
. scripts/lib.sh
OUT=target/publish-forms
rm -rf "$OUT"; mkdir -p "$OUT"
for r in $(seq "$RUNS"); do
  for form in unary batch stream; do
    extra=()
    [ "$form" = batch ] && extra=(--publish-batch 100)
    [ "$form" = stream ] && extra=(--publish-stream)
    bench_fresh forms "$OUT/$form-$r.json" topic --conns 1000 --groups 1000 --messages 50000 \
      --in-flight 8 --payload-bytes 100 "${extra[@]}"
  done
done
python3 - "$OUT" "$RUNS" <<'PY'
import json, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
print("| form | publications/s (median) | runs | server us per publication |")
print("| --- | --- | --- | --- |")
base = None
for form in ("unary", "batch", "stream"):
    ds = [json.load(open(f"{out}/{form}-{r}.json")) for r in range(1, runs + 1)]
    rate = [d["calls"]["per_second"] for d in ds]
    cpu = [d["server"]["cpu_us_per_delivery"] for d in ds]
    m = statistics.median(rate)
    base = base or m
    print(f"| {form} | {m:,.0f} ({m / base:.1f}x) | {', '.join(f'{x:,.0f}' for x in rate)} | {statistics.median(cpu)} |")
PY
