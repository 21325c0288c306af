#!/usr/bin/env bash
# Side-by-side benchmark on this machine: p2p-network (gateway + 3 workers, release build,
# through the public HTTP API with keep-alive) against Ray (ray.init(num_cpus=2), a trivial
# remote function), the same workload from one client process each:
#   sync        one `echo` round trip at a time: p50 / p99 latency
#   in flight   many tasks in flight: tasks/s (ours: single-task API and the batch endpoint)
# Prints both with the ratios and writes JSON (bench-report.json, or --json FILE).
#
#   ./bench.sh                 full run (Ray installed into .venv-tools/ray on first use)
#   ./bench.sh --quick         smaller counts
#   ./bench.sh --no-ray        ours only
set -euo pipefail
cd "$(dirname "$0")"

sync_n=2000 warmup=200 inflight_n=10000 concurrency=256 batch=1000 ray=1 json=bench-report.json
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) sync_n=500; warmup=50; inflight_n=3000; shift ;;
    --no-ray) ray=0; shift ;;
    --json) json=$2; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
done

echo "== building (release)"
cargo build --release --locked --bins >/dev/null
dir=$(mktemp -d /tmp/p2p-bench.XXXXXX)
cleanup() { ./local-cluster.sh --stop --dir "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT

base=$((24000 + RANDOM % 2000))
./local-cluster.sh --detach --dir "$dir" --workers 3 --base-port "$base" >/dev/null
# shellcheck disable=SC1091
source "$dir/cluster.env"
gw=${BOOTSTRAP_API#http://}   # the bootstrap is the gateway: it runs no task itself
load=target/release/p2p-load

echo "== p2p-network: sync ($sync_n echo round trips after $warmup warm-up)"
$load --api "$gw" --tasks "$sync_n" --warmup "$warmup" --concurrency 1 --label "p2p sync" --json "$dir/sync.json"
echo "== p2p-network: $inflight_n echo tasks, $concurrency in flight (one HTTP request each)"
$load --api "$gw" --tasks "$inflight_n" --concurrency "$concurrency" --label "p2p in flight" --json "$dir/inflight.json"
echo "== p2p-network: $inflight_n echo tasks in batches of $batch (POST /v1/tasks/batch)"
$load --api "$gw" --tasks "$inflight_n" --concurrency 4 --batch "$batch" --label "p2p batch" --json "$dir/batch.json"
./local-cluster.sh --stop --dir "$dir" >/dev/null

ray_json=null
if [[ $ray -eq 1 ]]; then
  echo "== Ray: the same workload"
  py=$(bench/setup-ray-venv.sh | tail -n 1)
  RAY_USAGE_STATS_ENABLED=0 "$py" bench/ray_bench.py --sync "$sync_n" --warmup "$warmup" \
    --throughput "$inflight_n" --json "$dir/ray.json"
  ray_json=$(cat "$dir/ray.json")
fi

python3 - "$dir" "$json" "$ray_json" <<'PY'
import json, os, platform, sys
d, out, ray_raw = sys.argv[1], sys.argv[2], sys.argv[3]
load = lambda n: json.load(open(os.path.join(d, n)))
sync, inflight, batch = load("sync.json"), load("inflight.json"), load("batch.json")
ray = None if ray_raw == "null" else json.loads(ray_raw)
rows = [
    ("sync p50 (ms)", sync["latency_ms"]["p50"], ray and ray["sync"]["p50_ms"], "lower"),
    ("sync p99 (ms)", sync["latency_ms"]["p99"], ray and ray["sync"]["p99_ms"], "lower"),
    ("in flight (tasks/s)", inflight["throughput_per_sec"], ray and ray["throughput"]["tasks_per_sec"], "higher"),
    ("batch (tasks/s)", batch["throughput_per_sec"], ray and ray["throughput"]["tasks_per_sec"], "higher"),
]
print(f"\n{'metric':<22}{'p2p-network':>14}{'ray':>12}{'ours vs ray':>14}")
report = {"machine": {"cpus": os.cpu_count(), "kernel": platform.release()}, "p2p": {"sync": sync, "inflight": inflight, "batch": batch}, "ray": ray, "ratios": {}}
for name, ours, theirs, better in rows:
    if theirs:
        ratio = theirs / ours if better == "lower" else ours / theirs
        report["ratios"][name] = ratio
        print(f"{name:<22}{ours:>14.3f}{theirs:>12.3f}{ratio:>13.2f}x")
    else:
        print(f"{name:<22}{ours:>14.3f}{'-':>12}{'-':>14}")
print("(ratio > 1 means p2p-network is better: lower latency or higher throughput)")
json.dump(report, open(out, "w"), indent=2)
print(f"JSON: {out}")
PY
