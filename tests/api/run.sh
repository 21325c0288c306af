#!/usr/bin/env bash
# API contract tests: pytest (tests/api/*.py) and a schemathesis fuzz run of docs/openapi.yaml,
# against a live cluster.
#
#   tests/api/run.sh                 with P2P_GATEWAY_API etc. set (see README.md): test that
#                                    cluster; with nothing set: start a throwaway cluster of
#                                    the node binary on 127.0.0.1 and test it
#
# Environment, besides the P2P_* URLs that conftest.py documents:
#   P2P_NODE_BIN          binary for the throwaway cluster (default target/debug/p2p-node, then
#                         target/release/p2p-node); copied first, so a rebuild cannot disturb it
#   P2P_TEST_PORT_BASE    its ports: p2p BASE+1.., API BASE+80.., metrics BASE+90.. (25000)
#   P2P_ST_MAX_EXAMPLES   schemathesis --max-examples per operation (10)
#   P2P_ST_SEED           schemathesis --seed (fixed, so a run is reproducible; "random" for none)
#   P2P_NO_INSTALL=1      do not apt-get install promtool/prometheus (their tests then skip)
#   PYTEST_ARGS           extra pytest arguments (e.g. "-k contract -x")
#
# Installs (idempotent): a venv in .venv-tools/api with requirements.txt; `promtool` and
# `prometheus` from the Debian package prometheus when missing and apt-get is usable.
# Exits non-zero when a test failed; skips print their reason and exit 0. Last line:
#   api: N passed, N failed, N skipped
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
VENV="$ROOT/.venv-tools/api"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/p2p-api-tests.XXXXXX")
PIDS=()

log() { printf '[api-tests] %s\n' "$*"; }

cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 1 50); do
    local alive=0
    for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [[ $alive -eq 0 ]] && break
    sleep 0.1
  done
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  if [[ -n "${KEEP_WORK:-}" ]]; then log "logs kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ----------------------------------------------------------------------------- tools

python_bin=$(command -v python3 || true)
if [[ -z "$python_bin" ]]; then
  log "SKIP: python3 is not installed"
  echo "api: 0 passed, 0 failed, 0 skipped"
  exit 0
fi
if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating $VENV"
  "$python_bin" -m venv "$VENV" || { log "cannot create a venv (Debian: apt-get install -y python3-venv)"; exit 1; }
fi
stamp="$VENV/.requirements.sha256"
want=$(sha256sum "$HERE/requirements.txt" | cut -d' ' -f1)
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  log "installing $HERE/requirements.txt"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$HERE/requirements.txt" || { log "pip install failed"; exit 1; }
  echo "$want" >"$stamp"
fi

if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  if [[ -n "${P2P_NO_INSTALL:-}" ]]; then
    log "promtool/prometheus missing and P2P_NO_INSTALL is set: their tests will skip"
  elif command -v apt-get >/dev/null && [[ $(id -u) -eq 0 ]]; then
    log "installing the Debian package prometheus (promtool, prometheus)"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >"$WORK/apt.log" 2>&1; then
      apt-get update -qq >>"$WORK/apt.log" 2>&1
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >>"$WORK/apt.log" 2>&1 ||
        log "apt-get install prometheus failed (see below): promtool tests will skip"$'\n'"$(tail -5 "$WORK/apt.log")"
    fi
  else
    log "promtool/prometheus missing and apt-get is not usable here (not root or no apt): their tests will skip"
  fi
fi

# ----------------------------------------------------------------------------- cluster

wait_http() { # URL SECONDS: until URL answers 200
  local url=$1 deadline=$((SECONDS + $2))
  while ((SECONDS < deadline)); do
    curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null && return 0
    sleep 0.3
  done
  return 1
}

start_node() { # NAME: runs $WORK/NAME.yaml in the background
  (cd "$WORK" && exec "$WORK/p2p-node" --config "$WORK/$1.yaml" run >"$WORK/$1.log" 2>&1) &
  PIDS+=($!)
}

