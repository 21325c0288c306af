#!/usr/bin/env bash
# Deploy p2p-network to the Kubernetes cluster of the current kubectl context.
#
#   ./deploy.sh [kind|minikube|monitoring|private]      (default: kind)
#
#   kind        k8s/overlays/kind: image loaded by ./build.sh, imagePullPolicy Never
#   minikube    k8s/overlays/minikube: the same for minikube
#   monitoring  k8s/overlays/monitoring: the base plus a ServiceMonitor; needs the
#               Prometheus Operator's CRDs (kube-prometheus-stack) in the cluster
#   private     k8s/overlays/private: kind as a private cluster; every node proves the
#               pre-shared key in Secret p2p-network-psk (created here once if missing;
#               QUIC off, see docs/security.md)
#
# Steps: check the cluster answers (stop, changing nothing, if not); render the overlay;
# create the identity Secrets of bootstrap and relay once (never replaced: they hold the
# stable peer ids); kubectl apply -k; wait for every rollout; print pods, Services and how
# to submit a task.
#
# Environment:
#   ROLLOUT_TIMEOUT=180s   per-Deployment wait
#   P2P_NODE_BIN=path      binary used to create identity keys (default target/release/p2p-node;
#                          without one, the image $IMAGE is run with docker to create them)
#   IMAGE=name:tag         image for that fallback (default p2p-network:latest)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

namespace=net-test
deployments=(p2p-bootstrap p2p-relay p2p-worker)
identity_roles=(bootstrap relay)
rollout_timeout="${ROLLOUT_TIMEOUT:-180s}"
image="${IMAGE:-p2p-network:latest}"

say() { printf '==> %s\n' "$*"; }
warn() { printf 'deploy.sh: warning: %s\n' "$*" >&2; }
die() {
    printf 'deploy.sh: error: %s\n' "$*" >&2
    exit 1
}

target="${1:-kind}"
case "$target" in
kind | minikube | monitoring | private) ;;
-h | --help)
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
    exit 0
    ;;
*) die "unknown target '$target': use kind, minikube, monitoring or private" ;;
esac
(($# <= 1)) || die "too many arguments (usage: ./deploy.sh [kind|minikube|monitoring|private])"
overlay="k8s/overlays/$target"

# --- 1. a reachable cluster, or stop here having changed nothing ----------------------------

command -v kubectl >/dev/null ||
    die "kubectl not found: install it (https://kubernetes.io/docs/tasks/tools/) and create a cluster first"

# kubectl with a hard deadline too: an exec credential plugin can hang past --request-timeout.
kc() {
    if command -v timeout >/dev/null; then
        timeout 20 kubectl --request-timeout=5s "$@"
    else
        kubectl --request-timeout=5s "$@"
    fi
}

context="$(kubectl config current-context 2>/dev/null || true)"
[[ -n "$context" ]] ||
    die "no current kubectl context. Create a cluster first (kind create cluster, or minikube start). Nothing was changed."
# One cheap request (GET /version is open to every client); kubectl retries it once at most.
if ! kc get --raw /version >/dev/null 2>&1; then
    die "the cluster of kubectl context '$context' does not answer (GET /version failed, 5 s request timeout). Start it, or switch context (kubectl config use-context ...). Nothing was changed."
fi
say "cluster: context '$context' answers"
case "$target" in
kind) [[ "$context" == kind-* ]] || warn "target kind, but the context '$context' does not look like a kind cluster (kind-*)" ;;
minikube) [[ "$context" == minikube* ]] || warn "target minikube, but the context is '$context'" ;;
esac

# --- 2. everything that can fail without a change: render, CRDs, identity keys -------------

rendered="$(mktemp "${TMPDIR:-/tmp}/p2p-deploy.XXXXXX.yaml")"
keys="$(mktemp -d "${TMPDIR:-/tmp}/p2p-identity.XXXXXX")"
chmod 0700 "$keys"
trap 'rm -rf "$rendered" "$keys"' EXIT

kubectl kustomize "$overlay" >"$rendered" || die "kubectl kustomize $overlay failed. Nothing was changed."
say "rendered $overlay ($(grep -c '^kind:' "$rendered") objects)"

if [[ "$target" == monitoring ]] && ! kc get crd servicemonitors.monitoring.coreos.com >/dev/null 2>&1; then
    die "the cluster has no ServiceMonitor CRD (monitoring.coreos.com). Install the Prometheus Operator first, e.g. the kube-prometheus-stack Helm chart, or deploy without monitoring: ./deploy.sh kind. Nothing was changed."
fi

# Which identity Secrets are missing? (All of them when the namespace does not exist yet.)
# The private overlay also needs the cluster's pre-shared key.
missing=()
need_psk=false
if [[ "$target" == private ]] && ! kc -n "$namespace" get secret p2p-network-psk >/dev/null 2>&1; then
    need_psk=true
fi
for role in "${identity_roles[@]}"; do
    if ! kc -n "$namespace" get secret "p2p-$role-identity" >/dev/null 2>&1; then
        missing+=("$role")
    fi
done

