# syntax=docker/dockerfile:1
#
# Container image of ram-authenticator.
#
#   docker build -t registry.example.com/ram-authenticator:0.1.0 .
#
# The build stage builds as CI does (`cargo build --locked`: the versions pinned by Cargo.lock),
# in release mode and limited to the two binaries the image ships:
# `cargo build --release --locked --bin ram-authenticator --bin sts-emulator`. The final stage is
# distroless: no shell, no package manager, glibc (the binary links it dynamically) and the CA
# certificates; TLS is rustls with ring, so no OpenSSL is needed.

FROM docker.io/library/rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# The cache mounts keep the crate registry and the build directory between builds; the binaries
# are copied out in the same step because a cache mount is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin ram-authenticator --bin sts-emulator \
 && install -D -m 0755 target/release/ram-authenticator /out/ram-authenticator \
 && install -D -m 0755 target/release/sts-emulator /out/sts-emulator

# cc-debian12 has the same glibc (Debian 12, bookworm) as the build stage.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="ram-authenticator" \
      org.opencontainers.image.description="Kubernetes token-authentication webhook for Alibaba Cloud RAM identities" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/ram-authenticator /ram-authenticator
# A stand-in for STS, for tests and demonstrations; the webhook does not use it.
COPY --from=builder /out/sts-emulator /sts-emulator
# 65532 is distroless' "nonroot" user. The numeric form lets the kubelet check runAsNonRoot.
USER 65532:65532
# HTTPS webhook (127.0.0.1 by default) and plain-HTTP health and metrics.
EXPOSE 21362 21363
ENTRYPOINT ["/ram-authenticator"]
CMD ["server"]
