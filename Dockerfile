# syntax=docker/dockerfile:1
#
# One image holding both candlepipe binaries, `producer` and `consumer`; docker-compose.yml
# runs it twice with `command: ["producer"]` / `["consumer"]`.
#
# Why one image: the two binaries share almost their whole dependency graph (rdkafka and
# librdkafka, tokio, axum, prometheus, the candlepipe-model and candlepipe-runtime
# crates), so one `cargo build -p producer -p consumer` compiles that graph once, and
# there is one image to build, tag and pull. A second binary costs the image a few MB; a second build would cost minutes.
#
# Stages:
#   chef     Rust toolchain + the C toolchain librdkafka needs + cargo-chef.
#   planner  `cargo chef prepare`: reduces the workspace to recipe.json (every Cargo.toml
#            and Cargo.lock, nothing else), so source edits do not change it.
#   builder  `cargo chef cook` builds only the dependencies from recipe.json: that layer is
#            cached until a manifest or Cargo.lock changes. Then the sources are copied and
#            the release build compiles just the workspace crates.
#   runtime  debian:bookworm-slim + ca-certificates (Yahoo over TLS), libssl3 (librdkafka's
#            TLS), busybox (its `wget` is the compose healthcheck: ~1 MB, no other
#            dependencies), the binaries, the bundled dataset; runs as a non-root user.
#
# Build: docker build -t candlepipe:local .        (docker compose does this on first `up`)
# Run:   docker run --rm candlepipe:local producer --help

ARG RUST_VERSION=1.91
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS chef
# rdkafka-sys builds librdkafka from source with its own ./configure + make, and its `libs`
# target builds the C++ wrapper too: make, gcc and g++ (build-essential). Features in the
# workspace Cargo.toml: `ssl` links the system OpenSSL (libssl-dev, found by pkg-config),
# `libz` links zlib (zlib1g-dev), `zstd` builds the bundled zstd with cc. No cmake, perl or
# python is involved (rdkafka's cmake-build feature is off).
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential pkg-config libssl-dev zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*
# Pinned: a new cargo-chef release must not change the build silently.
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /build

FROM chef AS planner
COPY Cargo.toml Cargo.lock ./
COPY services ./services
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /build/recipe.json recipe.json
# The dependency layer: rebuilt only when recipe.json (the manifests, Cargo.lock) changes.
RUN cargo chef cook --release --locked --recipe-path recipe.json -p producer -p consumer
# The sources: only the workspace crates compile from here on.
COPY Cargo.toml Cargo.lock ./
COPY services ./services
RUN cargo build --release --locked -p producer -p consumer --bins \
    && install -D -m 0755 -t /out target/release/producer target/release/consumer

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 busybox \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 candlepipe \
    && useradd --system --uid 10001 --gid candlepipe --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin candlepipe
COPY --from=builder /out/producer /out/consumer /usr/local/bin/
# The bundled replay dataset (Binance-format parquet, see dataset/README.md), read-only for
# the service user. To replay other files, mount a folder over /app/dataset (README).
COPY dataset/ /app/dataset/
ENV DATASET_DIR=/app/dataset
# The replay cache: small-page copies the producer makes, once, of mounted parquet files whose
# pages are too large to replay in its memory budget (dataset/README.md). /app/dataset is
# read-only, so the copies go here; mount a volume on it to keep them across containers.
RUN install -d -o candlepipe -g candlepipe /app/cache
ENV REPLAY_CACHE_DIR=/app/cache
WORKDIR /app
USER candlepipe:candlepipe
# producer: /metrics /healthz /readyz /mode on 9101; consumer: /metrics /healthz /readyz on 9102.
EXPOSE 9101 9102
CMD ["producer"]
