#!/usr/bin/env bash
# Server memory per idle TLS WebSocket connection (docs/benchmarks.md#tls-accept-loop):
# starts BIN with TLS on the HTTP listener (a throwaway self-signed certificate), opens N wss
# connections from Node (clients/js's `ws`; run `npm ci` there first), and prints the server's
# RSS growth per connection once every connection is welcomed and 3 s have passed.
# bench does not speak wss, hence this script.
# Usage: scripts/tls_idle_memory.sh [BIN] [N]   (defaults: target/release/boundary-realtime 5000)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/boundary-realtime}
N=${2:-5000}
DIR=$(mktemp -d)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$DIR/key.pem" \
  -out "$DIR/cert.pem" -days 1 -subj "/CN=localhost" 2>/dev/null
SECRET=tls-memory-secret-$(date +%s%N)-0123456789abcdef
KEY=tls-memory-api-key-0123456789
ulimit -n 20000
REALTIME_JWT__SECRET=$SECRET REALTIME_GRPC__API_KEYS=$KEY REALTIME_LIMITS__MAX_CONNECTIONS_PER_USER=0 \
REALTIME_HTTP__TLS_CERT_FILE=$DIR/cert.pem REALTIME_HTTP__TLS_KEY_FILE=$DIR/key.pem \
  "$BIN" serve --http-listen 127.0.0.1:18543 --grpc-listen 127.0.0.1:15543 > "$DIR/server.log" 2>&1 &
PID=$!
CPID=""
trap 'kill $PID 2>/dev/null; [ -n "$CPID" ] && kill $CPID 2>/dev/null; rm -rf "$DIR"; true' EXIT
for _ in $(seq 100); do grep -q listening "$DIR/server.log" && break; sleep 0.1; done
TOKEN=$(REALTIME_JWT__SECRET=$SECRET "$BIN" token --sub m --ttl 3600)
rss() { awk '/VmRSS/ {print $2}' "/proc/$PID/status"; }
BEFORE=$(rss)
cat > "$DIR/open.mjs" <<'JS'
import WebSocket from "ws";
const [url, token, n] = [process.argv[2], process.argv[3], Number(process.argv[4])];
let ready = 0, failed = 0;
const socks = [];
for (let i = 0; i < n; i += 200) {
  await Promise.all(Array.from({ length: Math.min(200, n - i) }, () => new Promise((resolve) => {
    const ws = new WebSocket(url, { rejectUnauthorized: false, headers: { authorization: `Bearer ${token}` } });
    socks.push(ws);
    ws.on("message", (m) => { if (String(m).includes('"connected"')) { ready++; resolve(); } });
    ws.on("error", () => { failed++; resolve(); });
  })));
}
console.log(`READY ${ready} failed ${failed}`);
setInterval(() => {}, 1 << 30);
JS
cp "$DIR/open.mjs" clients/js/.tls-open.mjs
node clients/js/.tls-open.mjs wss://127.0.0.1:18543/ws "$TOKEN" "$N" > "$DIR/client.log" 2>&1 &
CPID=$!
for _ in $(seq 600); do grep -q READY "$DIR/client.log" && break; sleep 0.1; done
rm -f clients/js/.tls-open.mjs
sleep 3
AFTER=$(rss)
echo "$(head -1 "$DIR/client.log"); RSS $BEFORE -> $AFTER KiB: $(python3 -c "print(round(($AFTER-$BEFORE)/$N, 2))") KiB per connection"
