#!/usr/bin/env bash
# The performance budget of docs/benchmarks.md: every figure from a fresh release server on
# loopback, measured by `boundary-realtime bench`, RUNS times (default 3). Writes one JSON per
# run into target/budget/, then prints the medians and redraws docs/bench-chart.svg.
# Usage: scripts/budget.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
cargo build --release --quiet
. scripts/lib.sh
OUT=target/budget
mkdir -p "$OUT"

# One measurement on a fresh server: measure NAME MODE ARGS...
measure() {
  local name=$1; shift
  bench_fresh budget "$OUT/$name.json" "$@"
}

for r in $(seq "$RUNS"); do
  echo "run $r of $RUNS" >&2
  measure "idle-15000-$r" idle --conns 15000 --hold 3
  for n in 1000 5000 10000 15000; do
    # A burst: 400 Broadcast calls back to back, 8 in flight (as a busy backend sends them).
    measure "broadcast-$n-$r" broadcast --conns "$n" --messages 400 --in-flight 8 --payload-bytes 100
    measure "user-$n-$r" user --conns "$n" --messages 5000 --rate 1000 --payload-bytes 100
  done
done
python3 scripts/budget_report.py "$OUT" docs/bench-chart.svg
