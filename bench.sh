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
#   ./bench.sh --wasm          instead: built-in `echo` against examples/wasm/echo.wasm on the same
#                              cluster in one sitting (which goes first alternates per round; the
#                              module is warm: warm-up tasks first): sync p50/p99, tasks/s in
#                              flight and the ratios (target: wasm within 2x of echo); then cold
#                              starts: the first task of a module no node has seen (upload apart;
#                              fetch by the worker, compile, run), against the warm p50.
#                              JSON: bench-wasm-report.json. CPU against native code and memory
#                              per instance: cargo run --release --example wasm_bench
set -euo pipefail
cd "$(dirname "$0")"

sync_n=2000 warmup=200 inflight_n=10000 concurrency=256 batch=1000 rounds=3 ray=1 json=""
cold_n=7 wasm=0
node_bin="" load_bin=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) sync_n=500; warmup=50; inflight_n=3000; cold_n=3; rounds=1; shift ;;
    --wasm) wasm=1; shift ;;
    --rounds) rounds=$2; shift 2 ;;
    --no-ray) ray=0; shift ;;
    --json) json=$2; shift 2 ;;
    --node) node_bin=$2; shift 2 ;;
    --load) load_bin=$2; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ -n "$json" ]] || json=$([[ $wasm -eq 1 ]] && echo bench-wasm-report.json || echo bench-report.json)

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

if [[ $wasm -eq 1 ]]; then
  module=examples/wasm/echo.wasm
  for round in $(seq 1 "$rounds"); do
    base=$((24000 + RANDOM % 2000))
    ./local-cluster.sh --detach --dir "$dir/cluster" --workers 3 --base-port "$base" \
      --binary "$node_bin" >/dev/null
    # shellcheck disable=SC1091
    source "$dir/cluster/cluster.env"
    gw=${BOOTSTRAP_API#http://}
    out="$dir/round-$round"
    mkdir -p "$out"
    # The same workload for both, one after the other; which goes first alternates per round
    # so a drift of the shared machine does not always favour the same one.
    kinds=(echo wasm)
    [[ $((round % 2)) -eq 0 ]] && kinds=(wasm echo)
    for kind in "${kinds[@]}"; do
      task=(--type echo)
      [[ $kind == wasm ]] && task=(--wasm "$module")
      echo "== round $round/$rounds, $kind: sync ($sync_n round trips after $warmup warm-up)"
      $load --api "$gw" "${task[@]}" --tasks "$sync_n" --warmup "$warmup" --concurrency 1 \
        --label "$kind sync" --json "$out/$kind-sync.json" | sed -n '3p'
    done
    for kind in "${kinds[@]}"; do
      task=(--type echo)
      [[ $kind == wasm ]] && task=(--wasm "$module")
      echo "== round $round/$rounds, $kind: $inflight_n tasks, $concurrency in flight"
      $load --api "$gw" "${task[@]}" --tasks "$inflight_n" --concurrency "$concurrency" \
        --label "$kind in flight" --json "$out/$kind-inflight.json" | sed -n '2p'
    done
    echo "== round $round/$rounds, cold start: $cold_n tasks, each of a module no node has seen"
    $load --api "$gw" --wasm "$module" --fresh-modules --tasks "$cold_n" --concurrency 1 \
      --label "wasm cold" --json "$out/cold.json" | sed -n '3,4p'
    ./local-cluster.sh --stop --dir "$dir/cluster" >/dev/null
    rm -rf "$dir/cluster"
  done
  python3 - "$dir" "$json" "$rounds" <<'PY'
import json, os, platform, statistics, sys
d, out, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
load = lambda r, n: json.load(open(os.path.join(d, f"round-{r}", f"{n}.json")))
runs = [{n: load(r, n) for n in ("echo-sync", "wasm-sync", "echo-inflight", "wasm-inflight", "cold")}
        for r in range(1, rounds + 1)]
for run in runs:
    for rep in run.values():
        if rep["completed"] != rep["submitted"]:
            sys.exit(f"{rep['label']}: {rep['completed']} of {rep['submitted']} completed: {rep['states']}")
lat = lambda x, p: x["latency_ms"][p]
tps = lambda x: x["throughput_per_sec"]
# name, echo per round, wasm per round; the cost of wasm is per round, in times echo's
rows = [
    ("sync p50 (ms)", [lat(x["echo-sync"], "p50") for x in runs], [lat(x["wasm-sync"], "p50") for x in runs]),
    ("sync p99 (ms)", [lat(x["echo-sync"], "p99") for x in runs], [lat(x["wasm-sync"], "p99") for x in runs]),
    ("in flight (tasks/s)", [tps(x["echo-inflight"]) for x in runs], [tps(x["wasm-inflight"]) for x in runs]),
]
med, fmt = statistics.median, (lambda v: f"{v:.0f}" if v >= 100 else f"{v:.3f}")
rng = lambda v: f"{fmt(min(v))}-{fmt(max(v))}"
report = {"machine": {"cpus": os.cpu_count(), "kernel": platform.release()}, "rounds": rounds,
          "runs": runs, "median": {}}
print(f"\n{'metric':<22}{'echo':>10}{'wasm echo':>11}{'wasm cost':>11}{'cost range':>13}  ({rounds} rounds)")
for name, echo, wasm in rows:
    higher_better = "tasks/s" in name
    cost = [(e / w if higher_better else w / e) for e, w in zip(echo, wasm)]
    report["median"][name] = {"echo": med(echo), "wasm": med(wasm), "wasm_cost": med(cost),
                              "echo_range": [min(echo), max(echo)], "wasm_range": [min(wasm), max(wasm)],
                              "cost_range": [min(cost), max(cost)]}
    print(f"{name:<22}{fmt(med(echo)):>10}{fmt(med(wasm)):>11}{med(cost):>10.2f}x{rng(cost):>13}")
print("(cost: wasm latency / echo latency, echo tasks/s / wasm tasks/s, per round; target <= 2x)")
cold = [x["cold"] for x in runs]
cold_p50 = [lat(c, "p50") for c in cold]
warm_p50 = [lat(x["wasm-sync"], "p50") for x in runs]
upload = [c["upload_ms"]["p50"] for c in cold]
factor = [c / w for c, w in zip(cold_p50, warm_p50)]
samples = [min(lat(c, "min") for c in cold), max(lat(c, "max") for c in cold)]
report["cold"] = {"first_task_p50_ms": med(cold_p50), "round_p50_range_ms": [min(cold_p50), max(cold_p50)],
                  "sample_range_ms": samples, "upload_p50_ms": med(upload), "times_warm_p50": med(factor)}
print(f"\ncold start, the first task of a new module ({cold[0]['submitted']} per round; median of round medians):")
print(f"  first task  {med(cold_p50):.2f} ms (round medians {rng(cold_p50)}, samples {rng(samples)} ms)")
print(f"  vs warm p50 {med(factor):.1f}x ({min(factor):.1f}-{max(factor):.1f}); its upload before it {med(upload):.2f} ms")
json.dump(report, open(out, "w"), indent=2)
print(f"JSON: {out}")
PY
  exit 0
fi

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
