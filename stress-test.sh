#!/usr/bin/env bash
# Stress test: N tasks at concurrency C for at most T seconds while workers are killed,
# then a report (text and JSON): throughput, latency p50/p95/p99, failures by reason, and
# a check that no accepted task was lost. Bounded in count and time; stops by itself.
#
#   ./stress-test.sh                  local cluster (started and stopped here), kill -9 workers
#   ./stress-test.sh --short          the quick form ./test.sh runs
#   ./stress-test.sh --k8s            against the Kubernetes deployment in namespace net-test,
#                                     killing worker pods with kubectl delete pod
# Options: --tasks N --concurrency C --duration T --kill-every S --workers W --json FILE
set -euo pipefail
cd "$(dirname "$0")"

tasks=2000 concurrency=64 duration=120 kill_every=5 workers=4 mode=local
json=stress-report.json
while [[ $# -gt 0 ]]; do
  case "$1" in
    --short) tasks=400; concurrency=32; duration=60; kill_every=3; shift ;;
    --k8s) mode=k8s; shift ;;
    --tasks) tasks=$2; shift 2 ;;
    --concurrency) concurrency=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --kill-every) kill_every=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --json) json=$2; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
done

loadgen=target/release/p2p-load
if [[ ! -x "$loadgen" ]]; then
  echo "building the load generator..."
  cargo build --release --locked --bin p2p-load --bin p2p-node
fi

killer_pid=
forward_pid=
dir=
cleanup() {
  if [[ -n "$killer_pid" ]]; then kill "$killer_pid" 2>/dev/null || true; fi
  if [[ -n "$forward_pid" ]]; then kill "$forward_pid" 2>/dev/null || true; fi
  if [[ -n "$dir" ]]; then ./local-cluster.sh --stop --dir "$dir" >/dev/null || true; fi
}
trap cleanup EXIT

if [[ $mode == local ]]; then
  dir=$(mktemp -d /tmp/p2p-stress.XXXXXX)
  # A base port in a quiet range, free at the moment we look.
  base=$((21000 + RANDOM % 3000))
  ./local-cluster.sh --detach --dir "$dir" --workers "$workers" --base-port "$base" >/dev/null
  # shellcheck disable=SC1091
  source "$dir/cluster.env"
  apis="${BOOTSTRAP_API#http://},${WORKER_APIS//http:\/\//}"
  IFS=, read -r -a names <<<"$WORKER_NAMES"
  # Gateways on workers we kill would take their accepted tasks with them; submit through
  # the bootstrap and the first worker, and kill only the others.
  apis="${BOOTSTRAP_API#http://},$(cut -d, -f1 <<<"${WORKER_APIS//http:\/\//}")"
  victims=("${names[@]:1}")
  (
    end=$((SECONDS + duration))
    while [[ $SECONDS -lt $end ]]; do
      sleep "$kill_every"
      v=${victims[RANDOM % ${#victims[@]}]}
      echo "[stress] kill -9 $v and restart it"
      ./local-cluster.sh --restart "$v" --dir "$dir"
    done
  ) &
  killer_pid=$!
else
  command -v kubectl >/dev/null || { echo "kubectl is not installed" >&2; exit 1; }
  kubectl --request-timeout=5s -n net-test get deploy p2p-bootstrap >/dev/null ||
    { echo "no p2p-network deployment reachable in namespace net-test (run ./deploy.sh first)" >&2; exit 1; }
  port=$((21000 + RANDOM % 3000))
  kubectl -n net-test port-forward deploy/p2p-bootstrap "$port:8080" >/dev/null 2>&1 &
  forward_pid=$!
  sleep 2
  apis="127.0.0.1:$port"
  (
    end=$((SECONDS + duration))
    while [[ $SECONDS -lt $end ]]; do
      sleep "$kill_every"
      pod=$(kubectl -n net-test get pods -l role=worker -o name | shuf -n 1)
      echo "[stress] kubectl delete $pod"
      kubectl -n net-test delete "$pod" --wait=false >/dev/null || true
    done
  ) &
  killer_pid=$!
fi

echo "[stress] $tasks sleep tasks (100-500 ms) at concurrency $concurrency for at most ${duration}s via $apis"
set +e
"$loadgen" --api "$apis" --tasks "$tasks" --concurrency "$concurrency" --duration-secs "$duration" \
  --type sleep --sleep-range 100-500 --label "stress ($mode)" --json "$json"
rc=$?
set -e
echo "[stress] JSON report: $json"
if [[ $rc -ne 0 ]]; then
  echo "[stress] FAILED: accepted tasks were lost or went unanswered" >&2
  exit 1
fi
echo "[stress] no accepted task was lost"
