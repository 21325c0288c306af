#!/usr/bin/env bash
# Side-by-side benchmark on this machine: p2p-network (gateway + 3 workers, dist build,
# through the public HTTP API with keep-alive) against Ray (ray.init(num_cpus=2), a trivial
# remote function), the same workload from one client process each:
#   sync        one `echo` round trip at a time: p50 / p99 latency
#   in flight   many tasks in flight: tasks/s (ours: single-task API and the batch endpoint)
# Prints both with the ratios and writes JSON (bench-report.json, or --json FILE).
#
#   ./bench.sh                 full run (Ray installed into .venv-tools/ray on first use)
#   ./bench.sh --quick         smaller counts, one round
#   ./bench.sh --rounds N      rounds of ours, each on a fresh cluster (3): median and range
#   ./bench.sh --no-ray        ours only
#   ./bench.sh --node BIN --load BIN   these binaries instead of building the dist profile (to
#                              compare two builds in one sitting: alternate runs of each)
set -euo pipefail
cd "$(dirname "$0")"

sync_n=2000 warmup=200 inflight_n=10000 concurrency=256 batch=1000 rounds=3 ray=1 json=bench-report.json
node_bin="" load_bin=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) sync_n=500; warmup=50; inflight_n=3000; rounds=1; shift ;;
    --rounds) rounds=$2; shift 2 ;;
    --no-ray) ray=0; shift ;;
    --json) json=$2; shift 2 ;;
    --node) node_bin=$2; shift 2 ;;
    --load) load_bin=$2; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
done

# The shipped build (`dist`: release + LTO, what ./build.sh packages), node and client alike.
if [[ -z "$node_bin" || -z "$load_bin" ]]; then
  [[ -z "$node_bin$load_bin" ]] || { echo "--node and --load go together" >&2; exit 2; }
  echo "== building (dist profile; the first time takes several minutes)"
  cargo build --profile dist --locked --bins >/dev/null
  node_bin=target/dist/p2p-node load_bin=target/dist/p2p-load
fi
dir=$(mktemp -d /tmp/p2p-bench.XXXXXX)
cleanup() { ./local-cluster.sh --stop --dir "$dir/cluster" >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT
load=$load_bin

# Each round starts a fresh cluster: on a shared machine, run-to-run spread comes as much from
# where the processes land as from the code, so the report gives the median and the range.
for round in $(seq 1 "$rounds"); do
  base=$((24000 + RANDOM % 2000))
  ./local-cluster.sh --detach --dir "$dir/cluster" --workers 3 --base-port "$base" \
    --binary "$node_bin" >/dev/null
  # shellcheck disable=SC1091
  source "$dir/cluster/cluster.env"
  gw=${BOOTSTRAP_API#http://}   # the bootstrap is the gateway: it runs no task itself
  out="$dir/round-$round"
  mkdir -p "$out"
  echo "== p2p-network round $round/$rounds: sync ($sync_n echo round trips after $warmup warm-up)"
  $load --api "$gw" --tasks "$sync_n" --warmup "$warmup" --concurrency 1 --label "p2p sync" --json "$out/sync.json"
  echo "== p2p-network round $round/$rounds: $inflight_n echo tasks, $concurrency in flight (one HTTP request each)"
  $load --api "$gw" --tasks "$inflight_n" --concurrency "$concurrency" --label "p2p in flight" \
    --json "$out/inflight.json"
  echo "== p2p-network round $round/$rounds: $inflight_n echo tasks in batches of $batch (POST /v1/tasks/batch)"
  $load --api "$gw" --tasks "$inflight_n" --concurrency 4 --batch "$batch" --label "p2p batch" --json "$out/batch.json"
  ./local-cluster.sh --stop --dir "$dir/cluster" >/dev/null
  rm -rf "$dir/cluster"
done

ray_json=null
if [[ $ray -eq 1 ]]; then
  echo "== Ray: the same workload"
  py=$(bench/setup-ray-venv.sh | tail -n 1)
  RAY_USAGE_STATS_ENABLED=0 "$py" bench/ray_bench.py --sync "$sync_n" --warmup "$warmup" \
    --throughput "$inflight_n" --json "$dir/ray.json"
  ray_json=$(cat "$dir/ray.json")
fi

python3 - "$dir" "$json" "$ray_json" "$rounds" <<'PY'
import json, os, platform, statistics, sys
d, out, ray_raw, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
load = lambda r, n: json.load(open(os.path.join(d, f"round-{r}", n)))
runs = [{k: load(r, f"{k}.json") for k in ("sync", "inflight", "batch")} for r in range(1, rounds + 1)]
ray = None if ray_raw == "null" else json.loads(ray_raw)
rows = [
    ("sync p50 (ms)", [x["sync"]["latency_ms"]["p50"] for x in runs], ray and ray["sync"]["p50_ms"], "lower"),
    ("sync p99 (ms)", [x["sync"]["latency_ms"]["p99"] for x in runs], ray and ray["sync"]["p99_ms"], "lower"),
    ("in flight (tasks/s)", [x["inflight"]["throughput_per_sec"] for x in runs],
     ray and ray["throughput"]["tasks_per_sec"], "higher"),
    ("batch (tasks/s)", [x["batch"]["throughput_per_sec"] for x in runs],
     ray and ray["throughput"]["tasks_per_sec"], "higher"),
]
report = {"machine": {"cpus": os.cpu_count(), "kernel": platform.release()}, "rounds": rounds,
          "p2p": {"rounds": runs, "median": {}}, "ray": ray, "ratios": {}}
head = f"range ({rounds} round{'s' * (rounds != 1)})"
print(f"\n{'metric':<22}{'p2p-network':>13}{head:>22}{'ray':>11}{'ours vs ray':>14}")
for name, values, theirs, better in rows:
    ours = statistics.median(values)
    report["p2p"]["median"][name] = ours
    f = (lambda v: f"{v:.0f}") if ours >= 100 else (lambda v: f"{v:.3f}")
    spread = f"{f(min(values))}-{f(max(values))}"
    if theirs:
        ratio = theirs / ours if better == "lower" else ours / theirs
        report["ratios"][name] = ratio
        print(f"{name:<22}{ours:>13.3f}{spread:>22}{theirs:>11.3f}{ratio:>13.2f}x")
    else:
        print(f"{name:<22}{ours:>13.3f}{spread:>22}{'-':>11}{'-':>14}")
print("(p2p-network: the median of its rounds; ratio > 1 means p2p-network is better)")
json.dump(report, open(out, "w"), indent=2)
print(f"JSON: {out}")
PY
