# syntax=docker/dockerfile:1
# sriov-device-plugin: the SR-IOV device plugin.
# Build from the repository root: docker build -f deploy/images/sriov-device-plugin.Dockerfile .
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p plexus-sriov-device-plugin --bin sriov-device-plugin \
    && install -D -m 0755 target/release/sriov-device-plugin /out/sriov-device-plugin

# glibc and libgcc only: distroless/cc has both and nothing else.
FROM gcr.io/distroless/cc-debian12
COPY --from=build /out/sriov-device-plugin /usr/bin/sriov-device-plugin
ENTRYPOINT ["/usr/bin/sriov-device-plugin"]
