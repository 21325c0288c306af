#!/usr/bin/env bash
# Build p2p-node and the p2p-network container image, then load the image into a local
# kind or minikube cluster when one is reachable.
#
#   ./build.sh [--online] [--tag IMAGE] [--no-load] [--no-smoke]
#
# Default (offline) path: `cargo build --profile dist --locked` on the host (the release
# profile plus whole-program LTO: smaller binary, less resident code), then an image
# FROM scratch assembled from the binary, its shared libraries (ldd), /bin/bash and a few
# coreutils (Dockerfile.offline). Needs no registry at all; Linux hosts only (ldd).
# --online: the multi-stage Dockerfile (rust builder + debian:bookworm-slim); cargo runs
# inside the builder, so the host needs no Rust, but Docker must be able to pull images.
#
# Environment:
#   IMAGE=name:tag          image tag (default p2p-network:latest; --tag wins)
#   SKIP_CARGO=1            never run cargo; use the binary as it is
#   BINARY=path             prebuilt binary to package (default target/dist/p2p-node;
#                           setting it implies SKIP_CARGO=1)
#   TOOLS="cat env id ls sleep"  extra host programs copied into the offline image's /bin
#   KIND_CLUSTER_NAME=name  kind cluster to load into (default: the current kubectl
#                           context's kind cluster, or the only one)
#   MINIKUBE_PROFILE=name   minikube profile to load into (default minikube)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}

say() { printf '==> %s\n' "$*"; }
die() {
    printf 'build.sh: error: %s\n' "$*" >&2
    exit 1
}

image="${IMAGE:-p2p-network:latest}"
mode=offline
load=1
smoke=1
while (($# > 0)); do
    case "$1" in
    --online) mode=online ;;
    --offline) mode=offline ;;
    --tag | -t)
        (($# >= 2)) || die "$1 needs a value"
        image="$2"
        shift
        ;;
    --tag=*) image="${1#--tag=}" ;;
    --no-load) load=0 ;;
    --no-smoke) smoke=0 ;;
    -h | --help)
        usage
        exit 0
        ;;
    *) die "unknown argument: $1 (see ./build.sh --help)" ;;
    esac
    shift
done
[[ -n "$image" ]] || die "empty image tag"

steps=() # what happened, in order, for the summary at the end
did() {
    steps+=("done:    $*")
    say "$*"
}
skipped() {
    steps+=("skipped: $*")
    say "skipped: $*"
}

default_binary=target/dist/p2p-node
binary="${BINARY:-$default_binary}"

# --- 1. the binary (offline path only) --------------------------------------------------

# Prints the first source file newer than the binary, if any.
newer_source() {
    local sources=(Cargo.toml Cargo.lock src)
    [[ -e build.rs ]] && sources+=(build.rs)
    find "${sources[@]}" -newer "$binary" -print -quit
}

build_binary() {
    if [[ "${SKIP_CARGO:-0}" == 1 ]]; then
        skipped "cargo build (SKIP_CARGO=1)"
    elif [[ "$binary" != "$default_binary" ]]; then
        skipped "cargo build (BINARY=$binary given)"
    elif [[ -x "$binary" && -z "$(newer_source)" ]]; then
        skipped "cargo build ($binary is newer than every source)"
    else
        command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) or use --online"
        say "cargo build --profile dist --locked --bin p2p-node"
        P2P_BUILD_COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
            cargo build --profile dist --locked --bin p2p-node
        did "built $binary"
    fi
    [[ -f "$binary" && -x "$binary" ]] || die "no executable binary at $binary (run cargo build --profile dist --bin p2p-node, or unset SKIP_CARGO)"
}

# --- 2. the image -------------------------------------------------------------------------

check_docker() {
    command -v docker >/dev/null || die "docker not found"
    docker info >/dev/null 2>&1 || die "the Docker daemon is not reachable (is it running? may this user use it?)"
}

# Prints the shared objects (absolute paths) that ELF file $1 loads, the dynamic loader included.
shared_libs() {
    local out
    if ! out="$(ldd "$1" 2>&1)"; then
        # Static binaries make ldd fail with "not a dynamic executable": nothing to copy.
        [[ "$out" == *"not a dynamic executable"* || "$out" == *"statically linked"* ]] && return 0
        die "ldd $1 failed: $out"
    fi
    if grep -q 'not found' <<<"$out"; then
        die "$1 needs libraries this host does not have: $(grep 'not found' <<<"$out" | tr -s ' \t' ' ')"
    fi
    awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$out"
}