start_cluster() {
  local bin=${P2P_NODE_BIN:-}
  if [[ -z "$bin" ]]; then
    for c in "$ROOT/target/debug/p2p-node" "$ROOT/target/release/p2p-node"; do
      [[ -x "$c" ]] && { bin=$c; break; }
    done
  fi
  if [[ -z "$bin" || ! -x "$bin" ]]; then
    log "SKIP live tests: P2P_GATEWAY_API is not set and no node binary to start a cluster with (build it, or set P2P_NODE_BIN)"
    return 1
  fi
  local b=${P2P_TEST_PORT_BASE:-25000}
  local p2p_boot=$((b + 1)) p2p_small=$((b + 2)) p2p_nobody=$((b + 9))
  for port in $p2p_boot $p2p_small $((b + 80)) $((b + 81)) $((b + 82)) $((b + 83)) $((b + 84)) $((b + 85)) \
    $((b + 90)) $((b + 91)) $((b + 92)) $((b + 93)) $((b + 94)) $((b + 95)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      log "port $port on 127.0.0.1 is in use: set P2P_TEST_PORT_BASE to a free range"
      return 2
    fi
  done
  cp "$bin" "$WORK/p2p-node"
  log "starting a throwaway cluster of $bin in $WORK (ports $b..$((b + 95)))"
  local net_off='network: {enable_mdns: false, enable_relay: false}'
  # main cluster: a bootstrap (the gateway under test) and two workers
  cat >"$WORK/boot.yaml" <<EOF
node: {role: bootstrap, listen_port: $p2p_boot, listen_address: 127.0.0.1, capabilities: [bootstrap, discovery], identity_file: boot.key, data_dir: boot-data, heartbeat_interval: 2}
$net_off
api: {listen: "127.0.0.1:$((b + 80))"}
metrics: {listen: "127.0.0.1:$((b + 90))"}
EOF
  for i in 1 2; do
    cat >"$WORK/w$i.yaml" <<EOF
node: {role: worker, listen_port: 0, listen_address: 127.0.0.1, identity_file: w$i.key, data_dir: w$i-data, heartbeat_interval: 2}
network: {enable_mdns: false, bootstrap_peers: ["/ip4/127.0.0.1/tcp/$p2p_boot"]}
api: {listen: "127.0.0.1:$((b + 80 + i))"}
metrics: {listen: "127.0.0.1:$((b + 90 + i))"}
EOF
  done
  # small cluster: a gateway with a queue of 2, one storage-only worker running one task at a time
  cat >"$WORK/small.yaml" <<EOF
node: {role: bootstrap, listen_port: $p2p_small, listen_address: 127.0.0.1, capabilities: [bootstrap], identity_file: small.key, data_dir: small-data, heartbeat_interval: 2}
$net_off
api: {listen: "127.0.0.1:$((b + 83))"}
metrics: {listen: "127.0.0.1:$((b + 93))"}
tasks: {queue_capacity: 2}
EOF
  cat >"$WORK/small-w.yaml" <<EOF
node: {role: worker, listen_port: 0, listen_address: 127.0.0.1, capabilities: [storage], max_concurrent_tasks: 1, task_backlog: 0, identity_file: small-w.key, data_dir: small-w-data, heartbeat_interval: 2}
network: {enable_mdns: false, bootstrap_peers: ["/ip4/127.0.0.1/tcp/$p2p_small"]}
api: {listen: "127.0.0.1:$((b + 84))"}
metrics: {listen: "127.0.0.1:$((b + 94))"}
EOF
  # a worker whose bootstrap peer does not exist: never joins
  cat >"$WORK/lone.yaml" <<EOF
node: {role: worker, listen_port: 0, listen_address: 127.0.0.1, identity_file: lone.key, data_dir: lone-data, heartbeat_interval: 2}
network: {enable_mdns: false, enable_relay: false, bootstrap_peers: ["/ip4/127.0.0.1/tcp/$p2p_nobody"]}
api: {listen: "127.0.0.1:$((b + 85))"}
metrics: {listen: "127.0.0.1:$((b + 95))"}
EOF
  start_node boot
  start_node small
  sleep 0.5
  start_node w1
  start_node w2
  start_node small-w
  start_node lone
  local n
  for n in 80 81 82 83 84; do
    if ! wait_http "http://127.0.0.1:$((b + n))/readyz" 60; then
      log "node on API port $((b + n)) did not become ready; logs:"
      tail -n 20 "$WORK"/*.log
      return 2
    fi
  done
  wait_http "http://127.0.0.1:$((b + 85))/healthz" 30 || { log "the unjoined node did not start"; return 2; }
  export P2P_GATEWAY_API="http://127.0.0.1:$((b + 80))"
  export P2P_WORKER_APIS="http://127.0.0.1:$((b + 81)),http://127.0.0.1:$((b + 82))"
  export P2P_METRICS_URLS="http://127.0.0.1:$((b + 90)),http://127.0.0.1:$((b + 91)),http://127.0.0.1:$((b + 92))"
  export P2P_SMALL_QUEUE_API="http://127.0.0.1:$((b + 83))" P2P_SMALL_QUEUE_CAPACITY=2
  export P2P_NO_COMPUTE_API="http://127.0.0.1:$((b + 83))"
  export P2P_UNJOINED_API="http://127.0.0.1:$((b + 85))"
  # The small gateway must see its worker before the 429/503 tests.
  local deadline=$((SECONDS + 60))
  until curl -fsS "$P2P_SMALL_QUEUE_API/v1/capabilities" 2>/dev/null | grep -q '"storage":{"alive_workers":1'; do
    ((SECONDS > deadline)) && { log "the small gateway never saw its worker"; return 2; }
    sleep 0.3
  done
  return 0
}

live=1
if [[ -z "${P2P_GATEWAY_API:-}" ]]; then
  start_cluster
  case $? in
    0) ;;
    1) live=0 ;;
    *) echo "api: 0 passed, 1 failed, 0 skipped"; exit 1 ;;
  esac
fi

# ----------------------------------------------------------------------------- pytest

cd "$HERE" || exit 1
log "pytest ${P2P_GATEWAY_API:+against $P2P_GATEWAY_API}"
# shellcheck disable=SC2086
"$VENV/bin/python" -m pytest "$HERE" -c "$HERE/pytest.ini" --rootdir "$HERE" -ra \
  --junitxml "$WORK/pytest.xml" ${PYTEST_ARGS:-}
pytest_rc=$?

read -r p_pass p_fail p_skip < <("$VENV/bin/python" - "$WORK/pytest.xml" <<'EOF'
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception:
    print(0, 1, 0); sys.exit()
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
t = sum(int(s.get("tests", 0)) for s in suites)
f = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
k = sum(int(s.get("skipped", 0)) for s in suites)
print(t - f - k, f, k)
EOF
)
if [[ $pytest_rc -ne 0 && $p_fail -eq 0 ]]; then p_fail=1; fi   # pytest itself broke

# ----------------------------------------------------------------------------- schemathesis

st_pass=0 st_fail=0 st_skip=0
if [[ $live -eq 1 ]]; then
  seed_args=(--seed "${P2P_ST_SEED:-20261122}")
  [[ "${P2P_ST_SEED:-}" == random ]] && seed_args=()
  log "schemathesis run docs/openapi.yaml --url $P2P_GATEWAY_API"
  # Every check except use_after_free: DELETE /v1/tasks/{id} cancels a task, it does not
  # delete it, so the record staying readable (state cancelled) is the contract.
  # st_hooks.py bounds the valid timeouts, attempts and sleeps so `?wait=true` cannot block.
  # Run from $WORK: schemathesis and hypothesis leave state directories in the cwd.
  cd "$WORK" || exit 1
  SCHEMATHESIS_HOOKS=st_hooks PYTHONPATH="$HERE" timeout 600 "$VENV/bin/schemathesis" --no-color run "$ROOT/docs/openapi.yaml" \
    --url "$P2P_GATEWAY_API" \
    --checks all --exclude-checks use_after_free \
    --max-examples "${P2P_ST_MAX_EXAMPLES:-10}" "${seed_args[@]}" \
    --request-timeout 30 --workers 1
  st_rc=$?
  if [[ $st_rc -eq 0 ]]; then st_pass=1; else st_fail=1; log "schemathesis exited $st_rc"; fi
  # The fuzz run must leave a working gateway behind: a fresh echo task completes.
  after=$(curl -sS --max-time 60 -X POST "$P2P_GATEWAY_API/v1/tasks?wait=true" \
    -d '{"type": "echo", "payload": "after-fuzz", "timeout_ms": 10000, "max_attempts": 3}' 2>&1)
  if [[ "$after" == *'"state":"completed"'* ]]; then
    st_pass=$((st_pass + 1))
  else
    st_fail=$((st_fail + 1))
    log "FAILED: after the fuzz run the gateway no longer completes an echo task: $after"
  fi
else
  log "SKIP schemathesis: no live cluster"
  st_skip=2
fi

passed=$((p_pass + st_pass)) failed=$((p_fail + st_fail)) skipped=$((p_skip + st_skip))
echo "api: $passed passed, $failed failed, $skipped skipped"
[[ $failed -eq 0 ]]
