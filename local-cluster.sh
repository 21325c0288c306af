#!/usr/bin/env bash
# A working local cluster in one command: a bootstrap, a relay and N workers as separate
# processes on 127.0.0.1, built from the shipped config/*.yaml with environment overrides.
#
#   ./local-cluster.sh                 build, start, show the nodes finding each other, then
#                                      keep tasks flowing until Ctrl-C stops everything
#   ./local-cluster.sh --workers 5     more workers
#   ./local-cluster.sh --detach        start and return (state in --dir); stop with --stop
#   ./local-cluster.sh --stop          stop a detached cluster
#   ./local-cluster.sh --restart NAME  kill -9 one node of it and start it again
#
# Options: --workers N (3), --base-port P (4001: p2p ports P.., API 8080.., metrics 9090..
# shifted by the same offset), --dir D (.local-cluster), --binary B (target/release/p2p-node).
set -euo pipefail
cd "$(dirname "$0")"

workers=3
base=4001
dir=.local-cluster
binary=target/release/p2p-node
detach=0
stop=0
restart=
while [[ $# -gt 0 ]]; do
  case "$1" in
    --workers) workers=$2; shift 2 ;;
    --base-port) base=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --binary) binary=$2; shift 2 ;;
    --detach) detach=1; shift ;;
    --stop) stop=1; shift ;;
    --restart) restart=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
