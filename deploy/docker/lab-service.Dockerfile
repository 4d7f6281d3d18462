# relab's lab app (order API, payment workers, payment mock, load generator).
#
# Users build it from source, from the repository's root:
#
#   docker build -f deploy/docker/lab-service.Dockerfile -t relab-lab-service .
#
# (buildah/podman, at least Debian bookworm's buildah 1.28, do not resolve a
# stage named by a build argument's *default* value: add
# `--build-arg BINARIES=build` there.)
#
# Stages:
#   build     compiles `lab-service` in ${BUILD_IMAGE} (Rust on Debian
#             bookworm, the same glibc as the default base) and copies it,
#             its debug info stripped, to /out
#   binaries  ${BINARIES}: `build` by default; any image with /out/lab-service
#             instead (scripts/images.sh passes one made from host-built
#             binaries, so nothing is compiled twice nor pulled; builders skip
#             the then unused `build` stage)
#   final     ${BASE_IMAGE} (distroless cc: glibc, libgcc, CA certificates,
#             user nonroot 65532) + the binary. scripts/images.sh passes a base
#             assembled from this machine's libraries, because no registry is
#             reachable there.
#
# The binary links glibc dynamically on purpose: a statically linked glibc
# breaks name resolution (NSS), and the base must provide the libraries `ldd`
# lists (libc, libm, libgcc_s; see scripts/images.sh).
ARG BUILD_IMAGE=docker.io/library/rust:1-bookworm
ARG BINARIES=build
ARG BASE_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${BUILD_IMAGE} AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p lab-service \
 && mkdir -p /out \
 && objcopy --strip-debug target/release/lab-service /out/lab-service

FROM ${BINARIES} AS binaries

FROM ${BASE_IMAGE}
COPY --from=binaries /out/lab-service /usr/local/bin/lab-service
USER 65532:65532
# the operator passes the role as the container's args: api, worker,
# payment-mock or loadgen
ENTRYPOINT ["/usr/local/bin/lab-service"]
CMD ["--help"]
