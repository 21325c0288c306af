#!/usr/bin/env bash
# Node footprint on this machine: time from process start to joined (ready: connected to a
# bootstrap, routing table filled), idle memory (RSS) per node, binary size.
#
#   scripts/measure-footprint.sh [--runs N] [--binary PATH] [--json FILE]
#
# Starts a bootstrap and N workers, one after another, on 127.0.0.1; for each worker measures
# the wall time from exec to the first 200 from /readyz (polled every 5 ms); after all have
# been idle for 10 s reads each process's VmRSS. Everything it starts it stops.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=5 binary=target/dist/p2p-node json=
while [[ $# -gt 0 ]]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --binary) binary=$2; shift 2 ;;
    --json) json=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[[ -x "$binary" ]] || { echo "no binary at $binary (cargo build --profile dist --bin p2p-node; or --binary target/release/p2p-node)" >&2; exit 1; }

dir=$(mktemp -d /tmp/p2p-footprint.XXXXXX)
pids=()
cleanup() {
  if [[ ${#pids[@]} -gt 0 ]]; then kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; fi
  rm -rf "$dir"
}
trap cleanup EXIT
base=$((23000 + RANDOM % 2000))

# node NAME ROLE INDEX [extra env]: start one node in the background
node() {
  local name=$1 role=$2 i=$3
  shift 3
  env P2P_NODE__ROLE="$role" P2P_NODE__LISTEN_ADDRESS=127.0.0.1 P2P_NODE__LISTEN_PORT=$((base + i)) \
    P2P_NODE__IDENTITY_FILE="$dir/$name.key" P2P_NODE__DATA_DIR="$dir/$name-data" P2P_NETWORK__ENABLE_MDNS=false \
    P2P_API__LISTEN="127.0.0.1:$((base + 100 + i))" P2P_METRICS__LISTEN="127.0.0.1:$((base + 200 + i))" \
    "$@" "$binary" --config config/worker.yaml run >"$dir/$name.log" 2>&1 &
  pids+=($!)
}

now_ms() { date +%s%3N; }
node bootstrap bootstrap 0 P2P_NETWORK__BOOTSTRAP_PEERS= P2P_NODE__CAPABILITIES=bootstrap
until curl -sf "http://127.0.0.1:$((base + 100))/readyz" >/dev/null; do sleep 0.01; done

times=()
for i in $(seq 1 "$runs"); do
  t0=$(now_ms)
  node "w$i" worker "$i" P2P_NETWORK__BOOTSTRAP_PEERS="/ip4/127.0.0.1/tcp/$base"
  until curl -sf "http://127.0.0.1:$((base + 100 + i))/readyz" >/dev/null 2>&1; do
    sleep 0.005
    (($(now_ms) - t0 < 20000)) || { echo "worker $i not ready in 20 s" >&2; exit 1; }
  done
  times+=($(($(now_ms) - t0)))
done
sleep 10
rss=()
for p in "${pids[@]}"; do
  rss+=("$(awk '/VmRSS/ { print $2 }' "/proc/$p/status")")
done
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
median=$(sed -n "$(((runs + 1) / 2))p" <<<"$sorted")
worker_rss=$(printf '%s\n' "${rss[@]:1}" | sort -n)
rss_median=$(sed -n "$(((runs + 1) / 2))p" <<<"$worker_rss")
size=$(stat -c %s "$binary")
echo "start-to-ready (worker joining a running bootstrap), ms: ${times[*]} (median $median)"
echo "idle RSS after 10 s, KiB: bootstrap ${rss[0]}, workers ${rss[*]:1} (median $rss_median)"
echo "binary: $binary $((size / 1024 / 1024)) MiB ($size bytes)"
if [[ -n "$json" ]]; then
  printf '{"start_to_ready_ms": [%s], "start_to_ready_median_ms": %s, "idle_rss_kib": {"bootstrap": %s, "workers": [%s], "worker_median": %s}, "binary_bytes": %s}\n' \
    "$(IFS=,; echo "${times[*]}")" "$median" "${rss[0]}" "$(IFS=,; echo "${rss[*]:1}")" "$rss_median" "$size" >"$json"
fi