done
# Absolute from here on: the nodes get these paths in their environment.
own_binary=0
[[ "$binary" == target/release/p2p-node ]] && own_binary=1
[[ "$dir" == /* ]] || dir=$PWD/$dir
[[ "$binary" == /* ]] || binary=$PWD/$binary

stop_cluster() {
  local pids=()
  if [[ -f "$dir/pids" ]]; then
    mapfile -t pids <"$dir/pids"
  fi
  if [[ ${#pids[@]} -gt 0 ]]; then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 1 100); do
      local alive=0
      for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
      [[ $alive -eq 0 ]] && break
      sleep 0.1
    done
    kill -KILL "${pids[@]}" 2>/dev/null || true
  fi
  rm -f "$dir/pids"
}

# launch NAME: runs NAME's saved command in the background and records its pid.
launch() {
  local name=$1
  bash -c "exec $(cat "$dir/$name.cmd")" >>"$dir/$name.log" 2>&1 &
  echo $! >"$dir/$name.pid"
  echo $! >>"$dir/pids"
}

if [[ -n "$restart" ]]; then
  # Kill -9 and start again with the same identity, ports and config (stress tests).
  kill -KILL "$(cat "$dir/$restart.pid")" 2>/dev/null || true
  launch "$restart"
  exit 0
fi

if [[ $stop -eq 1 ]]; then
  stop_cluster
  echo "stopped the cluster in $dir"
  exit 0
fi

if [[ ! -x "$binary" || -n "$(find src Cargo.toml -newer "$binary" 2>/dev/null | head -n 1)" ]]; then
  if [[ $own_binary -eq 1 ]]; then
    echo "building the release binary (first time: a few minutes)..."
    # The node's allocator (jemalloc) is built from C with make.
    if ! command -v make >/dev/null; then
      if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
        apt-get install -y -qq make >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get install -y -qq make >/dev/null; }
      fi
      command -v make >/dev/null || { echo "make not found: install it (Debian: apt-get install make)" >&2; exit 1; }
    fi
    P2P_BUILD_COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" cargo build --release --locked --bin p2p-node
  elif [[ ! -x "$binary" ]]; then
    echo "no binary at $binary" >&2
    exit 1
  fi
fi

mkdir -p "$dir"
stop_cluster
: >"$dir/pids"
off=$((base - 4001))
api_port() { echo $((8080 + off + $1)); }
metrics_port() { echo $((9090 + off + $1)); }
p2p_port() { echo $((base + $1)); }

# start NAME CONFIG INDEX [extra env...]: one node, configured by environment overrides.
# The exact command goes to $dir/NAME.cmd so `--restart NAME` can start it again.
start() {
  local name=$1 config=$2 i=$3
  shift 3
  local cmd=(env P2P_NODE__LISTEN_ADDRESS=127.0.0.1
    P2P_NODE__LISTEN_PORT="$(p2p_port "$i")"
    P2P_NODE__IDENTITY_FILE="$dir/$name.key"
    P2P_NODE__DATA_DIR="$dir/$name-data"
    P2P_NETWORK__ENABLE_MDNS=false
    P2P_API__LISTEN="127.0.0.1:$(api_port "$i")"
    P2P_METRICS__LISTEN="127.0.0.1:$(metrics_port "$i")"
    "$@" "$binary" --config "$PWD/$config" run)
  printf '%q ' "${cmd[@]}" >"$dir/$name.cmd"
  launch "$name"
  printf '  %-10s api http://127.0.0.1:%s  metrics http://127.0.0.1:%s/metrics  log %s\n' \
    "$name" "$(api_port "$i")" "$(metrics_port "$i")" "$dir/$name.log"
}

boot="/ip4/127.0.0.1/tcp/$(p2p_port 0)"
echo "starting a local cluster in $dir:"
start bootstrap config/bootstrap.yaml 0
start relay config/relay.yaml 1 P2P_NETWORK__BOOTSTRAP_PEERS="$boot"
for i in $(seq 1 "$workers"); do
  start "worker-$i" config/worker.yaml $((i + 1)) P2P_NETWORK__BOOTSTRAP_PEERS="$boot" P2P_NODE__HEARTBEAT_INTERVAL=5
done

{
  echo "BOOTSTRAP_API=http://127.0.0.1:$(api_port 0)"
  echo "RELAY_API=http://127.0.0.1:$(api_port 1)"
  echo "WORKER_APIS=$(for i in $(seq 1 "$workers"); do printf 'http://127.0.0.1:%s,' "$(api_port $((i + 1)))"; done | sed 's/,$//')"
  echo "METRICS_URLS=$(for i in $(seq 0 $((workers + 1))); do printf 'http://127.0.0.1:%s/metrics,' "$(metrics_port "$i")"; done | sed 's/,$//')"
  echo "WORKER_NAMES=$(for i in $(seq 1 "$workers"); do printf 'worker-%s,' "$i"; done | sed 's/,$//')"
} >"$dir/cluster.env"

cli() { # NODE_INDEX COMMAND...: the CLI against one node (its API found via the override)
  local i=$1
  shift
  P2P_API__LISTEN="127.0.0.1:$(api_port "$i")" "$binary" --config config/worker.yaml "$@"
}

# Wait until every worker is ready and schedulable at the bootstrap.
total=$((workers + 2))
for _ in $(seq 1 150); do
  ready=0
  for i in $(seq 0 $((total - 1))); do
    curl -sf "http://127.0.0.1:$(api_port "$i")/readyz" >/dev/null 2>&1 && ready=$((ready + 1))
  done
  alive=$(curl -sf "http://127.0.0.1:$(api_port 0)/v1/capabilities" 2>/dev/null |
    sed -n 's/.*"compute":{"alive_workers":\([0-9]*\).*/\1/p')
  [[ $ready -eq $total && "${alive:-0}" -ge "$workers" ]] && break
  sleep 0.2
done
echo
echo "all $total nodes up and ready; the first worker sees:"
cli 2 peers

if [[ $detach -eq 1 ]]; then
  echo
  echo "detached; state in $dir (cluster.env lists the endpoints); stop with: $0 --stop --dir $dir"
  exit 0
fi

trap 'echo; echo "stopping..."; stop_cluster; exit 0' INT TERM
echo
echo "one task of each type through the bootstrap gateway:"
cli 0 task compute hello-cluster
cli 0 task storage put greeting hello
cli 2 task storage get greeting
cli 0 task echo hello
cli 0 task sleep 250
cli 0 task fail "a deliberate failure" || true
echo
echo "tasks keep flowing (one every 2 s, through a different node each time); Ctrl-C stops the cluster"
n=0
while true; do
  n=$((n + 1))
  i=$((n % total))
  printf '[%s] via node %s: ' "$(date +%T)" "$i"
  cli "$i" task compute "payload-$n" | head -n 1 || true
  sleep 2
done
