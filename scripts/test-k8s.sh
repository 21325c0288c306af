#!/usr/bin/env bash
# Smoke test of a deployed cluster (./deploy.sh), through kubectl exec, as a user would:
# every pod joined, peers visible, a task of each type completes, metrics served.
#
#   ./test.sh k8s            (or scripts/test-k8s.sh) with kubectl pointing at the cluster
#
# Environment: NAMESPACE (net-test).
set -euo pipefail
ns=${NAMESPACE:-net-test}

command -v kubectl >/dev/null || { echo "kubectl is not installed"; exit 1; }
if ! kubectl --request-timeout=5s -n "$ns" get deploy p2p-bootstrap >/dev/null 2>&1; then
  echo "no p2p-network deployment reachable in namespace $ns (is kubectl's context a cluster where ./deploy.sh ran?)"
  exit 1
fi

passed=0 failed=0
check() { # DESCRIPTION COMMAND...
  local what=$1
  shift
  if "$@"; then
    echo "  ok   $what"
    passed=$((passed + 1))
  else
    echo "  FAIL $what"
    failed=$((failed + 1))
  fi
}

mapfile -t pods < <(kubectl -n "$ns" get pods -l app.kubernetes.io/name=p2p-network \
  --field-selector=status.phase=Running -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}')
echo "pods: ${pods[*]}"
[[ ${#pods[@]} -ge 3 ]] || { echo "expected at least bootstrap, relay and a worker running"; exit 1; }
worker=$(kubectl -n "$ns" get pods -l role=worker -o jsonpath='{.items[0].metadata.name}')

node() { # POD COMMAND...: the CLI inside a pod
  kubectl -n "$ns" exec "$1" -- /app/p2p-node --config /app/config.yaml "${@:2}"
}

joined() {
  local pod=$1
  node "$pod" status | grep -q "ready:           true"
}
for pod in "${pods[@]}"; do
  check "$pod joined (ready)" joined "$pod"
done

peers_visible() {
  local out n
  out=$(node "$worker" peers)
  n=$(grep -c ' alive ' <<<"$out" || true)
  [[ $n -ge $((${#pods[@]} - 1)) ]]
}
check "$worker sees every other pod as an alive peer" peers_visible

promised() {
  kubectl -n "$ns" exec -i "$worker" -- /bin/bash -c \
    'echo "task compute test_payload" | ./p2p-node --config /app/config.yaml' | grep -q completed
}
check "the promised command: echo \"task compute test_payload\" | ./p2p-node --config /app/config.yaml" promised
check "echo task" bash -c "kubectl -n $ns exec $worker -- /app/p2p-node --config /app/config.yaml task echo hello | grep -q 'result: hello'"
check "sleep task" node "$worker" task sleep 100
check "storage put" node "$worker" task storage put smoke-key smoke-value
check "storage get through another node" bash -c \
  "kubectl -n $ns exec ${pods[0]} -- /app/p2p-node --config /app/config.yaml task storage get smoke-key | grep -q smoke-value"
check "fail task fails with its reason" bash -c \
  "! kubectl -n $ns exec $worker -- /app/p2p-node --config /app/config.yaml task fail expected 2>&1 | grep -q completed"

metrics_served() {
  kubectl -n "$ns" exec "$worker" -- /bin/bash -c \
    'exec 3<>/dev/tcp/127.0.0.1/9090; printf "GET /metrics HTTP/1.0\r\n\r\n" >&3; cat <&3' | grep -q '^p2p_node_up 1'
}
check "metrics served on :9090/metrics" metrics_served

echo "test-k8s: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
