#!/usr/bin/env bash
# NAT traversal on real NATs built from Linux network namespaces (issue 6).
#
#   public segment 198.18.0.0/24 (a bridge in its own namespace):
#     bootstrap .2   relay .3   gateway .4   router-a .11   router-b .12   router-s .13
#   LAN a 10.1.0.0/24: worker-a behind router-a   (MASQUERADE: cone-like NAT)
#   LAN b 10.2.0.0/24: worker-b behind router-b   (MASQUERADE: cone-like NAT)
#   LAN s 10.3.0.0/24: worker-s behind router-s   (MASQUERADE --random-fully: symmetric NAT)
#   Every router has a stateful firewall: forwarded packets of new inbound connections are
#   dropped, only replies (conntrack ESTABLISHED,RELATED) come back in.
#
# Every namespace is created and removed by this script (names carry its pid; a trap removes
# them on any exit); addresses exist only inside them and nothing is routed to the host's
# interfaces. Nodes are the real binary, started with `ip netns exec`, their API on
# 127.0.0.1 of their own namespace; the CLI is driven the same way.
#
# Exit 0 all passed, 1 something failed, 77 skipped (the reason is the last line).
#
# Scenarios (each prints what it measured; the summary line is `netns: N passed, N failed`):
#   topology   plain connectivity; the NATs translate, keep one mapping per local port (cone)
#              or not (symmetric), and drop new inbound connections (with a sensitivity check:
#              the same probe gets through once the firewall is opened)
#   reach      every worker: a relay reservation (/p2p-circuit listen address,
#              p2p_relay_reservations) and its circuit address known to the gateway, both
#              before AutoNAT decides; then AutoNAT private (status, p2p_nat_status)
#   gateway    the public gateway gives worker-b tasks through the relay (LAN b never opens a
#              connection to the gateway itself); `peers` shows relayed on both sides
#   cone       NETNS_CONE_TRIALS trials: worker-a restarts as a new peer, gives worker-b a task
#              (first contact through the relay) and must be directly connected (DCUtR) within
#              NETNS_DIRECT_BOUND s of the relayed connection; TCP and QUIC trials alternate
#              (router-a drops the other transport); at least NETNS_CONE_MIN must succeed
#   symmetric  worker-s (symmetric NAT) gives worker-b tasks for up to NETNS_SYM_BOUND s:
#              relayed, no direct connection, DCUtR reports failure (on whichever side accepted
#              the relayed connection), every task ends, the relay's circuit limit cuts the
#              connection and it comes back
#   rtt        round trips of small tasks: hole-punched, relayed (symmetric), gateway via relay,
#              gateway to a worker that dialed out
#
# Knobs (environment):
#   NETNS_CONE_TRIALS=10        cone trials (odd ones TCP, even ones QUIC)
#   NETNS_CONE_MIN=             trials that must end direct (default: 90%, rounded up)
#   NETNS_DIRECT_BOUND=5        seconds from the relayed to the direct connection
#   NETNS_SYM_TRIALS=1          symmetric-NAT trials
#   NETNS_SYM_BOUND=            seconds a symmetric trial may take (default 3 x timeout + 15)
#   NETNS_REACH_BOUND=40        seconds from start until reservation/advertisement/AutoNAT
#   NETNS_CONNECTION_TIMEOUT=10 network.connection_timeout of every node (shipped default: 30)
#   NETNS_RELAY_CIRCUIT_SECS=25 relay.max_circuit_duration_secs (shipped default: 600)
#   NETNS_RTT_TASKS=20          samples per RTT series
#   NETNS_WORKER_LISTEN=any     workers bind 0.0.0.0 (the shipped default); lan: their LAN IP only
#   NETNS_TRIAL_PORT=new        cone trials: worker-a on a port of its own; same: always 4001
#   NETNS_BUDGET=210            seconds after which no further cone trial starts
#   NETNS_ONLY=topology|hold    stop after the NAT checks | start the nodes and wait (debugging)
#   NETNS_KEEP_LOGS=1           keep the node logs also on success (JSON, one file per start;
#                               they are always kept when something failed; the path is printed)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

CONE_TRIALS=${NETNS_CONE_TRIALS:-10}
CONE_MIN=${NETNS_CONE_MIN:-$(((CONE_TRIALS * 9 + 9) / 10))}
SYM_TRIALS=${NETNS_SYM_TRIALS:-1}
DIRECT_BOUND=${NETNS_DIRECT_BOUND:-5}
REACH_BOUND=${NETNS_REACH_BOUND:-40}
RTT_TASKS=${NETNS_RTT_TASKS:-20}
CONN_TIMEOUT=${NETNS_CONNECTION_TIMEOUT:-10}
# new: each cone trial's worker-a listens on a port of its own; same: always 4001 (a restart).
TRIAL_PORT=${NETNS_TRIAL_PORT:-new}
RELAY_CIRCUIT_SECS=${NETNS_RELAY_CIRCUIT_SECS:-25}
# Trials stop (and count as failed) once the run has taken this long.
BUDGET=${NETNS_BUDGET:-210}
# DCUtR tries three times, each try ending with a dial timeout: give it that and some.
SYM_BOUND=${NETNS_SYM_BOUND:-$((3 * CONN_TIMEOUT + 15))}
ONLY=${NETNS_ONLY:-}
# any: workers listen on 0.0.0.0 (the shipped default); lan: on their LAN address only.
WORKER_LISTEN=${NETNS_WORKER_LISTEN:-any}
KEEP_LOGS=${NETNS_KEEP_LOGS:-0}

skip() {
  echo "skipped: $*"
  exit 77
}

[[ $(id -u) -eq 0 ]] || skip "not root: building network namespaces, veths and NAT routers needs root"
command -v ip >/dev/null || skip "no 'ip' command (iproute2)"
if ! command -v iptables >/dev/null; then
  if command -v apt-get >/dev/null; then
    echo "installing iptables (apt-get)"
    (apt-get install -y -qq iptables >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null && apt-get install -y -qq iptables >/dev/null; }) || true
  fi
