# Shared by the measurement scripts: start a release server on loopback with a fresh secret and
# API key, wait until it listens, and stop it when the script exits.
# Usage: . scripts/lib.sh; start_server NAME   (sets SECRET, KEY, PID; log in target/NAME-server.log)
# or bench_fresh NAME FILE BENCH_ARGS... (start, measure, stop).
# SERVER_BIN names another server binary to start (default: this tree's release build).
start_server() {
  local name=$1
  SECRET=$name-secret-$(date +%s%N)-$RANDOM$RANDOM$RANDOM$RANDOM
  KEY=$name-api-key-$RANDOM$RANDOM$RANDOM
  ulimit -n 20000 2>/dev/null || true
  REALTIME_JWT__SECRET=$SECRET REALTIME_GRPC__API_KEYS=$KEY REALTIME_NODE__ID=$name \
    "${SERVER_BIN:-./target/release/boundary-realtime}" serve --http-listen 127.0.0.1:18080 --grpc-listen 127.0.0.1:15051 \
    > "target/$name-server.log" 2>&1 &
  PID=$!
  trap 'kill $PID 2>/dev/null || true' EXIT
  for _ in $(seq 100); do
    grep -q 'listening' "target/$name-server.log" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "the server did not start; see target/$name-server.log" >&2
  return 1
}

# One bench run on a fresh server, its JSON report to FILE: bench_fresh NAME FILE BENCH_ARGS...
# (SERVER_BIN, when set, names the server binary to start.)
bench_fresh() {
  local name=$1 file=$2
  shift 2
  start_server "$name"
  ./target/release/boundary-realtime bench "$@" --ws-url ws://127.0.0.1:18080/ws \
    --grpc-url http://127.0.0.1:15051 --api-key "$KEY" --secret "$SECRET" --server-pid "$PID" \
    --quiet --json > "$file"
  kill "$PID"; wait "$PID" 2>/dev/null || true
  trap - EXIT
}
