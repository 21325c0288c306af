#!/usr/bin/env bash
# Stress test: N tasks at concurrency C for at most T seconds while workers are killed,
# then a report (text and JSON): throughput, latency p50/p95/p99, failures by reason, and
# a check that no accepted task was lost. Bounded in count and time; stops by itself.
#
#   ./stress-test.sh                  local cluster (started and stopped here), kill -9 workers
#   ./stress-test.sh --short          the quick form ./test.sh runs
#   ./stress-test.sh --k8s            against the Kubernetes deployment in namespace net-test,
#                                     killing worker pods with kubectl delete pod
#   ./stress-test.sh --kill gateway   kill the gateway that takes every submission (the
#                                     bootstrap): locally kill -9 and a restart on its data
#                                     dir; with --k8s, kubectl delete pod (its emptyDir goes
#                                     with it: copy holders adopt its tasks). Tasks are
#                                     submitted without waiting and polled until final, through
#                                     another node (any node answers for any task)
# Options: --tasks N --concurrency C --duration T --kill-every S --workers W --json FILE
set -euo pipefail
cd "$(dirname "$0")"

tasks=2000 concurrency=64 duration=120 kill_every=5 workers=4 mode=local kill=workers kill_every_set=0
json=stress-report.json
while [[ $# -gt 0 ]]; do
  case "$1" in
    --short) tasks=400; concurrency=32; duration=60; kill_every=3; shift ;;
    --k8s) mode=k8s; shift ;;
    --kill) kill=$2; shift 2 ;;
    --tasks) tasks=$2; shift 2 ;;
    --concurrency) concurrency=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --kill-every) kill_every=$2; kill_every_set=1; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --json) json=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
done

case "$kill" in
  workers) ;;
  gateway)
    # A restarted gateway needs a few seconds to hear from its workers again; killed more
    # often than that, it never places anything.
    [[ $kill_every_set -eq 1 ]] || kill_every=10 ;;
  *) echo "--kill must be workers or gateway, got: $kill" >&2; exit 2 ;;
esac
poll=()

loadgen=target/release/p2p-load
if [[ ! -x "$loadgen" ]]; then
  echo "building the load generator..."
  cargo build --release --locked --bin p2p-load --bin p2p-node
fi

killer_pid=
forward_pid=
poll_forward_pid=
dir=
cleanup() {
  if [[ -n "$killer_pid" ]]; then kill "$killer_pid" 2>/dev/null || true; fi
  if [[ -n "$forward_pid" ]]; then kill "$forward_pid" 2>/dev/null || true; fi
  if [[ -n "$poll_forward_pid" ]]; then kill "$poll_forward_pid" 2>/dev/null || true; fi
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
  if [[ $kill == gateway ]]; then
    # Every task goes through the bootstrap, which is killed: nothing it acknowledged may be lost.
    apis="${BOOTSTRAP_API#http://}"
    victims=(bootstrap)
    poll=(--poll --poll-via "$(cut -d, -f1 <<<"${WORKER_APIS//http:\/\//}")")
  fi
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
  if [[ $kill == gateway ]]; then
    # Polls go through the relay, which is never deleted: the bootstrap pod that accepted a
    # task is, with its emptyDir, and a copy holder finishes the task.
    poll_port=$((port + 1))
    kubectl -n net-test port-forward deploy/p2p-relay "$poll_port:8080" >/dev/null 2>&1 &
    poll_forward_pid=$!
    sleep 2
    poll=(--poll --poll-via "127.0.0.1:$poll_port")
  fi
  (
    end=$((SECONDS + duration))
    forward=
    while [[ $SECONDS -lt $end ]]; do
      sleep "$kill_every"
      if [[ $kill == gateway ]]; then
        echo "[stress] kubectl delete the bootstrap pod"
        kubectl -n net-test delete pod -l role=bootstrap --wait=false >/dev/null || true
        # The submissions' port-forward ends with the pod; open it again to the new one.
        kubectl -n net-test rollout status deploy/p2p-bootstrap --timeout=60s >/dev/null || true
        if [[ -n "$forward" ]]; then kill "$forward" 2>/dev/null || true; fi
        kubectl -n net-test port-forward deploy/p2p-bootstrap "$port:8080" >/dev/null 2>&1 &
        forward=$!
      else
        pod=$(kubectl -n net-test get pods -l role=worker -o name | shuf -n 1)
        echo "[stress] kubectl delete $pod"
        kubectl -n net-test delete "$pod" --wait=false >/dev/null || true
      fi
    done
    if [[ -n "$forward" ]]; then kill "$forward" 2>/dev/null || true; fi
  ) &
  killer_pid=$!
fi

echo "[stress] $tasks sleep tasks (100-500 ms) at concurrency $concurrency for at most ${duration}s via $apis, killing $kill"
set +e
"$loadgen" --api "$apis" --tasks "$tasks" --concurrency "$concurrency" --duration-secs "$duration" \
  --type sleep --sleep-range 100-500 --label "stress ($mode, killing $kill)" --json "$json" ${poll[@]+"${poll[@]}"}
rc=$?
set -e
echo "[stress] JSON report: $json"
if [[ $rc -ne 0 ]]; then
  echo "[stress] FAILED: accepted tasks were lost or went unanswered" >&2
  exit 1
fi
echo "[stress] no accepted task was lost"