# Keys are made by the node's own `p2p-node identity <file>` (its key format): with a local
# binary, or else by running the image built by ./build.sh.
node_bin="${P2P_NODE_BIN:-target/dist/p2p-node}"   # ./build.sh's binary
[[ -n "${P2P_NODE_BIN:-}" || -x "$node_bin" ]] || node_bin=target/release/p2p-node
if ((${#missing[@]} > 0)) || [[ "$need_psk" == true ]]; then
    if [[ -x "$node_bin" ]]; then
        key_maker=binary
    elif command -v docker >/dev/null && docker image inspect "$image" >/dev/null 2>&1; then
        key_maker=image
    else
        die "cannot create the identity Secrets (${missing[*]}): no executable $node_bin and no local image $image. Run ./build.sh first, or set P2P_NODE_BIN. Nothing was changed."
    fi
fi

declare -A peer_ids=()
for role in ${missing[@]+"${missing[@]}"}; do
    if [[ "$key_maker" == binary ]]; then
        out="$("$node_bin" identity "$keys/$role.key" 2>&1)" ||
            die "$node_bin identity failed for $role: $out. Nothing was changed."
    else
        out="$(docker run --rm --network none --user "$(id -u):$(id -g)" -v "$keys:/keys" \
            "$image" /app/p2p-node identity "/keys/$role.key" 2>&1)" ||
            die "p2p-node identity (in $image) failed for $role: $out. Nothing was changed."
    fi
    [[ -s "$keys/$role.key" ]] || die "p2p-node identity did not write the $role key file. Nothing was changed."
    # Ed25519 peer ids look like 12D3KooW...; the annotation is for people, nothing reads it.
    peer_ids[$role]="$(grep -oE '12D3Koo[1-9A-HJ-NP-Za-km-z]+' <<<"$out" | head -n 1 || true)"
done

if [[ "$need_psk" == true ]]; then
    if [[ "$key_maker" == binary ]]; then
        psk_out="$("$node_bin" psk "$keys/swarm.key" 2>&1)" || die "$node_bin psk failed: $psk_out. Nothing was changed."
    else
        psk_out="$(docker run --rm --network none --user "$(id -u):$(id -g)" -v "$keys:/keys" \
            "$image" /app/p2p-node psk /keys/swarm.key 2>&1)" ||
            die "p2p-node psk (in $image) failed: $psk_out. Nothing was changed."
    fi
    [[ -s "$keys/swarm.key" ]] || die "p2p-node psk did not write the key file. Nothing was changed."
fi

# --- 3. apply -------------------------------------------------------------------------------

say "namespace $namespace"
kubectl apply -f k8s/base/namespace.yaml

for role in ${missing[@]+"${missing[@]}"}; do
    secret="p2p-$role-identity"
    # create, never apply: an existing key is never overwritten (it is the peer id).
    kubectl -n "$namespace" create secret generic "$secret" \
        --from-file=identity.key="$keys/$role.key" --dry-run=client -o yaml |
        kubectl label --local -f - -o yaml app.kubernetes.io/name=p2p-network "role=$role" |
        kubectl annotate --local -f - -o yaml "p2p-network/peer-id=${peer_ids[$role]:-unknown}" |
        kubectl create -f -
    say "created Secret $secret (peer id ${peer_ids[$role]:-not printed})"
done
for role in "${identity_roles[@]}"; do
    [[ " ${missing[*]-} " == *" $role "* ]] || say "kept the existing Secret p2p-$role-identity (stable peer id)"
done
if [[ "$need_psk" == true ]]; then
    # create, never apply: every node of the cluster must keep the same key.
    kubectl -n "$namespace" create secret generic p2p-network-psk --from-file=swarm.key="$keys/swarm.key"
    say "created Secret p2p-network-psk (pre-shared key; fingerprint ${psk_out%%$'\n'*})"
elif [[ "$target" == private ]]; then
    say "kept the existing Secret p2p-network-psk (pre-shared key)"
fi
rm -rf "$keys"

say "kubectl apply -k $overlay"
kubectl apply -k "$overlay"

# --- 4. wait for the rollouts -----------------------------------------------------------------

failed=()
for d in "${deployments[@]}"; do
    say "waiting for deployment/$d (timeout $rollout_timeout)"
    kubectl -n "$namespace" rollout status "deployment/$d" --timeout="$rollout_timeout" || failed+=("$d")
done

echo
kubectl -n "$namespace" get pods -o wide -L role
echo
kubectl -n "$namespace" get services
echo

if ((${#failed[@]} > 0)); then
    echo "Not rolled out within $rollout_timeout: ${failed[*]}"
    echo "Look at:  kubectl -n $namespace describe pods -l role   and   kubectl -n $namespace get events --sort-by=.lastTimestamp"
    if [[ "$target" != monitoring ]]; then
        echo "ErrImageNeverPull means the image is not in the cluster: ./build.sh loads it into kind/minikube."
    fi
    exit 1
fi

cat <<EOF
All rollouts done (overlay $target).

Submit a task from inside a worker:
  kubectl -n $namespace exec -it deploy/p2p-worker -- bash
  echo "task compute test_payload" | ./p2p-node --config /app/config.yaml
One-shot commands:
  kubectl -n $namespace exec deploy/p2p-worker -- /app/p2p-node --config /app/config.yaml peers
  kubectl -n $namespace exec deploy/p2p-worker -- /app/p2p-node --config /app/config.yaml task echo hello
HTTP API of the bootstrap:
  kubectl -n $namespace port-forward svc/p2p-bootstrap 8080:8080   # then: curl -s localhost:8080/v1/status
Logs:
  kubectl -n $namespace logs -l role=worker --tail=50
Remove the workloads but keep the identity Secrets (the same peer ids next time):
  kubectl -n $namespace delete deploy,svc,pdb,hpa,cm -l app.kubernetes.io/name=p2p-network
Remove everything, namespace and identity Secrets included:
  kubectl delete -k $overlay
EOF
