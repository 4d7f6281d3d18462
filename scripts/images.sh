#!/usr/bin/env bash
# Build relab's container images on this machine, with Debian's buildah and
# without any registry: nothing is pulled, nothing is compiled.
#
#   bash scripts/images.sh                    # release binaries, tag :dev
#   bash scripts/images.sh --profile debug    # the binaries `cargo test` built
#   bash scripts/images.sh --bin-dir DIR      # relab and lab-service from DIR
#   bash scripts/images.sh --tag TAG          # localhost/relab-*:TAG
#   bash scripts/images.sh --print-bin-dir    # where the binaries would come from (cargo metadata), then exit
#
# Makes, in buildah storage of its own (${RELAB_CACHE}/images/storage; the
# system's storage is never touched):
#   localhost/relab-base:TAG             scratch + the libraries `ldd` lists
#                                        for both binaries, /etc/passwd and
#                                        group with nonroot (65532), /tmp, CA
#                                        certificates: a local stand-in for
#                                        gcr.io/distroless/cc-debian12:nonroot
#   localhost/relab-binaries:TAG         scratch + /out/relab, /out/lab-service
#                                        (host-built, debug info stripped)
#   localhost/relab-postgres-rootfs:TAG  scratch + /rootfs from
#                                        deploy/docker/postgres-rootfs.sh run
#                                        here (Debian's postgresql-15)
# and from deploy/docker/*.Dockerfile, with those three as build arguments:
#   localhost/relab-lab-service:TAG, localhost/relab-operator:TAG,
#   localhost/relab-postgres:TAG
# each written to ${RELAB_CACHE:-/var/cache/relab}/images/ as NAME.tar
# (oci-archive: `ctr -n k8s.io images import NAME.tar`) and NAME.docker.tar
# (docker-archive: `docker load`, `kind load image-archive`), NAME without
# the localhost/ prefix (relab-lab-service.tar...).
#
# Idempotent (every image is rebuilt from its inputs, the previous copies'
# storage pruned); one run at a time (flock). Needs root (files owned by
# uid 70 in the Postgres image; buildah's vfs storage), buildah
# (`bash scripts/tools.sh`), postgresql-15 and busybox-static (apt).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${RELAB_CACHE:-/var/cache/relab}"
OUT="$CACHE/images"
STORE="$OUT/storage"
profile=release
bin_dir=
tag=dev
print_bin_dir=
PG_MAJOR="${PG_MAJOR:-15}"

say() { printf '[images] %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit "${1:-2}"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="${2:?--profile wants debug or release}"; shift 2 ;;
    --profile=*) profile="${1#*=}"; shift ;;
    --bin-dir) bin_dir="${2:?--bin-dir wants a directory}"; shift 2 ;;
    --bin-dir=*) bin_dir="${1#*=}"; shift ;;
    --print-bin-dir) print_bin_dir=1; shift ;;
    --tag) tag="${2:?--tag wants a tag}"; shift 2 ;;
    --tag=*) tag="${1#*=}"; shift ;;
    -h|--help) usage 0 ;;
    *) say "unknown argument: $1"; usage ;;
  esac
done
case "$profile" in debug|release) ;; *) die "--profile must be debug or release, not $profile" ;; esac
if [ -z "$bin_dir" ]; then
  # where cargo put the binaries, by cargo's own rules (CARGO_TARGET_DIR,
  # .cargo/config.toml, or ./target): a newcomer's `cargo xtask test` builds
  # into ./target, CI into its cache, and both must be found
  target_dir=$(cargo metadata --format-version 1 --no-deps 2>/dev/null \
    | grep -o '"target_directory":"[^"]*"' | head -n1 | cut -d'"' -f4) \
    || true
  [ -n "$target_dir" ] || die "cannot ask cargo where it builds (cargo metadata failed); pass --bin-dir DIR"
  bin_dir="$target_dir/$profile"
fi
# where the binaries are taken from, and nothing else (a test checks it)
if [ -n "$print_bin_dir" ]; then printf '%s\n' "$bin_dir"; exit 0; fi

now() { date +%s.%N; }
T_ALL=$(now)
T_STAGE=$T_ALL
stage() { T_STAGE=$(now); say "== $*"; }
took() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }
done_stage() { say "   took $(took "$T_STAGE") s"; }

