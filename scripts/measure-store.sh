#!/usr/bin/env bash
# What the durable store costs and buys, on a local cluster (gateway + 3 workers):
#   - the gateway's resident memory before and after N echo tasks (final records live on
#     disk, so it should not grow with N), and the store's size per 100,000 final records;
#   - recovery: R unfinished tasks in the store, the gateway killed with -9 and started
#     again: how long until its API answers with every one of them resumed.
#
#   scripts/measure-store.sh [--tasks N] [--recovery R] [--binary PATH] [--json FILE]
#
# Bounded: N tasks in batches of 1,000 (at most 4 x 5 minutes), R sleep tasks. Everything it
# starts it stops.
set -euo pipefail
cd "$(dirname "$0")/.."
tasks=200000 recovery=10000 binary=target/release/p2p-node json=
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tasks) tasks=$2; shift 2 ;;
    --recovery) recovery=$2; shift 2 ;;
    --binary) binary=$2; shift 2 ;;
    --json) json=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
load=$(dirname "$binary")/p2p-load
[[ -x "$binary" && -x "$load" ]] || { echo "no p2p-node and p2p-load at $(dirname "$binary") (cargo build --release)" >&2; exit 1; }

dir=$(mktemp -d /tmp/p2p-store.XXXXXX)
cleanup() { ./local-cluster.sh --stop --dir "$dir/cluster" >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT
base=$((27000 + RANDOM % 2000))
./local-cluster.sh --detach --dir "$dir/cluster" --workers 3 --base-port "$base" --binary "$binary" >/dev/null
# shellcheck disable=SC1091
source "$dir/cluster/cluster.env"
gw=${BOOTSTRAP_API#http://}
rss_mib() { awk '/VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$(cat "$dir/cluster/bootstrap.pid")/status"; }

rss_before=$(rss_mib)
# In four parts, reading the RSS after each: flat means it does not follow the record count.
echo "== $tasks echo tasks through the gateway (batches of 1,000), in four parts"
quarter=$((tasks / 4)) rss_curve="" fill_start=$(date +%s%N)
for part in 1 2 3 4; do
  "$load" --api "$gw" --tasks "$quarter" --concurrency 4 --batch 1000 --duration-secs 300 --label "store fill $part/4" \
    --json "$dir/fill-$part.json" | tail -n 3
  rss_curve="$rss_curve${rss_curve:+, }$(rss_mib)"
  echo "gateway RSS after $((part * quarter)) tasks: $(rss_mib) MiB"
done
tasks=$((quarter * 4))
fill_rate=$(python3 -c "print(round($tasks / (($(date +%s%N) - $fill_start) / 1e9)))")
sleep 2
rss_after=$(rss_mib)
store_bytes=$(du -sb "$dir/cluster/bootstrap-data" | cut -f1)
per_100k=$(python3 -c "print(round($store_bytes / $tasks * 100000 / 1048576, 1))")
echo "gateway RSS: ${rss_before} MiB before, ${rss_after} MiB after $tasks tasks (after each quarter: $rss_curve); $fill_rate tasks/s stored"
echo "store: $store_bytes bytes for $tasks final records = ${per_100k} MiB per 100,000"

echo "== recovery: $recovery unfinished sleep tasks, kill -9, start again"
# 30 s sleeps on 3 workers: nearly all of them are still queued when the gateway dies.
python3 - "$recovery" >"$dir/sleep.json" <<'PY'
import json, sys
print(json.dumps({"tasks": [{"type": "sleep", "payload": "30000"} for _ in range(int(sys.argv[1]))]}))
PY
curl -sf -o /dev/null -H 'content-type: application/json' --data-binary "@$dir/sleep.json" \
  "$BOOTSTRAP_API/v1/tasks/batch"
started=$(date +%s%N)
./local-cluster.sh --restart bootstrap --dir "$dir/cluster"
until curl -sf -o /dev/null "$BOOTSTRAP_API/v1/status"; do sleep 0.01; done
answered_ms=$((($(date +%s%N) - started) / 1000000))
resumed=$(sed 's/\x1b\[[0-9;]*m//g' "$dir/cluster/bootstrap.log" | grep -o 'resuming the unfinished tasks.*' | tail -n 1 || true)
echo "API answering ${answered_ms} ms after the restart, with: ${resumed:-no resume line in the log}"

if [[ -n "$json" ]]; then
  cat >"$json" <<EOF
{"tasks": $tasks, "rss_mib_before": $rss_before, "rss_mib_after": $rss_after, "rss_mib_quarters": [$rss_curve],
 "fill_tasks_per_s": $fill_rate, "store_bytes": $store_bytes,
 "store_mib_per_100k": $per_100k, "recovery_tasks": $recovery, "recovery_api_ms": $answered_ms}
EOF
fi
