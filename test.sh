#!/usr/bin/env bash
# The project's one test command. Builds once (release profile) and runs every layer this
# machine can run, then prints what ran, what was skipped and why.
#
#   ./test.sh            all local stages
#   ./test.sh STAGE...   only these stages (lint build unit process api stress scale shell manifests
#                        containers netns)
#   ./test.sh k8s        smoke-test a deployed Kubernetes cluster (see README)
#
# netns builds real NATs from network namespaces: it needs root and `ip netns`, and is skipped
# (with the reason) without them.
#
# Tools a stage needs are installed by the stage's own script, idempotently.
set -uo pipefail
cd "$(dirname "$0")" || exit 2

if [[ "${1:-}" == "k8s" ]]; then
  shift
  exec scripts/test-k8s.sh "$@"
fi

ALL_STAGES=(lint build unit process api stress scale shell manifests containers netns)
if [[ $# -gt 0 ]]; then STAGES=("$@"); else STAGES=("${ALL_STAGES[@]}"); fi

export CARGO_TERM_COLOR=never
BIN="$PWD/target/release/p2p-node"
LOADGEN="$PWD/target/release/p2p-load"
declare -a RESULTS=()
passed=0 failed=0 skipped=0

log() { printf '\n=== %s ===\n' "$*"; }

record() { # stage status detail seconds
  RESULTS+=("$(printf '%-11s %-5s %5ss  %s' "$1" "$2" "$4" "$3")")
  case "$2" in
    PASS) passed=$((passed + 1)) ;;
    FAIL) failed=$((failed + 1)) ;;
    SKIP) skipped=$((skipped + 1)) ;;
  esac
}

# run_stage NAME COMMAND...: a stage passes when its command exits 0, is skipped when it
# exits 77 (printing the reason as its last line), and fails otherwise.
run_stage() {
  local name=$1; shift
  log "$name"
  local start=$SECONDS out rc
  out=$(mktemp)
  "$@" 2>&1 | tee "$out"
  rc=${PIPESTATUS[0]}
  local took=$((SECONDS - start))
  if [[ $rc -eq 0 ]]; then
    record "$name" PASS "" "$took"
  elif [[ $rc -eq 77 ]]; then
    record "$name" SKIP "$(grep -v '^\s*$' "$out" | tail -n 1)" "$took"
  else
    record "$name" FAIL "exit code $rc" "$took"
  fi
  rm -f "$out"
}

# The node's allocator, jemalloc (tikv-jemalloc-sys), is built from C with make.
need_make() {
  type -P make >/dev/null ||
    (apt-get install -y -qq make >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get install -y -qq make >/dev/null; })
}

stage_lint() {
  need_make
  cargo fmt --all -- --check && cargo clippy --locked --all-targets -- -D warnings
}

stage_build() {
  need_make
  cargo build --release --locked --all-targets
}

stage_unit() {
  # Unit tests (pure logic), the event loop on the memory transport (swarm) and in-process
  # swarms on 127.0.0.1 (several nodes in one test process).
  cargo test --release --locked --lib --bins --test swarm --test in_process --test hostile
}

stage_process() {
  # Real processes on 127.0.0.1: one cluster at a time, the machine has two cores.
  cargo test --release --locked --test cluster --test tasks --test security --test durability --test wasm --test ledger -- --test-threads=1
}

stage_api() {
  need_binary || return $?
  # Starts its own throwaway cluster of the release binary on 127.0.0.1.
  local rc=0
  P2P_NODE_BIN="$BIN" tests/api/run.sh || rc=1
  # Traces: a real OTLP receiver and another throwaway cluster (gateway and two workers).
  P2P_NODE_BIN="$BIN" tests/trace/run.sh || rc=1
  return $rc
}

stage_stress() {
  need_binary || return $?
  # The report goes to a temporary file: a test run leaves the tree as it found it.
  local report
  report=$(mktemp /tmp/stress-gateway-report.XXXXXX.json)
  ./stress-test.sh --short && ./stress-test.sh --short --kill gateway --json "$report"
  local rc=$?
  rm -f "$report"
  return $rc
}

stage_scale() {
  # The scale harness's short form: 25 workers and a bootstrap in one process; counts only
  # (formed, a join and every gossip message seen everywhere, a killed worker dead everywhere,
  # a separate p2p-node stopped with SIGSTOP for 3 s alive everywhere again after SIGCONT).
  [[ -x target/release/examples/scale ]] || { echo "target/release/examples/scale missing: run the build stage"; return 1; }
  # The pause phase signals its node with kill(1) (Debian's procps).
  type -P kill >/dev/null ||
    (apt-get install -y -qq procps >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get install -y -qq procps >/dev/null; })
  target/release/examples/scale --nodes 25 --max-secs 120 --check
}

stage_shell() {
  scripts/check-shell.sh
}

stage_manifests() {
  scripts/check-manifests.sh
}

stage_containers() {
  need_binary || return $?
  scripts/test-containers.sh
}

stage_netns() {
  need_binary || return $?
  # NAT traversal on NATs built from network namespaces (root and `ip netns`; skipped
  # otherwise): relay reservation, tasks through the relay, hole punching behind cone NATs,
  # a symmetric NAT that stays relayed across the relay's circuit limit. About 1.5 minutes.
  scripts/netns-nat-test.sh
}

need_binary() {
  if [[ ! -x "$BIN" || ! -x "$LOADGEN" ]]; then
    echo "no release binaries at target/release: run the build stage first"
    return 1
  fi
}

for stage in "${STAGES[@]}"; do
  if ! declare -F "stage_$stage" >/dev/null; then
    echo "unknown stage: $stage (stages: ${ALL_STAGES[*]} | k8s)" >&2
    exit 2
  fi
  run_stage "$stage" "stage_$stage"
  # Nothing after a failed build can run meaningfully.
  if [[ "$stage" == "build" && ${RESULTS[-1]} == *FAIL* ]]; then break; fi
done

printf '\n=== summary ===\n'
printf '%s\n' "${RESULTS[@]}"
echo "test.sh: $passed passed, $failed failed, $skipped skipped"
[[ $failed -eq 0 ]]