# Copies the file (dereferenced) to the same path under the root filesystem $1.
copy_into_root() {
    local root="$1" file="$2"
    [[ -e "$root$file" ]] && return 0
    mkdir -p "$root$(dirname "$file")"
    cp -L "$file" "$root$file"
}

assemble_rootfs() {
    local root="$1" tools lib tool path ldconfig name
    mkdir -p "$root"/{app,bin,data,etc,tmp}

    install -m 0755 "$binary" "$root/app/p2p-node"
    install -m 0644 config/worker.yaml "$root/app/config.yaml"

    read -r -a tools <<<"${TOOLS:-cat env id ls sleep}"
    for tool in bash "${tools[@]}"; do
        path="$(type -P "$tool")" || die "$tool not found on this host (needed in the image; adjust TOOLS)"
        cp -L "$path" "$root/bin/$tool"
        chmod 0755 "$root/bin/$tool"
    done
    ln -s bash "$root/bin/sh"

    local elf libs
    for elf in "$root/app/p2p-node" "$root"/bin/*; do
        [[ -L "$elf" ]] && continue
        libs="$(shared_libs "$elf")" || exit 1
        while IFS= read -r lib; do
            [[ -n "$lib" ]] && copy_into_root "$root" "$lib"
        done <<<"$libs"
    done

    # NSS modules are loaded at run time (never listed by ldd): with glibc before 2.34 they
    # are needed for user names (id) and host lookups. From 2.34 on they are tiny stubs.
    ldconfig="$(type -P ldconfig || echo /sbin/ldconfig)"
    if [[ -x "$ldconfig" ]]; then
        for name in libnss_files.so.2 libnss_dns.so.2; do
            # awk reads to the end (no early exit): ldconfig must not die of SIGPIPE under pipefail.
            lib="$("$ldconfig" -p 2>/dev/null | awk -v n="$name" '$1 == n && $NF ~ /^\// && !found { print $NF; found = 1 }')"
            [[ -n "$lib" ]] && copy_into_root "$root" "$lib"
        done
    fi

    cat >"$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/bash
p2p:x:10001:10001:p2p-node:/data:/bin/bash
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
    cat >"$root/etc/group" <<'GROUP'
root:x:0:
p2p:x:10001:
nogroup:x:65534:
GROUP
    printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$root/etc/nsswitch.conf"
    chmod 0644 "$root"/etc/*

    chmod 0755 "$root" "$root/bin" "$root/etc"
    chmod 1775 "$root/app"
    chmod 0750 "$root/data"
    chmod 1777 "$root/tmp"
}

# Packs the root filesystem with explicit owners, whoever runs this script: /app is
# root:10001, /data is 10001:10001, everything else root:root. Parents come first.
pack_rootfs() {
    local root="$1" tarball="$2"
    local -a tar_opts=(--numeric-owner --no-recursion -C "$root")
    tar "${tar_opts[@]}" --owner=0 --group=10001 -cf "$tarball" ./app
    tar "${tar_opts[@]}" --owner=10001 --group=10001 -rf "$tarball" ./data
    (cd "$root" && find . -mindepth 1 ! -path ./app ! -path ./data -print0 | LC_ALL=C sort -z) |
        tar "${tar_opts[@]}" --owner=0 --group=0 --null -T - -rf "$tarball"
}

revision() { git rev-parse --verify --quiet HEAD 2>/dev/null || echo unknown; }

build_offline_image() {
    [[ "$(uname -s)" == Linux ]] || die "the offline build needs a Linux host (ldd); use --online"
    command -v ldd >/dev/null || die "ldd not found (glibc's libc-bin); use --online"
    [[ -f config/worker.yaml ]] || die "config/worker.yaml is missing"

    local stage
    stage="$(mktemp -d "${TMPDIR:-/tmp}/p2p-image.XXXXXX")"
    # shellcheck disable=SC2064 # expand now: $stage is local to this function
    trap "rm -rf '$stage'" EXIT

    say "assembling the root filesystem from $binary"
    assemble_rootfs "$stage/rootfs"
    pack_rootfs "$stage/rootfs" "$stage/rootfs.tar"
    cp Dockerfile.offline "$stage/Dockerfile"

    say "docker build (offline, FROM scratch) -t $image"
    docker build --label "org.opencontainers.image.title=p2p-network" \
        --label "org.opencontainers.image.revision=$(revision)" \
        -t "$image" "$stage"
    rm -rf "$stage"
    trap - EXIT
    did "built image $image (offline, FROM scratch)"
}

build_online_image() {
    skipped "host cargo build (--online compiles inside the Dockerfile's rust builder stage)"
    say "docker build (online, multi-stage; pulls rust and debian:bookworm-slim) -t $image"
    docker build --label "org.opencontainers.image.title=p2p-network" \
        --label "org.opencontainers.image.revision=$(revision)" \
        -t "$image" -f Dockerfile . ||
        die "online build failed; where images cannot be pulled, run ./build.sh without --online"
    did "built image $image (online, multi-stage)"
}

# Runs the packaged binary once: proves the libraries are complete and the baked config valid.
smoke_test() {
    if ((smoke == 0)); then
        skipped "smoke test (--no-smoke)"
        return
    fi
    say "smoke test: p2p-node --config /app/config.yaml check-config, inside the image"
    docker run --rm --network none "$image" /app/p2p-node --config /app/config.yaml check-config ||
        die "the image's binary failed check-config (missing libraries, or an invalid config/worker.yaml)"
    did "smoke test passed (check-config in the image)"
}

# --- 3. load into a local cluster ---------------------------------------------------------

load_into_kind() {
    if ! command -v kind >/dev/null; then
        skipped "kind load (kind is not installed)"
        return
    fi
    local clusters cluster="${KIND_CLUSTER_NAME:-}" context node
    clusters="$(kind get clusters 2>/dev/null || true)"
    if [[ -z "$clusters" ]]; then
        skipped "kind load (no kind cluster exists)"
        return
    fi
    if [[ -z "$cluster" ]]; then
        context="$(kubectl config current-context 2>/dev/null || true)"
        if [[ "$context" == kind-* ]] && grep -qx "${context#kind-}" <<<"$clusters"; then
            cluster="${context#kind-}"
        elif [[ "$(wc -l <<<"$clusters")" -eq 1 ]]; then
            cluster="$clusters"
        else
            skipped "kind load (several kind clusters: $(tr '\n' ' ' <<<"$clusters"); set KIND_CLUSTER_NAME)"
            return
        fi
    fi
    node="$(kind get nodes --name "$cluster" 2>/dev/null | head -n 1)"
    if [[ -z "$node" || "$(docker inspect -f '{{.State.Running}}' "$node" 2>/dev/null)" != true ]]; then
        skipped "kind load (kind cluster '$cluster' is not running)"
        return
    fi
    say "kind load docker-image $image --name $cluster"
    kind load docker-image "$image" --name "$cluster"
    did "loaded $image into kind cluster '$cluster'"
}

load_into_minikube() {
    if ! command -v minikube >/dev/null; then
        skipped "minikube image load (minikube is not installed)"
        return
    fi
    local profile="${MINIKUBE_PROFILE:-minikube}" host
    host="$(timeout 30 minikube status -p "$profile" --format '{{.Host}}' 2>/dev/null || true)"
    if [[ "$host" != Running ]]; then
        skipped "minikube image load (profile '$profile' is not running)"
        return
    fi
    say "minikube image load $image -p $profile"
    minikube image load "$image" -p "$profile"
    did "loaded $image into minikube profile '$profile'"
}

# --- main ---------------------------------------------------------------------------------

check_docker
if [[ "$mode" == offline ]]; then
    build_binary
    build_offline_image
else
    build_online_image
fi
smoke_test
size="$(docker image inspect -f '{{.Size}}' "$image")"
say "image $image: $((size / 1024 / 1024)) MiB ($size bytes)"

if ((load == 1)); then
    load_into_kind
    load_into_minikube
else
    skipped "loading into kind/minikube (--no-load)"
fi

echo
echo "Summary:"
for s in ${steps[@]+"${steps[@]}"}; do echo "  $s"; done
echo "Next: ./deploy.sh kind (or minikube); or docker compose up -d --scale worker=3"
