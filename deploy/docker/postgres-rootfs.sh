#!/usr/bin/env bash
# The root filesystem of relab's Postgres image, from a Debian system that has
# postgresql-${PG_MAJOR:-15} and busybox-static installed:
#
#   bash deploy/docker/postgres-rootfs.sh OUT
#
# * the server and the client tools the entrypoint and the probes use
#   (postgres, initdb, pg_ctl, pg_isready, psql, plus pg_dump/pg_dumpall/
#   createdb for people who exec into the pod), their libraries, the
#   extension libraries (without LLVM JIT: no libLLVM, `jit` is simply
#   unavailable), the share files initdb needs, the time zone database;
# * busybox-static as /bin/sh and its applets (the entrypoint is a shell
#   script; `kubectl exec` finds ls, cat, ps...);
# * user and group postgres = 70, the uid relab's operator runs it as; its
#   directories (data, socket) owned by it, so the image also runs without
#   the operator's emptyDirs;
# * deploy/docker/postgres-entrypoint.sh as /usr/local/bin/docker-entrypoint.sh.
#
# scripts/images.sh runs it on this machine; deploy/docker/postgres.Dockerfile
# runs it in a debian:bookworm-slim stage.
set -euo pipefail

out="${1:?usage: postgres-rootfs.sh OUT}"
here="$(cd "$(dirname "$0")" && pwd)"
major="${PG_MAJOR:-15}"
pgbin="/usr/lib/postgresql/$major/bin"
[ -x "$pgbin/postgres" ] || { echo "postgres-rootfs.sh: $pgbin/postgres missing: apt-get install postgresql-$major" >&2; exit 1; }
busybox="$(command -v busybox || true)"
if [ -z "$busybox" ] || ldd "$busybox" >/dev/null 2>&1; then
  echo "postgres-rootfs.sh: no statically linked busybox: apt-get install busybox-static" >&2
  exit 1
fi

rm -rf "$out"
bash "$here/rootfs.sh" --out "$out" \
  --user "postgres:70:/var/lib/postgresql" \
  --exclude bitcode --exclude 'llvmjit*' --exclude man \
  "$pgbin/postgres" "$pgbin/postmaster" "$pgbin/initdb" "$pgbin/pg_ctl" "$pgbin/pg_isready" \
  "$pgbin/psql" "$pgbin/pg_dump" "$pgbin/pg_dumpall" "$pgbin/createdb" \
  "/usr/lib/postgresql/$major/lib" "/usr/share/postgresql/$major" /usr/share/zoneinfo

# postmaster is a symlink to postgres in Debian; rootfs.sh dereferenced it
ln -sf postgres "$out$pgbin/postmaster"

cp "$busybox" "$out/usr/bin/busybox"
for applet in $("$busybox" --list); do
  [ -e "$out/usr/bin/$applet" ] || [ -L "$out/usr/bin/$applet" ] || ln -s busybox "$out/usr/bin/$applet"
done

install -D -m 0755 "$here/postgres-entrypoint.sh" "$out/usr/local/bin/docker-entrypoint.sh"
# the data directory's parent and the socket directory: the operator mounts
# emptyDirs there (fsGroup 70); without them these are the image's own
install -d -o 70 -g 70 -m 0700 "$out/var/lib/postgresql/data"
install -d -o 70 -g 70 -m 2777 "$out/var/run/postgresql"
