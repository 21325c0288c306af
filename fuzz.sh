#!/usr/bin/env bash
# Fuzz every decoder of untrusted input (task and probe codecs, task lane frames, gossip
# messages, the config parser) for a bounded time each, then minimise the corpus. Not part of
# ./test.sh, which replays the committed corpus through the same entry points on the stable
# toolchain.
#
#   ./fuzz.sh                 60 s per target, every target
#   ./fuzz.sh 300             300 s per target
#   ./fuzz.sh 30 gossip       30 s, one target (task_request task_response task_lane probe gossip config)
#
# Needs the nightly toolchain and cargo-fuzz; both are installed here if missing (rustup and
# crates.io). A crash leaves its input in fuzz/artifacts/<target>/ and fails the run; fix it,
# then add the input to fuzz/corpus/<target>/ so the replay test keeps it fixed.
set -euo pipefail
cd "$(dirname "$0")"

SECONDS_PER_TARGET=${1:-60}
shift || true
TARGETS=("$@")
[[ ${#TARGETS[@]} -gt 0 ]] || TARGETS=(task_request task_response task_lane probe gossip config)
if ! [[ "$SECONDS_PER_TARGET" =~ ^[0-9]+$ ]] || ((SECONDS_PER_TARGET == 0)); then
  echo "usage: ./fuzz.sh [SECONDS_PER_TARGET] [TARGET...]" >&2
  exit 2
fi

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

# No sanitizer: the code has no `unsafe`, and uninstrumented runs are several times faster.
FUZZ=(cargo +nightly fuzz)
OPTS=(--sanitizer none --fuzz-dir fuzz)
failed=0
for target in "${TARGETS[@]}"; do
  echo "=== $target: ${SECONDS_PER_TARGET} s"
  mkdir -p "fuzz/corpus/$target"
  if ! "${FUZZ[@]}" run "${OPTS[@]}" "$target" "fuzz/corpus/$target" -- \
    -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1; then
    echo "=== $target: FAILED (input in fuzz/artifacts/$target/)"
    failed=1
    continue
  fi
  # Keep the committed corpus small: only inputs that add coverage.
  "${FUZZ[@]}" cmin "${OPTS[@]}" "$target" "fuzz/corpus/$target"
  echo "=== $target: ok, $(find "fuzz/corpus/$target" -type f | wc -l) corpus inputs"
done
exit "$failed"
