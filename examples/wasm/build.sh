#!/usr/bin/env bash
# Builds the example WebAssembly modules (src/*.rs -> <name>.wasm beside this script) for
# wasm32-wasip1, the WASI preview 1 target the cluster runs. The built files are committed,
# so tests and users never need this toolchain; run this after changing a source.
#
#   examples/wasm/build.sh
#
# Needs rustup (the target is added through it) and rustc.
set -euo pipefail
cd "$(dirname "$0")"

TARGET=wasm32-wasip1
if ! command -v rustup >/dev/null 2>&1; then
  echo "build.sh: rustup is not installed: cannot add the $TARGET target (https://rustup.rs)" >&2
  exit 1
fi
if ! rustup target list --installed | grep -qx "$TARGET"; then
  echo "build.sh: adding the $TARGET target through rustup"
  if ! rustup target add "$TARGET"; then
    echo "build.sh: cannot install the $TARGET target (offline?); the committed .wasm files still work" >&2
    exit 1
  fi
fi
# Each src/*.rs is one module; src/shared/ holds code a module shares with native builds.
for src in src/*.rs; do
  name=$(basename "$src" .rs)
  rustc --edition 2021 --target "$TARGET" -C opt-level=3 -C strip=symbols -C panic=abort \
    -o "$name.wasm" "$src"
  chmod 644 "$name.wasm" # rustc marks its output executable; a module is data
  echo "built $name.wasm ($(wc -c <"$name.wasm") bytes, sha256:$(sha256sum "$name.wasm" | cut -d' ' -f1))"
done