# --- preconditions, each with its fix ---------------------------------------
[ "$(id -u)" = 0 ] || die "run as root (the Postgres image holds files owned by uid 70; buildah's vfs storage)"
command -v buildah >/dev/null || die "buildah is missing: bash scripts/tools.sh (or: apt-get install buildah)"
command -v objcopy >/dev/null || die "objcopy is missing: apt-get install binutils"
command -v ldd >/dev/null || die "ldd is missing: apt-get install libc-bin"
[ -x "/usr/lib/postgresql/$PG_MAJOR/bin/postgres" ] \
  || die "Postgres $PG_MAJOR is missing: apt-get install postgresql-$PG_MAJOR (scripts/setup.sh installs it)"
{ command -v busybox >/dev/null && ! ldd "$(command -v busybox)" >/dev/null 2>&1; } \
  || die "a static busybox (the Postgres image's shell) is missing: apt-get install busybox-static"
for b in relab lab-service; do
  [ -x "$bin_dir/$b" ] || die "$bin_dir/$b is missing: build the binaries first, e.g. cargo build $([ "$profile" = release ] && echo '--release ')-p relab-operator -p lab-service, or pass --bin-dir DIR"
  ldd "$bin_dir/$b" >/dev/null 2>&1 || die "$bin_dir/$b is not dynamically linked: build it without crt-static (static glibc breaks NSS)"
  if ldd "$bin_dir/$b" | grep -q 'not found'; then
    die "$bin_dir/$b needs libraries this machine lacks: $(ldd "$bin_dir/$b" | grep 'not found' | tr '\n' ' ')"
  fi
done

mkdir -p "$OUT"
exec 9>"$OUT/.lock"
if ! flock -n 9; then
  say "another images.sh holds $OUT/.lock: waiting"
  flock 9
