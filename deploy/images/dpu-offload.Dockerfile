# syntax=docker/dockerfile:1
# dpu-offload: the dpu-offload agent and CLI.
# Build from the repository root: docker build -f deploy/images/dpu-offload.Dockerfile .
FROM docker.io/library/rust:1.95-bookworm AS build
# clang/llvm/libbpf-dev: the build script compiles the eBPF datapath
# (bpf/plexus_tc.c) into the binary.
RUN apt-get update \
    && apt-get install -y --no-install-recommends clang llvm libbpf-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p plexus-dpu-offload --bin dpu-offload \
    && install -D -m 0755 target/release/dpu-offload /out/dpu-offload

# glibc and libgcc only: distroless/cc has both and nothing else.
FROM gcr.io/distroless/cc-debian12
COPY --from=build /out/dpu-offload /usr/bin/dpu-offload
ENTRYPOINT ["/usr/bin/dpu-offload"]
