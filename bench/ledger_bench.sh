#!/usr/bin/env bash
# The credit ledger's cost and convergence (#21), measured on local clusters (bootstrap, relay,
# 3 workers; release binaries; 127.0.0.1 only):
#   throughput   tasks/s of `echo` with 256 in flight, ledger on against ledger off, fresh
#                clusters alternated per round (which goes first alternates too): the ratio
#   agreement    after the last task: time until every node has sealed what it owes and all
#                report one ledger digest
#   growth       replicated ledger bytes per paid task (every block of every account)
#   late joiner  a 4th worker with an empty store and a new identity started after N paid
#                tasks (--history, default 100000): time until its digest equals the others'
#
#   bench/ledger_bench.sh [--rounds R] [--tasks N] [--history N] [--node BIN] [--load BIN]
#
# Prints one JSON line at the end (also written to --json FILE, default ledger-bench-report.json).
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=3 tasks=20000 history=100000 json=ledger-bench-report.json
node_bin=target/release/p2p-node load_bin=target/release/p2p-load
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --tasks) tasks=$2; shift 2 ;;
    --history) history=$2; shift 2 ;;
    --node) node_bin=$2; shift 2 ;;
    --load) load_bin=$2; shift 2 ;;
    --json) json=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ -x "$node_bin" && -x "$load_bin" ]] || { echo "build first: cargo build --release --locked" >&2; exit 1; }

dir=$(mktemp -d /tmp/p2p-ledger-bench.XXXXXX)
cleanup() { ./local-cluster.sh --stop --dir "$dir/cluster" >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT

# start_cluster ENABLED WORKERS: a fresh detached cluster; sources its cluster.env.
start_cluster() {
  local base=$((24000 + RANDOM % 2000))
  P2P_LEDGER__ENABLED=$1 ./local-cluster.sh --detach --dir "$dir/cluster" --workers "$2" --base-port "$base" \
    --binary "$node_bin" >/dev/null
  # shellcheck disable=SC1091
  source "$dir/cluster/cluster.env"
  apis="$BOOTSTRAP_API,$RELAY_API,$WORKER_APIS"
  python3 bench/ledger_probe.py wait-workers "$BOOTSTRAP_API" "$2"
}

stop_cluster() {
  ./local-cluster.sh --stop --dir "$dir/cluster" >/dev/null
  rm -rf "$dir/cluster"
}

results="$dir/results.jsonl"
: >"$results"
for round in $(seq 1 "$rounds"); do
  modes=(false true)
  [[ $((round % 2)) -eq 0 ]] && modes=(true false)
  for enabled in "${modes[@]}"; do
    start_cluster "$enabled" 3
    echo "== round $round/$rounds, ledger enabled=$enabled: $tasks echo tasks, 256 in flight"
    "$load_bin" --api "${BOOTSTRAP_API#http://}" --tasks "$tasks" --warmup 500 --concurrency 256 \
      --label "ledger=$enabled" --json "$dir/load.json" | sed -n '2p'
    if [[ $enabled == true ]]; then
      python3 bench/ledger_probe.py agree "$apis" "$dir/load.json" >>"$results"
    else
      python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(json.dumps({"ledger": False, "tasks_per_sec": r["throughput_per_sec"]}))' \
        "$dir/load.json" >>"$results"
    fi
    tail -n 1 "$results"
    stop_cluster
  done
done

echo "== late joiner: $history paid tasks of history first"
start_cluster true 4
kill -TERM "$(cat "$dir/cluster/worker-4.pid")"
sleep 1
rm -rf "$dir/cluster/worker-4-data" "$dir/cluster/worker-4.key"
"$load_bin" --api "${BOOTSTRAP_API#http://}" --tasks "$history" --concurrency 32 --batch 1000 \
  --label history --json "$dir/history.json" | sed -n '2p'
late_api=${WORKER_APIS##*,}
python3 bench/ledger_probe.py agree "${apis%,*}" "$dir/history.json" >"$dir/history-agree.json"
./local-cluster.sh --dir "$dir/cluster" --restart worker-4
python3 bench/ledger_probe.py late "$BOOTSTRAP_API" "$late_api" >"$dir/late.json"
cat "$dir/late.json"
stop_cluster

python3 - "$results" "$dir/late.json" "$json" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
late = json.load(open(sys.argv[2]))
on = [r["tasks_per_sec"] for r in rows if r["ledger"]]
off = [r["tasks_per_sec"] for r in rows if not r["ledger"]]
report = {
    "tasks_per_sec_ledger_on": statistics.median(on),
    "tasks_per_sec_ledger_off": statistics.median(off),
    "on_over_off": round(statistics.median(on) / statistics.median(off), 3),
    "on_over_off_per_round": [round(a / b, 3) for a, b in zip(on, off)],
    "agree_after_last_task_s": statistics.median(r["agree_s"] for r in rows if r["ledger"]),
    "bytes_per_paid_task": statistics.median(r["bytes_per_paid_task"] for r in rows if r["ledger"]),
    "late_joiner": late,
}
json.dump(report, open(sys.argv[3], "w"), indent=2)
print(json.dumps(report))
PY