fi
command -v iptables >/dev/null || skip "no iptables and it cannot be installed here"
PYTHON=$(command -v python3 || true)
[[ -n "$PYTHON" ]] || skip "no python3 (the socket probes of the NAT checks need it)"
command -v curl >/dev/null || skip "no curl"
command -v jq >/dev/null || skip "no jq"
if ! ip netns add "nsprobe-$$" 2>/dev/null; then
  skip "cannot create network namespaces here (no CAP_SYS_ADMIN or no netns support)"
fi
# The NAT and firewall rules the routers need must load here (kernel modules, nft backend).
if ! { ip netns exec "nsprobe-$$" iptables -t nat -A POSTROUTING -o lo -j MASQUERADE --random-fully &&
  ip netns exec "nsprobe-$$" iptables -A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT; } >/dev/null 2>&1; then
  ip netns del "nsprobe-$$"
  skip "iptables cannot set up NAT (MASQUERADE --random-fully, conntrack) in a network namespace here"
fi
ip netns del "nsprobe-$$"
if [[ ! -x target/release/p2p-node ]]; then
  echo "no target/release/p2p-node: run 'cargo build --release --bin p2p-node' first"
  exit 1
fi

TMP=$(mktemp -d "/tmp/netns-nat-$$.XXXX")
# A rebuild of target/release during the run must not change the binary under test.
cp target/release/p2p-node "$TMP/p2p-node"
BIN=$TMP/p2p-node
PROBE=$ROOT/scripts/nat-probe.py
P=nat$$ # namespace prefix
NAMESPACES=()
declare -A NODE_PID=()
passed=0 failed=0
FAILURES=()

