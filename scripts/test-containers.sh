#!/usr/bin/env bash
# Container test: the image from ./build.sh runs a cluster (bootstrap, relay, 3 workers) on
# a private Docker network; the promised in-container command completes a task; a worker
# container killed mid-run loses no task; the bootstrap, killed and started again on its
# named volume (as in Docker Compose), still knows its tasks. Exits 77 (skip) when no Docker
# engine runs.
#
# Traffic: the host talks only to 127.0.0.1 ports Docker publishes; containers talk among
# themselves on the network this script creates and removes.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v docker >/dev/null || ! docker info >/dev/null 2>&1; then
  echo "skipped: no Docker engine is running here"
  exit 77
fi

tag=p2p-network:test-$$
net=p2ptest-$$
prefix=p2ptest-$$
port=$((22000 + RANDOM % 3000))
containers=()
cleanup() {
  if [[ ${#containers[@]} -gt 0 ]]; then docker rm -f "${containers[@]}" >/dev/null 2>&1 || true; fi
  docker network rm "$net" >/dev/null 2>&1 || true
  docker volume rm "$prefix-boot-data" >/dev/null 2>&1 || true
  docker image rm "$tag" >/dev/null 2>&1 || true
}
trap cleanup EXIT

# The image's assembly is what is tested here: the release binary the other stages built
# stands in for the shipped `dist` one (same code, without the LTO build's extra minutes).
echo "== building the image (offline path, reusing target/release/p2p-node)"
BINARY=target/release/p2p-node ./build.sh --tag "$tag" --no-load
size=$(docker image inspect -f '{{.Size}}' "$tag")
echo "image size: $((size / 1024 / 1024)) MiB ($size bytes)"

docker network create "$net" >/dev/null

# run NAME ALIAS CONFIG DATA [docker args...]: DATA is the /data mount (tmpfs or a volume)
run() {
  local name=$1 alias=$2 config=$3 data=$4
  shift 4
  docker run -d --name "$prefix-$name" --network "$net" --network-alias "$alias" --hostname "$alias" \
    --read-only --cap-drop ALL --security-opt no-new-privileges:true \
    --tmpfs /tmp "$data" \
    -e P2P_API__LISTEN=0.0.0.0:8080 -e P2P_NETWORK__ENABLE_MDNS=false \
    -e P2P_NODE__IDENTITY_FILE=/data/identity.key -e P2P_NODE__DATA_DIR=/data/store \
    -e P2P_NODE__HEARTBEAT_INTERVAL=2 \
    -v "$PWD/config/$config:/app/config.yaml:ro" "$@" "$tag" >/dev/null
  containers+=("$prefix-$name")
}

echo "== starting bootstrap, relay and 3 workers on network $net"
tmpfs_data=--tmpfs=/data:uid=10001,gid=10001,mode=0750
# The bootstrap keeps its identity and store on a named volume, as Compose does; Docker fills
# a new volume from the image's /data (owned by the node's user).
run boot bootstrap bootstrap.yaml "-v=$prefix-boot-data:/data" -p "127.0.0.1:$port:8080"
run relay relay relay.yaml "$tmpfs_data" -e P2P_NETWORK__BOOTSTRAP_PEERS=/dns4/bootstrap/tcp/4001
for i in 1 2 3; do
  run "w$i" "worker-$i" worker.yaml "$tmpfs_data" -e P2P_NETWORK__BOOTSTRAP_PEERS=/dns4/bootstrap/tcp/4001
done

in_node() { # CONTAINER COMMAND...: the CLI inside a container, as a user would type it
  docker exec "$prefix-$1" /app/p2p-node --config /app/config.yaml "${@:2}"
}

echo "== waiting for every worker to be schedulable at the bootstrap"
for _ in $(seq 1 150); do
  alive=$(curl -sf "http://127.0.0.1:$port/v1/capabilities" | sed -n 's/.*"compute":{"alive_workers":\([0-9]*\).*/\1/p' || true)
  [[ "${alive:-0}" -ge 3 ]] && break
  sleep 0.2
done
if [[ "${alive:-0}" -lt 3 ]]; then
  echo "FAIL: workers did not join (compute workers alive: ${alive:-0})"
  for c in "${containers[@]}"; do echo "--- $c"; docker logs --tail 20 "$c" 2>&1; done
  exit 1
fi
in_node w1 peers

echo "== the promised command, inside a worker container"
out=$(docker exec -i "$prefix-w1" /bin/bash -c 'echo "task compute test_payload" | ./p2p-node --config /app/config.yaml')
echo "$out"
grep -q "completed" <<<"$out" || { echo "FAIL: the task did not complete"; exit 1; }

echo "== 120 sleep tasks through the bootstrap while a worker container is killed"
report=$(mktemp)
target/release/p2p-load --api "127.0.0.1:$port" --tasks 120 --concurrency 60 --duration-secs 60 \
  --type sleep --sleep-range 200-600 --label containers --json "$report" &
load=$!
sleep 1.5
docker kill "$prefix-w2" >/dev/null
echo "killed $prefix-w2"
if ! wait "$load"; then
  echo "FAIL: tasks were lost or unanswered"
  exit 1
fi
completed=$(sed -n 's/.*"completed": \([0-9]*\).*/\1/p' "$report" | head -n 1)
rm -f "$report"
if [[ "$completed" != 120 ]]; then
  echo "FAIL: $completed of 120 tasks completed"
  exit 1
fi
echo "containers: all 120 tasks completed with a worker container killed mid-run"

echo "== the bootstrap killed and started again on its named volume keeps its tasks"
kept=$(curl -fsS -X POST "http://127.0.0.1:$port/v1/tasks?wait=true" -H 'content-type: application/json' \
  -d '{"type": "echo", "payload": "kept across a restart"}')
id=$(sed -n 's/.*"id":"\([^"]*\)".*/\1/p' <<<"$kept")
[[ -n "$id" ]] || { echo "FAIL: no task id in: $kept"; exit 1; }
docker kill "$prefix-boot" >/dev/null
docker start "$prefix-boot" >/dev/null
after=""
for _ in $(seq 1 100); do
  after=$(curl -fsS "http://127.0.0.1:$port/v1/tasks/$id" 2>/dev/null) && break
  sleep 0.2
done
echo "$after"
if ! grep -q '"state":"completed"' <<<"$after" || ! grep -q 'kept across a restart' <<<"$after"; then
  echo "FAIL: task $id was not found completed after the bootstrap's restart"
  exit 1
fi
echo "containers: task $id still completed after the bootstrap container was killed and started"
