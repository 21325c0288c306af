#!/usr/bin/env bash
# Trace tests: a real OTLP/HTTP receiver (tests/trace/trace_test.py, decoding protobuf with the
# official opentelemetry-proto package) and a throwaway cluster of the node binary on
# 127.0.0.1 (a gateway and two workers), started and stopped by the test itself.
#
#   tests/trace/run.sh
#
# Environment:
#   P2P_NODE_BIN   the node binary (default target/release/p2p-node, then target/debug/p2p-node);
#                  copied first, so a rebuild cannot disturb it
#   KEEP_WORK=1    keep the nodes' logs and configs (the path is printed)
#
# Installs (idempotent): a venv in .venv-tools/trace with requirements.txt.
# Exits non-zero when a check failed. Last line: "trace: N passed, N failed".
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
VENV="$ROOT/.venv-tools/trace"

log() { printf '[trace-tests] %s\n' "$*"; }

python_bin=$(command -v python3 || true)
if [[ -z "$python_bin" ]]; then
  log "python3 is not installed"
  echo "trace: 0 passed, 1 failed"
  exit 1
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

bin=${P2P_NODE_BIN:-}
if [[ -z "$bin" ]]; then
  for c in "$ROOT/target/release/p2p-node" "$ROOT/target/debug/p2p-node"; do
    [[ -x "$c" ]] && { bin=$c; break; }
  done
fi
if [[ -z "$bin" || ! -x "$bin" ]]; then
  log "no node binary: build it (cargo build --release) or set P2P_NODE_BIN"
  echo "trace: 0 passed, 1 failed"
  exit 1
fi

exec timeout 600 "$VENV/bin/python" "$HERE/trace_test.py" --bin "$bin"
