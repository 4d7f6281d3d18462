# Postgres for relab's managed lab database, from Debian's postgresql-15
# binaries, running as uid 70 (the operator's runAsUser) with a read-only
# root filesystem: everything it writes is under PGDATA, /var/run/postgresql
# and /tmp, where the operator mounts emptyDirs
# (operator/src/controller/children.rs).
#
# Users build it from the repository's root:
#
#   docker build -f deploy/docker/postgres.Dockerfile -t relab-postgres .
#
# (buildah/podman, at least Debian bookworm's buildah 1.28, do not resolve a
# stage named by a build argument's *default* value: add
# `--build-arg ROOTFS=assemble` there.)
#
# Stages:
#   assemble  ${DEBIAN_IMAGE} + apt's postgresql-${PG_MAJOR} and
#             busybox-static; deploy/docker/postgres-rootfs.sh copies the
#             server, the client tools, their libraries (ldd), share files and
#             busybox into /rootfs
#   rootfs    ${ROOTFS}: `assemble` by default; any image holding /rootfs
#             instead (scripts/images.sh runs the same postgres-rootfs.sh on
#             this machine, whose postgresql-15 is installed, and passes that
#             image: no pull, and builders skip the unused `assemble` stage)
#   final     scratch + /rootfs
#
# Contract (deploy/docker/postgres-entrypoint.sh), the part of the official
# image's that the operator uses: POSTGRES_HOST_AUTH_METHOD (or
# POSTGRES_PASSWORD), POSTGRES_USER, POSTGRES_DB, PGDATA,
# POSTGRES_INITDB_ARGS; args starting with `-` go to postgres (the operator
# passes `-c max_connections=N -c fsync=off`); pg_isready is on PATH for the
# readiness probe; the server listens on every address, port 5432.
ARG DEBIAN_IMAGE=docker.io/library/debian:bookworm-slim
ARG ROOTFS=assemble
ARG PG_MAJOR=15

FROM ${DEBIAN_IMAGE} AS assemble
ARG PG_MAJOR
# no cluster of Debian's own: the entrypoint runs initdb at start
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-common \
 && sed -ri 's/#(create_main_cluster) .*$/\1 = false/' /etc/postgresql-common/createcluster.conf \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      "postgresql-${PG_MAJOR}" busybox-static \
 && rm -rf /var/lib/apt/lists/*
COPY deploy/docker/rootfs.sh deploy/docker/postgres-rootfs.sh deploy/docker/postgres-entrypoint.sh /src/
RUN PG_MAJOR="${PG_MAJOR}" bash /src/postgres-rootfs.sh /rootfs

FROM ${ROOTFS} AS rootfs

FROM scratch
ARG PG_MAJOR
COPY --from=rootfs /rootfs/ /
ENV PATH=/usr/lib/postgresql/${PG_MAJOR}/bin:/usr/local/bin:/usr/bin \
    PGDATA=/var/lib/postgresql/data
USER 70:70
EXPOSE 5432
# SIGINT: fast shutdown (SIGTERM would wait for every client to leave)
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["postgres"]