cleanup() {
  local rc=$?
  set +e
  for n in "${!NODE_PID[@]}"; do kill "${NODE_PID[$n]}" 2>/dev/null; done
  for n in "${!NODE_PID[@]}"; do
    for _ in $(seq 1 20); do kill -0 "${NODE_PID[$n]}" 2>/dev/null || break; sleep 0.1; done
    kill -9 "${NODE_PID[$n]}" 2>/dev/null
  done
  # Anything else still running inside our namespaces was started by this script.
  for ns in "${NAMESPACES[@]}"; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
  done
  for ns in "${NAMESPACES[@]}"; do ip netns del "$ns" 2>/dev/null; done
  if [[ "$KEEP_LOGS" == 1 || $rc -ne 0 ]]; then
    echo "node logs (JSON) kept in $TMP"
  else
    rm -rf "$TMP"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

ok() {
  echo "PASS: $*"
  passed=$((passed + 1))
}
bad() {
  echo "FAIL: $*"
  failed=$((failed + 1))
  FAILURES+=("$*")
}
# check DESCRIPTION COMMAND...: pass when the command succeeds.
check() {
  local what=$1
  shift
  if "$@"; then ok "$what"; else bad "$what"; fi
}
contains() { [[ "$1" == *"$2"* ]]; }
not_contains() { [[ "$1" != *"$2"* ]]; }
same_as() { # WANT VALUE...: every VALUE equals WANT
  local want=$1 v
  shift
  for v in "$@"; do [[ "$v" == "$want" ]] || return 1; done
}
non_empty() { # FILE...: every file has content
  local f
  for f in "$@"; do [[ -s "$f" ]] || return 1; done
}
got_through() { [[ "$1" == connected || "$1" == *ConnectionRefused* ]]; }
now_ms() { date +%s%3N; }
in_ns() { # NS COMMAND...
  local ns=$1
  shift
  ip netns exec "$P-$ns" "$@"
}

# ---------------------------------------------------------------------------------------------
# Topology
# ---------------------------------------------------------------------------------------------
declare -A PUB_IP=([boot]=198.18.0.2 [relay]=198.18.0.3 [gw]=198.18.0.4 [ra]=198.18.0.11 [rb]=198.18.0.12 [rs]=198.18.0.13)
declare -A LAN_NET=([a]=10.1.0 [b]=10.2.0 [s]=10.3.0)

new_ns() {
  ip netns add "$P-$1"
  NAMESPACES+=("$P-$1")
  in_ns "$1" ip link set lo up
  # Nothing inside forwards unless it is a router (a new namespace starts with 0; be explicit).
  in_ns "$1" sysctl -qw net.ipv4.ip_forward=0
}

# A host on the public segment: veth "eth0" in its namespace, the peer on the switch's bridge.
attach_public() { # NS
  local ns=$1
  ip -n "$P-sw" link add "s-$ns" type veth peer name eth0 netns "$P-$ns"
  ip -n "$P-sw" link set "s-$ns" master br0 up
  in_ns "$ns" ip addr add "${PUB_IP[$ns]}/24" dev eth0
  in_ns "$ns" ip link set eth0 up
}

# A LAN: worker-X (lan0) cabled straight to router-X (lan0); the router NATs to eth0.
# MODE cone: MASQUERADE (Linux keeps the source port where it can: endpoint-independent mapping)
# MODE symmetric: MASQUERADE --random-fully (a fresh random port per connection)
build_lan() { # X MODE
  local x=$1 mode=$2 r="r$1" w="w$1" net=${LAN_NET[$1]}
  new_ns "$r"
  new_ns "$w"
  attach_public "$r"
  ip -n "$P-$r" link add lan0 type veth peer name lan0 netns "$P-$w"
  in_ns "$r" ip addr add "$net.1/24" dev lan0
  in_ns "$r" ip link set lan0 up
  in_ns "$w" ip addr add "$net.2/24" dev lan0
  in_ns "$w" ip link set lan0 up
  in_ns "$w" ip route add default via "$net.1"
  in_ns "$r" sysctl -qw net.ipv4.ip_forward=1
  local masq=(-j MASQUERADE)
  [[ "$mode" == symmetric ]] && masq+=(--random-fully)
  in_ns "$r" iptables -t nat -A POSTROUTING -o eth0 "${masq[@]}"
  in_ns "$r" iptables -P FORWARD DROP
  in_ns "$r" iptables -A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
  # Per-trial rules (forcing one transport) go into their own chain.
  in_ns "$r" iptables -N TRIAL
  in_ns "$r" iptables -I FORWARD 1 -j TRIAL
  local note=""
  if [[ $x == b ]]; then
    # worker-b never opens a connection to the gateway by itself (as if the gateway were one
    # of many it does not know): every task the gateway gives it must come through the relay.
    in_ns "$r" iptables -A FORWARD -i lan0 -d "${PUB_IP[gw]}" -j REJECT
    note="; LAN b may not open connections to the gateway"
  fi
  in_ns "$r" iptables -A FORWARD -i lan0 -o eth0 -j ACCEPT
  in_ns "$r" iptables -P INPUT DROP
  in_ns "$r" iptables -A INPUT -i lo -j ACCEPT
  in_ns "$r" iptables -A INPUT -i lan0 -j ACCEPT
  in_ns "$r" iptables -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
  echo "  LAN $x: $w $net.2/24 -> $r $net.1 | ${PUB_IP[$r]} on the public segment; NAT: $mode$note"
}

build_topology() {
  echo "== building the topology (namespaces $P-*)"
  new_ns sw
  ip -n "$P-sw" link add br0 type bridge
  ip -n "$P-sw" link set br0 up
  for h in boot relay gw; do
    new_ns "$h"
    attach_public "$h"
    echo "  public: $P-$h ${PUB_IP[$h]}/24"
  done
  build_lan a cone
  build_lan b cone
  build_lan s symmetric
  echo "  switch: $P-sw (bridge br0); iptables: $(iptables -V)"
}

# ---------------------------------------------------------------------------------------------
# Plain connectivity and what the NATs let through
# ---------------------------------------------------------------------------------------------
probe() { # NS ARGS...
  local ns=$1
  shift
  in_ns "$ns" timeout 20 "$PYTHON" "$PROBE" "$@"
}

check_network() {
  echo "== connectivity and NAT behaviour"
  local h x
  # Whoami services (answer with the address they see) on the public hosts, UDP and TCP.
  local pids=()
  for h in boot relay gw; do
    ip netns exec "$P-$h" timeout 60 "$PYTHON" "$PROBE" whoami-udp 7000 60 &
    pids+=($!)
    ip netns exec "$P-$h" timeout 60 "$PYTHON" "$PROBE" whoami-tcp 7000 60 &
    pids+=($!)
  done
  sleep 0.5
  for h in boot relay gw ra rb rs; do
    local target=gw
    [[ $h == gw ]] && target=boot
    check "public: $h (${PUB_IP[$h]}) reaches $target over the segment" \
      contains "$(probe "$h" ask-tcp 0 "${PUB_IP[$target]}:7000")" "${PUB_IP[$h]}:"
  done
  for x in a b s; do
    local r="r$x" udp tcp
    mapfile -t udp < <(probe "w$x" ask-udp 40000 "${PUB_IP[boot]}:7000" "${PUB_IP[relay]}:7000")
    mapfile -t tcp < <(probe "w$x" ask-tcp 40001 "${PUB_IP[boot]}:7000" "${PUB_IP[relay]}:7000")
    echo "  w$x seen from boot/relay: udp ${udp[*]} | tcp ${tcp[*]}"
    check "LAN $x: translated to the router's address (udp)" \
      same_as "${PUB_IP[$r]}" "${udp[0]%:*}" "${udp[1]%:*}"
    check "LAN $x: translated to the router's address (tcp)" \
      same_as "${PUB_IP[$r]}" "${tcp[0]%:*}" "${tcp[1]%:*}"
    if [[ $x == s ]]; then
      # Symmetric: each destination gets its own mapping.
      check "LAN $x: symmetric mapping (a new port per destination, udp)" [ "${udp[0]}" != "${udp[1]}" ]
      check "LAN $x: symmetric mapping (a new port per destination, tcp)" [ "${tcp[0]}" != "${tcp[1]}" ]
    else
      # Cone-like: one mapping whatever the destination (what hole punching needs).
      check "LAN $x: endpoint-independent mapping (udp)" [ "${udp[0]}" == "${udp[1]}" ]
      check "LAN $x: endpoint-independent mapping (tcp)" [ "${tcp[0]}" == "${tcp[1]}" ]
    fi
  done
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true

  # Filtering: worker-a sends from udp 40002 to boot:7001 (opening a mapping), then the
  # gateway and another port of boot send to that public port: nothing of theirs may arrive;
  # boot:7001 (the endpoint worker-a sent to) may answer: the hole-punch precondition.
  local out
  in_ns wa timeout 8 "$PYTHON" "$PROBE" open-udp 40002 "${PUB_IP[boot]}:7001" 3 >"$TMP/udp-listen" &
  local lp=$!
  sleep 0.5
  probe gw send-udp 7001 "${PUB_IP[ra]}:40002"
  probe boot send-udp 7002 "${PUB_IP[ra]}:40002"
  probe boot send-udp 7001 "${PUB_IP[ra]}:40002"
  wait "$lp" || true
  out=$(grep -v '^open$' "$TMP/udp-listen" | tr '\n' ' ')
  echo "  worker-a udp 40002 (mapped towards boot:7001) received: $out"
  check "NAT a drops udp from a host worker-a never sent to (gateway)" not_contains "$out" "${PUB_IP[gw]}:"
  check "NAT a drops udp from another port of that host (boot:7002)" not_contains "$out" "${PUB_IP[boot]}:7002"
  check "NAT a lets boot:7001 answer (the hole-punch precondition)" contains "$out" "${PUB_IP[boot]}:7001"

  # TCP, on every LAN: a listener on the worker; the gateway tries the router's public address
  # and, with a route into the LAN (as if the router were its next hop), the private address
  # itself, which only the firewall stops. To show the check can fail, it is repeated once
  # with router-a's forward policy opened: then the connection must succeed.
  for x in a b s; do
    local r="r$x" net=${LAN_NET[$x]} lp via_pub via_priv lan_ok
    ip netns exec "$P-w$x" timeout 20 "$PYTHON" "$PROBE" listen-tcp 5555 20 >"$TMP/tcp-listen" &
    lp=$!
    sleep 0.5
    via_pub=$(probe gw connect-tcp "${PUB_IP[$r]}:5555" 1)
    in_ns gw ip route add "$net.0/24" via "${PUB_IP[$r]}"
    via_priv=$(probe gw connect-tcp "$net.2:5555" 1)
    lan_ok=$(probe "$r" connect-tcp "$net.2:5555" 2)
    sleep 0.3
    kill "$lp" 2>/dev/null || true
    wait "$lp" 2>/dev/null || true
    out=$(cat "$TMP/tcp-listen")
    echo "  gateway -> ${PUB_IP[$r]}:5555: $via_pub | -> $net.2:5555 routed via r$x: $via_priv" \
      "| r$x (LAN side) -> w$x:5555: $lan_ok | w$x's listener saw: $(tr '\n' ' ' <<<"$out")"
    check "NAT $x: a new inbound tcp connection to the public address fails" [ "${via_pub%%:*}" == failed ]
    check "NAT $x: a new inbound tcp connection routed to the private address is dropped" \
      [ "${via_priv%%:*}" == failed ]
    check "NAT $x: the listener saw only the LAN-side control connection" [ "$(grep -c accepted <<<"$out")" == 1 ]
    if [[ $x == a ]]; then
      in_ns "$r" iptables -P FORWARD ACCEPT
      via_priv=$(probe gw connect-tcp "$net.2:5555" 1)
      in_ns "$r" iptables -P FORWARD DROP
      # Connected, or refused by worker-a's kernel once the listener is gone: either way the
      # packet reached the worker.
      check "sensitivity: with r$x's forward policy opened the same connection gets through ($via_priv)" \
        got_through "$via_priv"
    fi
    in_ns gw ip route del "$net.0/24" via "${PUB_IP[$r]}"
  done
}

# ---------------------------------------------------------------------------------------------
# Nodes
# ---------------------------------------------------------------------------------------------
BOOT_ADDR=/ip4/${PUB_IP[boot]}/tcp/4001
# Workers reach the relay over QUIC and the bootstrap over TCP, so each learns its public
# address for both transports (what DCUtR offers the other side).
RELAY_ADDR=/ip4/${PUB_IP[relay]}/udp/4001/quic-v1
NODE_LOG_LEVEL=${NETNS_RUST_LOG:-info,p2p_network::network=debug,libp2p_dcutr=debug}
declare -A NODE_LOG=() NODE_T0=() STARTS=() ID=()

# write_config NODE ROLE CAPABILITIES EXTERNAL_IP(or "") BOOTSTRAP_PEERS(yaml flow list) [LISTEN_IP]
write_config() {
  local node=$1 role=$2 caps=$3 ext=$4 boot=$5 listen=${6:-0.0.0.0} dir=$TMP/$1
  mkdir -p "$dir"
  local external="[]"
  [[ -n "$ext" ]] && external="[\"/ip4/$ext/tcp/4001\", \"/ip4/$ext/udp/4001/quic-v1\"]"
  cat >"$dir/config.yaml" <<YAML
node:
  role: "$role"
  listen_address: "$listen"
  listen_port: 4001
  capabilities: $caps
  heartbeat_interval: 1
  external_addresses: $external
  identity_file: "node.key"
network:
  enable_mdns: false
  enable_relay: true
  connection_timeout: $CONN_TIMEOUT
  bootstrap_peers: $boot
api:
  listen: "127.0.0.1:8080"
metrics:
  listen: "127.0.0.1:9090"
tasks:
  compute_difficulty: 4
  default_timeout_ms: 10000
log:
  format: "json"
YAML
}

# start_node NODE [ENV=VALUE...]: the node is named after its namespace; one log per start.
start_node() {
  local node=$1
  shift
  local dir=$TMP/$node n=$((${STARTS[$node]:-0} + 1))
  STARTS[$node]=$n
  NODE_LOG[$node]=$dir/node-$n.log
  NODE_T0[$node]=$(now_ms)
  ip netns exec "$P-$node" env RUST_LOG="$NODE_LOG_LEVEL" "$@" \
    "$BIN" --config "$dir/config.yaml" run >"${NODE_LOG[$node]}" 2>&1 &
  NODE_PID[$node]=$!
}

stop_node() { # NODE
  local node=$1 pid=${NODE_PID[$1]:-}
  [[ -n "$pid" ]] || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  unset "NODE_PID[$node]"
}

# A node restarted as someone new: fresh identity, fresh process.
restart_fresh() { # NODE [ENV=VALUE...]
  stop_node "$1"
  rm -f "$TMP/$1/node.key"
  start_node "$@"
}

api() { # NODE PATH: GET the node's API from inside its namespace
  in_ns "$1" curl -sf --max-time 5 "http://127.0.0.1:8080$2"
}
cli() { # NODE ARGS...: the CLI, as an operator types it inside the node's namespace
  local node=$1
  shift
  in_ns "$node" timeout 60 "$BIN" --config "$TMP/$node/config.yaml" "$@"
}
metric() { # NODE SERIES (exact, with labels): its value, empty if absent
  in_ns "$1" curl -sf --max-time 5 http://127.0.0.1:9090/metrics | awk -v s="$2" '$1 == s {print $2}'
}
peer_id() { api "$1" /v1/status | jq -r .peer_id; }

# wait_until SECONDS COMMAND...: poll every 100 ms; 0 when the command succeeded in time.
wait_until() {
  local limit=$1
  shift
  local end=$(($(now_ms) + limit * 1000))
  while (($(now_ms) < end)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  return 1
}

# wait_deadline EPOCH_MS COMMAND...: like wait_until, against a shared deadline.
wait_deadline() {
  local end=$1
  shift
  while (($(now_ms) < end)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  "$@" >/dev/null 2>&1
}

# log_ms NODE JQ_CONDITION: epoch ms of the first event of the node's current log that matches.
log_ms() {
  jq -rR "fromjson? | select($2) | (.timestamp[0:19] + \"Z\" | fromdateiso8601) * 1000 + (.timestamp[20:23] | tonumber)" \
    "${NODE_LOG[$1]}" 2>/dev/null | head -n1
}
has_log() { [[ -n "$(log_ms "$1" "$2")" ]]; }
log_field() { # NODE JQ_CONDITION FIELD: the field of the first matching event
  jq -rR "fromjson? | select($2) | .$3" "${NODE_LOG[$1]}" 2>/dev/null | head -n1
}
conn_to() { # PEER_ID RELAYED(true|false): jq condition for our "connection established" line
  echo ".message == \"connection established\" and .peer == \"$1\" and .relayed == $2"
}

nat_is() { [[ "$(api "$1" /v1/status | jq -r .nat_status)" == "$2" ]]; }
has_circuit_listen() { api "$1" /v1/status | jq -e '[.listen_addresses[] | select(contains("/p2p-circuit"))] | length > 0'; }
sees_circuit_of() { # NODE PEER_ID: NODE's view of PEER lists a /p2p-circuit address
  api "$1" /v1/peers | jq -e --arg p "$2" '[.peers[] | select(.peer_id == $p) | .addresses[] | select(contains("/p2p-circuit"))] | length > 0'
}
knows_compute_worker() { api "$1" /v1/capabilities | jq -e '.cluster.compute.alive_workers >= 1'; }
conn_kind() { # NODE PEER_ID: the CONN column of `peers`, as an operator reads it
  cli "$1" peers | awk -v p="$2" '$1 == p {print $4}'
}

# submit NODE TYPE PAYLOAD BOUND_S: one task through the HTTP API, waiting for its end.
# Prints: state worker seconds error ("hung" when no answer within the bound).
submit() {
  local out body secs
  out=$(in_ns "$1" curl -s --max-time "$4" -w '\n%{time_total}' -H 'content-type: application/json' \
    -d "{\"type\":\"$2\",\"payload\":\"$3\"}" "http://127.0.0.1:8080/v1/tasks?wait=true") || true
  secs=${out##*$'\n'}
  body=${out%$'\n'*}
  if [[ -z "$body" || "$body" == "$out" ]]; then
    echo "hung - $secs no answer within $4 s"
    return
  fi
  jq -r --arg s "$secs" '[.state // "error", (.worker // "-"), $s, (.error // "")] | join(" ")' <<<"$body" 2>/dev/null ||
    echo "error - $secs $body"
}

# stats LABEL FILE: count, median, p90, min and max of the numbers in FILE (milliseconds).
stats() {
  sort -n "$2" | awk -v l="$1" '{v[NR]=$1} END {
    if (NR == 0) { printf "  %-52s no samples\n", l; exit }
    printf "  %-52s n=%d median %.1f ms  p90 %.1f ms  min %.1f  max %.1f\n", l, NR,
      v[int((NR+1)/2)], v[int(NR*0.9 + 0.999)], v[1], v[NR] }'
}

MEASURED=()
measure() { MEASURED+=("$(printf '  %-52s %s' "$1" "$2")"); }

start_cluster() {
  echo "== starting bootstrap, relay, gateway (public) and worker-a, worker-b, worker-s (behind NAT)"
  write_config boot bootstrap "[]" "${PUB_IP[boot]}" "[]"
  write_config relay relay "[]" "${PUB_IP[relay]}" "[\"$BOOT_ADDR\"]"
  # The gateway: a public node that runs no tasks itself (role bootstrap: no executor).
  write_config gw bootstrap "[]" "${PUB_IP[gw]}" "[\"$BOOT_ADDR\"]"
  # worker-b is the only one with the compute capability, so every compute task goes to it;
  # worker-a and worker-s submit them (every node is a gateway).
  local x listen caps
  for x in a b s; do
    listen=0.0.0.0
    [[ "$WORKER_LISTEN" == lan ]] && listen=${LAN_NET[$x]}.2
    caps='[]'
    [[ $x == b ]] && caps='["compute"]'
    write_config "w$x" worker "$caps" "" "[\"$BOOT_ADDR\", \"$RELAY_ADDR\"]" "$listen"
  done
  start_node boot
  # Circuits are cut by the relay after RELAY_CIRCUIT_SECS (the shipped default is 600 s), so
  # that the symmetric-NAT phase, which lives on the relay, sees its circuit end and renewed.
  start_node relay P2P_RELAY__MAX_CIRCUIT_DURATION_SECS="$RELAY_CIRCUIT_SECS"
  start_node gw
  wait_until 10 api boot /readyz || bad "bootstrap not ready in 10 s"
  for x in a b s; do start_node "w$x"; done
  for n in boot relay gw wa wb ws; do
    wait_until 10 peer_id "$n" || true
    ID[$n]=$(peer_id "$n" 2>/dev/null || echo "?")
    echo "  $n: ${ID[$n]}  (log $(basename "${NODE_LOG[$n]}"))"
  done
}

# ---------------------------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------------------------

# Each worker reserves a slot on the relay, advertises its circuit, and learns it is behind NAT.
# The circuit comes first: a worker told no public address of its own reserves while AutoNAT is
# still undecided, so it is reachable long before AutoNAT's verdict.
scenario_reachability() {
  echo "== behind NAT: a relay reservation, the circuit address advertised, AutoNAT says private"
  local x n t0
  declare -A t_private=() t_resv=() t_adv=()
  # One deadline for all: the workers started together.
  local deadline=$((NODE_T0[wa] + REACH_BOUND * 1000))
  # Reachable through the relay: every worker first, so that no wait (AutoNAT's boot delay
  # above all) delays another's figure.
  for x in a b s; do
    n=w$x
    t0=${NODE_T0[$n]}
    t_resv[$n]=- t_adv[$n]=-
    if wait_deadline "$deadline" has_circuit_listen "$n"; then
      t_resv[$n]=$(($(log_ms "$n" '.message == "relay reservation accepted"') - t0))
      ok "$n: reserved a relay slot and listens on /p2p-circuit (${t_resv[$n]} ms after start)"
    else
      bad "$n: no /p2p-circuit listen address within ${REACH_BOUND} s"
    fi
    if wait_deadline "$deadline" sees_circuit_of gw "${ID[$n]}"; then
      t_adv[$n]=$(($(now_ms) - t0))
      ok "$n: the gateway knows its circuit address (${t_adv[$n]} ms after start)"
    else
      bad "$n: the gateway never learned a circuit address of $n"
    fi
  done
  check "gateway (public) sees itself as public" wait_deadline "$deadline" nat_is gw public
  for x in a b s; do
    n=w$x
    t0=${NODE_T0[$n]}
    t_private[$n]=-
    if wait_deadline "$deadline" nat_is "$n" private; then
      t_private[$n]=$(($(log_ms "$n" '.message == "NAT status changed" and .status == "private"') - t0))
      ok "$n: AutoNAT reports private within ${REACH_BOUND} s (${t_private[$n]} ms after start)"
    else
      bad "$n: AutoNAT does not report private within ${REACH_BOUND} s (status: $(api "$n" /v1/status | jq -r .nat_status))"
    fi
    local line
    line=$(cli "$n" status | grep '^NAT status:' || true)
    check "$n: 'status' shows \"$line\"" [ "$(awk '{print $3}' <<<"$line")" == private ]
    check "$n: metric p2p_nat_status{status=\"private\"} is 1" \
      [ "$(metric "$n" 'p2p_nat_status{status="private"}')" == 1 ]
    # Still holding the reservation once AutoNAT has decided.
    check "$n: metric p2p_relay_reservations >= 1 (is $(metric "$n" p2p_relay_reservations))" \
      [ "$(metric "$n" p2p_relay_reservations)" -ge 1 ]
    measure "$n start -> reserved / advertised at gw / private" \
      "${t_resv[$n]} / ${t_adv[$n]} / ${t_private[$n]} ms"
  done
}

# The public gateway gives worker-b tasks: worker-b never connected to it, so they go through
# the relay; the connection is relayed on both sides and stays so (LAN b cannot reach the gw).
scenario_gateway_via_relay() {
  echo "== the gateway dispatches to worker-b through the relay"
  local i res ok_count=0 out
  for i in 1 2 3; do
    res=$(submit gw compute "via-relay-$i" 40)
    echo "  gw task $i: $res"
    [[ "$res" == "completed ${ID[wb]} "* ]] && ok_count=$((ok_count + 1))
  done
  check "gateway -> worker-b: 3 of 3 compute tasks completed ($ok_count)" [ "$ok_count" == 3 ]
  out=$(cli gw task compute "cli-via-relay" 2>&1) && i=0 || i=$?
  echo "  gw CLI 'task compute cli-via-relay': exit $i: $(head -n1 <<<"$out")"
  check "gateway CLI 'task compute' completes on worker-b (exit $i)" [ "$i" == 0 ]
  check "gateway 'peers' shows worker-b relayed (shows $(conn_kind gw "${ID[wb]}"))" \
    [ "$(conn_kind gw "${ID[wb]}")" == relayed ]
  check "worker-b 'peers' shows the gateway relayed (shows $(conn_kind wb "${ID[gw]}"))" \
    [ "$(conn_kind wb "${ID[gw]}")" == relayed ]
}

# Only TCP or only QUIC between LAN a and LAN b for one trial (router-a drops the other).
force_transport() { # tcp|quic|any
  in_ns ra iptables -F TRIAL
  local block=""
  [[ $1 == tcp ]] && block=udp
  [[ $1 == quic ]] && block=tcp
  if [[ -n "$block" ]]; then
    in_ns ra iptables -A TRIAL -p "$block" -d "${PUB_IP[rb]}" -j DROP
    in_ns ra iptables -A TRIAL -p "$block" -s "${PUB_IP[rb]}" -j DROP
  fi
}

# One trial: worker-a comes up as a new peer (fresh identity, and a port of its own so that no
# NAT or socket state of an earlier trial can help or hinder), gives worker-b a task (first
# contact: through the relay), and the two must end up directly connected (DCUtR) within
# DIRECT_BOUND of the relayed connection.
cone_trial() { # N TRANSPORT
  local n=$1 tr=$2 res t_rel t_dir kind addr verdict="direct" punch t_trial=$SECONDS
  force_transport "$tr"
  local port=$((4100 + n))
  [[ "$TRIAL_PORT" == same ]] && port=4001
  restart_fresh wa P2P_NODE__LISTEN_PORT=$port RUST_LOG="$NODE_LOG_LEVEL,libp2p_swarm=debug"
  if ! wait_until 20 knows_compute_worker wa; then
    echo "  trial $n ($tr): worker-a never saw worker-b as a compute worker"
    return 1
  fi
  ID[wa]=$(peer_id wa)
  res=$(submit wa compute "trial-$n" 40)
  t_rel=$(log_ms wa "$(conn_to "${ID[wb]}" true)")
  local direct_after
  direct_after="$(conn_to "${ID[wb]}" false) and .timestamp >= \"$(log_field wa "$(conn_to "${ID[wb]}" true)" timestamp)\""
  wait_until "$DIRECT_BOUND" has_log wa "$direct_after" || true
  t_dir=$(log_ms wa "$direct_after")
  addr=$(log_field wa "$direct_after" address)
  addr=${addr%%/p2p/*}
  punch=$(log_field wa ".message == \"hole punch finished\" and .peer == \"${ID[wb]}\"" outcome)
  kind=$(conn_kind wa "${ID[wb]}")
  local dt="-"
  [[ -n "$t_rel" && -n "$t_dir" ]] && dt=$((t_dir - t_rel))
  if [[ "$res" != completed* ]]; then
    verdict="task ${res%% *}"
  elif [[ -z "$t_rel" ]]; then
    verdict="no relayed connection first"
  elif [[ -z "$t_dir" ]]; then
    verdict="no direct connection within ${DIRECT_BOUND} s"
  elif [[ $tr == tcp && "$addr" != */tcp/* ]] || [[ $tr == quic && "$addr" != */quic-v1* ]]; then
    verdict="direct over the wrong transport ($addr)"
  elif [[ "$kind" != direct ]]; then
    verdict="'peers' shows $kind"
  fi
  # Is the relayed connection still open a second after the upgrade? (libp2p_swarm's own log)
  local kept=-
  if [[ -n "$t_dir" ]]; then
    sleep 1
    if has_log wa ".message | startswith(\"Connection closed\") and contains(\"p2p-circuit\") and contains(\"${ID[wb]}\")"; then
      kept=closed
    else
      kept=open
      echo x >>"$TMP/relayed-kept"
    fi
  fi
  printf '  trial %2d %-4s %2ss task: %-9s relayed->direct: %5s ms  dcutr: %-7s relayed conn after: %-6s peers: %-7s via %s => %s\n' \
    "$n" "$tr" "$((SECONDS - t_trial))" "${res%% *}" "$dt" "${punch:--}" "$kept" "${kind:--}" "${addr:--}" "$verdict"
  [[ "$dt" != - ]] && echo "$dt" >>"$TMP/upgrade-$tr.ms"
  [[ "$verdict" == direct ]]
}

scenario_cone_trials() {
  echo "== hole punching between worker-a and worker-b (cone-like NATs): $CONE_TRIALS trials, bound ${DIRECT_BOUND} s"
  local i tr tcp_ok=0 tcp_n=0 quic_ok=0 quic_n=0
  : >"$TMP/upgrade-tcp.ms"
  : >"$TMP/relayed-kept"
  : >"$TMP/upgrade-quic.ms"
  for i in $(seq 1 "$CONE_TRIALS"); do
    if ((SECONDS - T_START > BUDGET)); then
      bad "cone: out of the time budget (${BUDGET} s) after $((i - 1)) trials"
      break
    fi
    tr=tcp
    ((i % 2 == 0)) && tr=quic
    if [[ $tr == tcp ]]; then tcp_n=$((tcp_n + 1)); else quic_n=$((quic_n + 1)); fi
    if cone_trial "$i" "$tr"; then
      if [[ $tr == tcp ]]; then tcp_ok=$((tcp_ok + 1)); else quic_ok=$((quic_ok + 1)); fi
    fi
  done
  force_transport any
  local total=$((tcp_ok + quic_ok))
  check "cone: direct within ${DIRECT_BOUND} s in $total of $CONE_TRIALS trials (need $CONE_MIN)" [ "$total" -ge "$CONE_MIN" ]
  check "cone: TCP hole punching works ($tcp_ok of $tcp_n)" [ "$tcp_ok" -ge 1 ]
  check "cone: QUIC hole punching works ($quic_ok of $quic_n)" [ "$quic_ok" -ge 1 ]
  measure "hole-punch success rate (TCP, QUIC)" "$tcp_ok/$tcp_n, $quic_ok/$quic_n"
  stats "relayed -> direct, TCP" "$TMP/upgrade-tcp.ms" >>"$TMP/stats"
  stats "relayed -> direct, QUIC" "$TMP/upgrade-quic.ms" >>"$TMP/stats"
  measure "trials whose relayed connection stayed open after the upgrade" "$(wc -l <"$TMP/relayed-kept") of $total"
}

# worker-s (symmetric NAT) gives worker-b tasks: the connection is relayed, DCUtR fails, the
# connection stays relayed and every task ends (none hangs) while the hole punch is tried.
scenario_symmetric() {
  echo "== symmetric NAT: worker-s -> worker-b stays relayed; tasks end; $SYM_TRIALS trial(s)"
  local trial
  for trial in $(seq 1 "$SYM_TRIALS"); do
    restart_fresh ws
    if ! wait_until 20 knows_compute_worker ws; then
      bad "symmetric trial $trial: worker-s never saw worker-b as a compute worker"
      continue
    fi
    ID[ws]=$(peer_id ws)
    local t_first end i=0 done_n=0 hung=0 failed_n=0 res outcome="" punched_by=""
    t_first=$(now_ms)
    end=$((t_first + SYM_BOUND * 1000))
    while (($(now_ms) < end)); do
      i=$((i + 1))
      res=$(submit ws compute "sym-$trial-$i" 40)
      case "$res" in
        completed*) done_n=$((done_n + 1)) ;;
        hung*) hung=$((hung + 1)) ;;
        *) failed_n=$((failed_n + 1)); echo "  task $i: $res" ;;
      esac
      # DCUtR is run by the side that accepted the relayed connection: worker-b when worker-s
      # dialed it for a task, worker-s when worker-b dialed first (a membership ping).
      outcome=$(log_field wb ".message == \"hole punch finished\" and .peer == \"${ID[ws]}\"" outcome)
      punched_by=wb
      if [[ -z "$outcome" ]]; then
        outcome=$(log_field ws ".message == \"hole punch finished\" and .peer == \"${ID[wb]}\"" outcome)
        punched_by=ws
      fi
      [[ -n "$outcome" ]] && break
      sleep 1
    done
    local direct relayed kind_s kind_b circuits
    relayed=$(log_ms ws "$(conn_to "${ID[wb]}" true)")
    circuits=$(jq -cR "fromjson? | select($(conn_to "${ID[wb]}" true))" "${NODE_LOG[ws]}" | wc -l)
    direct=$(log_ms ws "$(conn_to "${ID[wb]}" false)")
    kind_s=$(conn_kind ws "${ID[wb]}")
    kind_b=$(conn_kind wb "${ID[ws]}")
    local verdict="no verdict in ${SYM_BOUND} s"
    [[ -n "$outcome" ]] && verdict="$outcome (on $punched_by)"
    echo "  trial $trial: $i tasks in $((($(now_ms) - t_first) / 1000)) s: $done_n completed, $failed_n failed, $hung hung;" \
      "relayed connections to wb: $circuits; hole punch: $verdict;" \
      "peers: ws sees wb $kind_s, wb sees ws $kind_b"
    check "symmetric $trial: worker-s reached worker-b through the relay" [ -n "$relayed" ]
    check "symmetric $trial: no direct connection" [ -z "$direct" ]
    check "symmetric $trial: no task hung ($hung)" [ "$hung" == 0 ]
    check "symmetric $trial: every task completed over the relay ($done_n of $i)" [ "$done_n" == "$i" ]
    if ((RELAY_CIRCUIT_SECS < SYM_BOUND)); then
      check "symmetric $trial: the relay cut the circuit after ${RELAY_CIRCUIT_SECS} s and worker-s came back through it ($circuits relayed connections)" \
        [ "$circuits" -ge 2 ]
    fi
    check "symmetric $trial: DCUtR reports the failure within ${SYM_BOUND} s (${outcome:-none})" [ "$outcome" == failure ]
    check "symmetric $trial: worker-s 'peers' shows worker-b relayed ($kind_s)" [ "$kind_s" == relayed ]
    check "symmetric $trial: worker-b 'peers' shows worker-s relayed ($kind_b)" [ "$kind_b" == relayed ]
  done
}

