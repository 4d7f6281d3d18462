# relab's operator image: the `relab` binary (the ReliabilityExperiment
# controller is `relab operator`, the default command; the rest of the CLI
# comes along: `docker run IMAGE validate ...`).
#
# Users build it from source, from the repository's root:
#
#   docker build -f deploy/docker/operator.Dockerfile -t relab-operator .
#
# (buildah/podman, at least Debian bookworm's buildah 1.28, do not resolve a
# stage named by a build argument's *default* value: add
# `--build-arg BINARIES=build` there.)
#
# Stages, as in lab-service.Dockerfile:
#   build     compiles `relab` (crate relab-operator) in ${BUILD_IMAGE} and
#             copies it, its debug info stripped, to /out
#   binaries  ${BINARIES}: `build` by default; any image with /out/relab
#             instead (scripts/images.sh passes one made from host-built
#             binaries; builders skip the then unused `build` stage)
#   final     ${BASE_IMAGE} (distroless cc, user nonroot 65532) + the binary;
#             scripts/images.sh passes a base assembled from this machine's
#             libraries, because no registry is reachable there.
#
# Dynamically linked against glibc on purpose (a static glibc breaks NSS name
# resolution); the base provides what `ldd` lists. The CA certificates of the
# base serve rustls-native-certs; in-cluster, the API server's CA comes from
# the service account.
ARG BUILD_IMAGE=docker.io/library/rust:1-bookworm
ARG BINARIES=build
ARG BASE_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${BUILD_IMAGE} AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p relab-operator --bin relab \
 && mkdir -p /out \
 && objcopy --strip-debug target/release/relab /out/relab

FROM ${BINARIES} AS binaries

FROM ${BASE_IMAGE}
COPY --from=binaries /out/relab /usr/local/bin/relab
USER 65532:65532
# metrics and health (--metrics-listen, default 0.0.0.0:8080)
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/relab"]
CMD ["operator"]
