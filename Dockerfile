# p2p-network container image: online multi-stage build, for a Docker that can pull images.
#
#   ./build.sh --online            (or: docker build -t p2p-network:latest .)
#
# Where nothing can be pulled (no registry), ./build.sh without --online builds the same
# image layout FROM scratch out of the host's prebuilt binary: see Dockerfile.offline.
# Both images: non-root uid 10001, binary /app/p2p-node, default config /app/config.yaml
# (= config/worker.yaml; Kubernetes mounts a ConfigMap over it), /bin/bash, writable /data.
# Plain Dockerfile syntax only (no BuildKit-only features), so the legacy builder works too.

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS builder
WORKDIR /src

# Compile the dependencies in their own layer, re-used until Cargo.toml or Cargo.lock
# change: build once against stub sources. If the manifest ever needs more than the two
# stubs (explicit bench/test targets, a build script), this step is skipped with a note and
# the full build below compiles everything: only the cache is lost, never correctness.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src \
 && echo 'fn main() {}' > src/main.rs \
 && : > src/lib.rs \
 && { cargo build --profile dist --locked \
      || echo "note: dependency pre-build skipped; the full build compiles everything"; } \
 && rm -rf src

COPY . .
# Sources copied from the context may be older than the stub build: touch them so cargo
# rebuilds the crate instead of keeping the stub binary.
RUN find src -name '*.rs' -exec touch {} + \
 && cargo build --profile dist --locked --bin p2p-node \
 && install -D -m 0755 target/dist/p2p-node /out/p2p-node

FROM ${RUNTIME_IMAGE}
# /app: root-owned binary and config; the directory is group-writable with the sticky bit
# (like /tmp), so the node can create its default identity file (/app/worker.key with the
# baked config) but cannot replace or delete the binary or the config.
# /data: the node's writable directory (identity file in Kubernetes and docker-compose).
RUN groupadd --gid 10001 p2p \
 && useradd --uid 10001 --gid 10001 --home-dir /data --no-create-home \
      --shell /bin/bash p2p \
 && install -d -m 1775 -o root -g 10001 /app \
 && install -d -m 0750 -o 10001 -g 10001 /data
COPY --from=builder /out/p2p-node /app/p2p-node
COPY config/worker.yaml /app/config.yaml

USER 10001:10001
WORKDIR /app
# p2p over TCP and QUIC, HTTP API (health, readiness, tasks), Prometheus metrics.
EXPOSE 4001/tcp 4001/udp 8080/tcp 9090/tcp
CMD ["/app/p2p-node", "--config", "/app/config.yaml", "run"]
