#!/usr/bin/env bash
# bash -n and shellcheck on every shell script in the repository.
# Installs shellcheck from Debian's packages when it is missing (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v shellcheck >/dev/null; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "installing shellcheck (apt-get)"
    (apt-get install -y -qq shellcheck >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get install -y -qq shellcheck >/dev/null; })
  fi
fi
command -v shellcheck >/dev/null || { echo "shellcheck is not installed and cannot be installed here (need root and apt-get)"; exit 77; }

mapfile -t scripts < <(git ls-files '*.sh' .ci/run; git ls-files --others --exclude-standard '*.sh')
passed=0 failed=0
for f in "${scripts[@]}"; do
  [[ -f "$f" ]] || continue
  if bash -n "$f" && shellcheck -x "$f"; then
    passed=$((passed + 1))
  else
    echo "FAIL: $f"
    failed=$((failed + 1))
  fi
done
echo "check-shell: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
