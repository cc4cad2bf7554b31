#!/usr/bin/env bash
# A local cluster to try cluster mode: redis-server instances (nothing kept on disk) and three
# nodes sharing them, on 127.0.0.1. Prints each node's URLs, a token and an API key; Ctrl-C
# stops everything. Needs redis-server (Debian: apt-get install redis-server).
# Usage: scripts/cluster.sh [NODES] [INSTANCES]   (defaults 3 and 1; with 2 or more instances
# the nodes spread topics and users over them with [broker] redis_urls)
# Ports: Redis instance j on REDIS_PORT+j-1 (default 16379); node i listens on
# HTTP_BASE_PORT+i and GRPC_BASE_PORT+i (defaults 18080 and 15050).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-3}
INSTANCES=${2:-1}
RPORT=${REDIS_PORT:-16379}
HTTP_BASE=${HTTP_BASE_PORT:-18080}
GRPC_BASE=${GRPC_BASE_PORT:-15050}
command -v redis-server >/dev/null || { echo "needs redis-server (apt-get install redis-server)" >&2; exit 1; }
cargo build --release --quiet
B=$PWD/target/release/boundary-realtime
mkdir -p target/cluster
SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
KEY=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
PIDS=()
stop() { trap - EXIT INT TERM; echo; echo "stopping"; kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap stop EXIT INT TERM
ulimit -n 20000 2>/dev/null || true

URLS=()
for j in $(seq "$INSTANCES"); do
  port=$((RPORT + j - 1))
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no > "target/cluster/redis$j.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
  URLS+=("redis://127.0.0.1:$port")
done
# One instance: redis_url. Several: redis_urls, the same list in the same order on every node.
LIST=$(IFS=,; echo "${URLS[*]}")
[ "$INSTANCES" -gt 1 ] && export REALTIME_BROKER__REDIS_URLS=$LIST

for i in $(seq "$N"); do
  REALTIME_JWT__SECRET=$SECRET REALTIME_GRPC__API_KEYS=$KEY REALTIME_NODE__ID=node$i \
  REALTIME_BROKER__KIND=redis REALTIME_BROKER__REDIS_URL=redis://127.0.0.1:$RPORT \
  REALTIME_TOPICS__PUBLIC='**' REALTIME_HTTP__DEMO=true \
    "$B" serve --http-listen 127.0.0.1:$((HTTP_BASE + i)) --grpc-listen 127.0.0.1:$((GRPC_BASE + i)) \
    > "target/cluster/node$i.log" 2>&1 &
  PIDS+=($!)
done
for i in $(seq "$N"); do
  for _ in $(seq 100); do grep -q listening "target/cluster/node$i.log" && break; sleep 0.1; done
  grep -q listening "target/cluster/node$i.log" || { echo "node$i did not start: target/cluster/node$i.log" >&2; exit 1; }
done

TOKEN=$(REALTIME_JWT__SECRET=$SECRET "$B" token --sub demo-user --topic '**' --ttl 86400)
echo "Redis     $LIST"
for i in $(seq "$N"); do
  echo "node$i     ws://127.0.0.1:$((HTTP_BASE + i))/ws   gRPC 127.0.0.1:$((GRPC_BASE + i))   demo http://127.0.0.1:$((HTTP_BASE + i))/demo#token=$TOKEN"
done
echo "API key   $KEY"
echo "Token     $TOKEN   (user demo-user, any topic, 24 h)"
echo
echo "Open node1's demo page, then send through node$N, e.g. with grpcurl:"
echo "  grpcurl -plaintext -H 'authorization: Bearer $KEY' -d '{\"user_id\":\"demo-user\",\"message\":{\"type\":\"hello\",\"payload_json\":\"{}\"}}' 127.0.0.1:$((GRPC_BASE + N)) boundary.realtime.v1.RealtimeService/SendToUser"
echo "Logs in target/cluster/. Ctrl-C stops everything."
wait
