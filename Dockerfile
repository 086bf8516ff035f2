# Weir's images, from one file:
#
#   docker build --target weir -t weir:0.1.0 .                     # the runtime (JobManager, TaskManager, weir run)
#   docker build --target operator -t weir-operator:0.1.0 .        # the Kubernetes operator
#   docker build --target rust-job -t order-monitor-rust:0.1.0 .   # examples/rust-job, a user's job binary
#
# By default the binaries are compiled in the `build` stage (a Rust image).
# Where no Rust image can be pulled, compile them first and let the images
# copy them from the build context instead, as scripts/images.sh does (with
# buildah, no Docker daemon):
#
#   cargo build --release -p weir-cli -p weir-operator -p rust-job
#   mkdir -p target/image-bin && cp target/release/{weir,weir-operator,rust-job} target/image-bin/
#   docker build --build-arg BINARIES=prebuilt --target weir -t weir:0.1.0 .
#
# Every image runs as the unprivileged user 65532 and needs no writable root
# file system (the pods mount an emptyDir at /tmp).
ARG BINARIES=build

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p weir-cli -p weir-operator -p rust-job \
 && mkdir /out && cp target/release/weir target/release/weir-operator target/release/rust-job /out/ \
 && strip /out/*

# The binaries of target/image-bin in the build context (.dockerignore lets
# only that directory of target/ in).
FROM scratch AS prebuilt
COPY target/image-bin/weir target/image-bin/weir-operator target/image-bin/rust-job /out/

FROM ${BINARIES} AS binaries

FROM debian:bookworm-slim AS base
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
USER 65532:65532
WORKDIR /tmp

FROM base AS weir
COPY --from=binaries /out/weir /usr/local/bin/weir
ENTRYPOINT ["/usr/local/bin/weir"]

FROM base AS operator
COPY --from=binaries /out/weir-operator /usr/local/bin/weir-operator
ENTRYPOINT ["/usr/local/bin/weir-operator"]

# A user's job binary is its own JobManager and TaskManagers: a StreamJob runs
# it with `jobmanager ...` or `taskmanager ...` and the job's arguments after `--`.
FROM base AS rust-job
COPY --from=binaries /out/rust-job /usr/local/bin/rust-job
ENTRYPOINT ["/usr/local/bin/rust-job"]
