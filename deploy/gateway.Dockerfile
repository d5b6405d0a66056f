# syntax=docker/dockerfile:1.7
# The inference gateway image: built with the pinned Rust toolchain, run as a
# non-root user on a slim Debian with nothing but the binary and CA certificates.
# Build context: the repository root (docker-compose.yml does this):
#   docker build -f deploy/gateway.Dockerfile -t inference-gateway/gateway:dev .

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Only what the workspace build reads (gateway.Dockerfile.dockerignore keeps the
# rest out of the context).
COPY Cargo.toml Cargo.lock ./
COPY gateway ./gateway
# Cache mounts keep the registry and the target folder between builds, so a
# source change recompiles the gateway crate only. `--locked`: the Cargo.lock
# of the repository is the dependency set, or the build fails.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --package gateway --bin gateway \
    && install -D -m 0755 target/release/gateway /out/gateway

FROM debian:bookworm-slim AS runtime
# ca-certificates: TLS to an Elasticsearch cluster or a collector behind a
# public CA. No curl: the health check uses bash's /dev/tcp.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin gateway
COPY --from=build /out/gateway /usr/local/bin/gateway

USER 10001:10001
ENV GATEWAY__SERVER__HOST=0.0.0.0 \
    GATEWAY__SERVER__PORT=8080 \
    OTEL_SERVICE_NAME=inference-gateway
EXPOSE 8080
# Liveness only (/healthz): readiness (/readyz) depends on Elasticsearch and the
# model service, and a restart would not fix either.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${GATEWAY__SERVER__PORT} && printf 'GET /healthz HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
# SIGTERM: stop accepting, finish in-flight requests, drain, flush telemetry.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/gateway"]
