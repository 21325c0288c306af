#!/usr/bin/env bash
# Create .venv-tools/ray (idempotent) with the Ray pinned in
# bench/requirements-ray.txt, for bench/ray_bench.py.
# Installs only when `import ray` fails or gives another version.
# The last line printed is the venv's python, e.g.:
#   py=$(bench/setup-ray-venv.sh | tail -n1); "$py" bench/ray_bench.py
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-tools/ray
req=bench/requirements-ray.txt
want=$(sed -n 's/^ray==\([^[:space:]]*\).*/\1/p' "$req")
[[ -n "$want" ]] || { echo "no ray==VERSION line in $req" >&2; exit 1; }

if [[ ! -x "$venv/bin/python" ]]; then
  echo "creating $venv" >&2
  python3 -m venv "$venv"
fi
py="$PWD/$venv/bin/python"

have=$("$py" -c 'import ray; print(ray.__version__)' 2>/dev/null || true)
if [[ "$have" != "$want" ]]; then
  echo "installing ray==$want into $venv (found: ${have:-none})" >&2
  "$py" -m pip install --disable-pip-version-check -q -r "$req" >&2
  have=$("$py" -c 'import ray; print(ray.__version__)')
  [[ "$have" == "$want" ]] || { echo "ray $have installed, wanted $want" >&2; exit 1; }
fi
echo "ray $have in $venv" >&2
echo "$py"
