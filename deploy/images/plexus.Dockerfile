# syntax=docker/dockerfile:1
# plexus: the delegating CNI plugin, and its installer (plexus install).
# Build from the repository root: docker build -f deploy/images/plexus.Dockerfile .
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p plexus-meta-cni --bin plexus \
    && install -D -m 0755 target/release/plexus /out/plexus

# glibc and libgcc only: distroless/cc has both and nothing else.
FROM gcr.io/distroless/cc-debian12
COPY --from=build /out/plexus /usr/bin/plexus
ENTRYPOINT ["/usr/bin/plexus"]