fi
BUILDAH=(buildah --root "$STORE/root" --runroot "$STORE/run" --storage-driver vfs)
rm -rf "$OUT"/work.* # a killed run's
WORK="$(mktemp -d "$OUT/work.XXXXXX")"
# This storage is this script's alone and we hold its lock: every container in
# it is a leftover (buildah 1.28's bud keeps the working containers of stages
# that are only COPY --from sources; vfs makes each a full copy).
cleanup() {
  "${BUILDAH[@]}" rm --all >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
"${BUILDAH[@]}" rm --all >/dev/null 2>&1 || true

say "binaries from $bin_dir (profile $profile), tag :$tag, storage $STORE"

# --- inputs ------------------------------------------------------------------
stage "binaries: strip debug info ($(du -shL "$bin_dir/relab" | cut -f1) relab, $(du -shL "$bin_dir/lab-service" | cut -f1) lab-service)"
mkdir -p "$WORK/binaries/out"
for b in relab lab-service; do
  objcopy --strip-debug "$bin_dir/$b" "$WORK/binaries/out/$b"
  chmod 0755 "$WORK/binaries/out/$b"
done
say "   $(du -sh "$WORK/binaries/out/relab" | cut -f1) relab, $(du -sh "$WORK/binaries/out/lab-service" | cut -f1) lab-service"
done_stage

stage "base rootfs: the binaries' libraries ($(ldd "$WORK/binaries/out/relab" "$WORK/binaries/out/lab-service" | awk '$2 == "=>" {print $1}' | sort -u | tr '\n' ' '))"
bash "$ROOT/deploy/docker/rootfs.sh" --out "$WORK/base" \
  --user nonroot:65532:/home/nonroot \
  --libs-for "$WORK/binaries/out/relab" --libs-for "$WORK/binaries/out/lab-service" \
  /etc/ssl/certs/ca-certificates.crt
say "   $(du -sh "$WORK/base" | cut -f1)"
done_stage

stage "postgres rootfs: Debian's postgresql-$PG_MAJOR, busybox-static"
mkdir -p "$WORK/postgres"
PG_MAJOR="$PG_MAJOR" bash "$ROOT/deploy/docker/postgres-rootfs.sh" "$WORK/postgres/rootfs"
say "   $(du -sh "$WORK/postgres/rootfs" | cut -f1)"
done_stage

# --- local images: scratch + a directory -------------------------------------
# `buildah add` of a tar keeps ownership and modes (uid 70's directories).
from_dir() { # NAME DIR [buildah config args...]
  local name="$1" dir="$2" ctr
  shift 2
  tar --numeric-owner -C "$dir" -cf "$WORK/layer.tar" .
  ctr="$("${BUILDAH[@]}" from --pull=never scratch)"
  "${BUILDAH[@]}" add "$ctr" "$WORK/layer.tar" / >/dev/null
  if [ $# -gt 0 ]; then
    "${BUILDAH[@]}" config "$@" "$ctr"
  fi
  "${BUILDAH[@]}" commit --quiet --rm "$ctr" "$name" >/dev/null
  rm -f "$WORK/layer.tar"
}

stage "local images: relab-base, relab-binaries, relab-postgres-rootfs"
from_dir "localhost/relab-base:$tag" "$WORK/base" \
  --user 65532:65532 --workingdir /home/nonroot \
  --env PATH=/usr/local/bin:/usr/bin --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  --label org.opencontainers.image.description="relab: local stand-in for gcr.io/distroless/cc-debian12:nonroot (host libraries)"
from_dir "localhost/relab-binaries:$tag" "$WORK/binaries"
from_dir "localhost/relab-postgres-rootfs:$tag" "$WORK/postgres"
done_stage

# --- the Dockerfiles ---------------------------------------------------------
# --pull=never: every FROM must be a local image (or a skipped stage), so an
# attempt to reach a registry fails at once instead of hanging.
bud() { # NAME DOCKERFILE BUILD-ARGS...
  local name="$1" file="$2"
  shift 2
  stage "build localhost/$name:$tag from ${file#"$ROOT"/}"
  "${BUILDAH[@]}" bud --pull=never --quiet --layers=false \
    -f "$file" -t "localhost/$name:$tag" "$@" "$ROOT" >/dev/null
  # (not --force-rm: 1.28 then also deletes the image a no-op stage stands
  # for, e.g. localhost/relab-binaries)
  "${BUILDAH[@]}" rm --all >/dev/null
  done_stage
}
bud relab-lab-service "$ROOT/deploy/docker/lab-service.Dockerfile" \
  --build-arg "BINARIES=localhost/relab-binaries:$tag" --build-arg "BASE_IMAGE=localhost/relab-base:$tag"
bud relab-operator "$ROOT/deploy/docker/operator.Dockerfile" \
  --build-arg "BINARIES=localhost/relab-binaries:$tag" --build-arg "BASE_IMAGE=localhost/relab-base:$tag"
bud relab-postgres "$ROOT/deploy/docker/postgres.Dockerfile" \
  --build-arg "ROOTFS=localhost/relab-postgres-rootfs:$tag" --build-arg "PG_MAJOR=$PG_MAJOR"

# --- archives ----------------------------------------------------------------
stage "archives in $OUT"
for name in relab-lab-service relab-operator relab-postgres; do
  ref="localhost/$name:$tag"
  rm -f "$OUT/$name.tar.tmp" "$OUT/$name.docker.tar.tmp"
  "${BUILDAH[@]}" push --quiet "$ref" "oci-archive:$OUT/$name.tar.tmp:$ref"
  "${BUILDAH[@]}" push --quiet "$ref" "docker-archive:$OUT/$name.docker.tar.tmp:$ref"
  mv -f "$OUT/$name.tar.tmp" "$OUT/$name.tar"
  mv -f "$OUT/$name.docker.tar.tmp" "$OUT/$name.docker.tar"
done
done_stage

# the previous run's images (now untagged) would pile up in vfs storage
"${BUILDAH[@]}" rm --all >/dev/null 2>&1 || true
"${BUILDAH[@]}" rmi --prune >/dev/null 2>&1 || true

say "images (uncompressed size in storage; archive = oci-archive, gzip layers):"
for name in relab-base relab-binaries relab-postgres-rootfs relab-lab-service relab-operator relab-postgres; do
  ref="localhost/$name:$tag"
  size="$("${BUILDAH[@]}" images --format '{{.Size}}' "$ref" | head -1)"
  if [ -f "$OUT/$name.tar" ]; then
    printf '[images]   %-40s %10s   %s (%s)\n' "$ref" "$size" "$OUT/$name.tar" "$(du -h "$OUT/$name.tar" | cut -f1)" >&2
  else
    printf '[images]   %-40s %10s\n' "$ref" "$size" >&2
  fi
done
say "done in $(took "$T_ALL") s"