# Round trips of small tasks, measured by the submitter (HTTP API in its namespace, ?wait=true).
rtt_series() { # NODE TYPE WANT_WORKER_ID FILE: RTT_TASKS samples of tasks that ran on that worker
  local node=$1 type=$2 want=$3 file=$4 got=0 tries=0 res end
  end=$(($(now_ms) + 30000))
  : >"$file"
  while ((got < RTT_TASKS && tries < RTT_TASKS * 6 && $(now_ms) < end)); do
    tries=$((tries + 1))
    res=$(submit "$node" "$type" "rtt-$tries" 10)
    read -r state worker secs _ <<<"$res"
    if [[ "$state" == completed && "$worker" == "$want" ]]; then
      awk -v s="$secs" 'BEGIN {printf "%.3f\n", s * 1000}' >>"$file"
      got=$((got + 1))
    fi
  done
}

scenario_rtt() {
  echo "== round-trip time of small tasks, relayed vs direct ($RTT_TASKS each)"
  # worker-a is now directly connected to worker-b (the last cone trial, both transports open).
  restart_fresh wa P2P_NODE__LISTEN_PORT=4099
  wait_until 20 knows_compute_worker wa || true
  ID[wa]=$(peer_id wa)
  submit wa compute warm-up 40 >/dev/null
  wait_until "$DIRECT_BOUND" has_log wa "$(conn_to "${ID[wb]}" false)" || true
  rtt_series wa compute "${ID[wb]}" "$TMP/rtt-a-b"
  rtt_series ws compute "${ID[wb]}" "$TMP/rtt-s-b"
  rtt_series gw echo "${ID[wb]}" "$TMP/rtt-gw-b"
  rtt_series gw echo "${ID[wa]}" "$TMP/rtt-gw-a"
  {
    stats "compute a->b, hole-punched ($(conn_kind wa "${ID[wb]}"))" "$TMP/rtt-a-b"
    stats "compute s->b, symmetric NAT ($(conn_kind ws "${ID[wb]}"))" "$TMP/rtt-s-b"
    stats "echo gw->b, gateway via relay ($(conn_kind gw "${ID[wb]}"))" "$TMP/rtt-gw-b"
    stats "echo gw->a, worker dialed out ($(conn_kind gw "${ID[wa]}"))" "$TMP/rtt-gw-a"
    echo "  ping RTT in 'peers': a->b $(api wa /v1/peers | jq -r --arg p "${ID[wb]}" '.peers[] | select(.peer_id == $p) | .rtt_ms') ms," \
      "s->b $(api ws /v1/peers | jq -r --arg p "${ID[wb]}" '.peers[] | select(.peer_id == $p) | .rtt_ms') ms"
  } >>"$TMP/stats"
  check "RTT: samples for every path" non_empty "$TMP/rtt-a-b" "$TMP/rtt-s-b" "$TMP/rtt-gw-b" "$TMP/rtt-gw-a"
}

# ---------------------------------------------------------------------------------------------
T_START=$SECONDS
build_topology
check_network
if [[ "$ONLY" != topology ]]; then
  start_cluster
  if [[ "$ONLY" == hold ]]; then
    echo "holding ${NETNS_HOLD:-300} s: namespaces $P-*, node dirs in $TMP"
    sleep "${NETNS_HOLD:-300}" &
    wait $!
  else
    scenario_reachability
    scenario_gateway_via_relay
    scenario_cone_trials
    scenario_symmetric
    scenario_rtt
  fi
fi

if [[ -n "${NODE_PID[relay]:-}" ]]; then
  # Denied for a limit or for want of the destination's reservation; no series means none.
  denied=$(metric relay 'libp2p_relay_events_total{event="CircuitReqDenied"}') || denied="?"
  measure "circuit requests the relay denied" "${denied:-0}"
fi
echo "== measured"
printf '%s\n' "${MEASURED[@]}"
[[ -f "$TMP/stats" ]] && cat "$TMP/stats"
echo "  whole run: $((SECONDS - T_START)) s"
if ((failed > 0)); then
  echo "== failed checks"
  printf '  %s\n' "${FAILURES[@]}"
fi
echo "netns: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
