# The two images Weir ships, from one build:
#
#   docker build --target weir -t weir:0.1.0 .                     # the runtime (JobManager, TaskManager, weir run)
#   docker build --target operator -t weir-operator:0.1.0 .        # the Kubernetes operator
#
# Both run as an unprivileged user on a read-only root file system.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p weir-cli -p weir-operator \
 && cp target/release/weir target/release/weir-operator /usr/local/bin/

FROM debian:bookworm-slim AS base
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
USER 65532:65532

FROM base AS weir
COPY --from=build /usr/local/bin/weir /usr/local/bin/weir
ENTRYPOINT ["/usr/local/bin/weir"]

FROM base AS operator
COPY --from=build /usr/local/bin/weir-operator /usr/local/bin/weir-operator
ENTRYPOINT ["/usr/local/bin/weir-operator"]
