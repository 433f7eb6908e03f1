# syntax=docker/dockerfile:1
# sriov: the SR-IOV CNI plugin, in an image whose only job is to copy it
# into the host's CNI bin dir (deploy/sriov-device-plugin.yaml's init
# container, whose command does the copy), so it needs a shell with cp and mv.
# Build from the repository root: docker build -f deploy/images/sriov-cni.Dockerfile .
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p plexus-sriov-device-plugin --bin sriov \
    && install -D -m 0755 target/release/sriov /out/sriov

FROM docker.io/library/debian:bookworm-slim
COPY --from=build /out/sriov /usr/bin/sriov
