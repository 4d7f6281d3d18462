#!/usr/bin/env bash
# Assemble a minimal root filesystem from a running Debian system: the given
# files and directories, every shared library they load (ldd's closure, plus
# the dynamic loader), and the few /etc files a glibc program expects.
#
#   rootfs.sh --out DIR [--user NAME:UID:HOME]... [--libs-for FILE]...
#             [--exclude NAME]... PATH...
#
#   PATH            copied into DIR at its canonical place (directory
#                   symlinks such as /lib -> usr/lib resolved): a file
#                   dereferenced, a directory as it is (inner symlinks kept)
#   --libs-for F    copy only F's libraries, not F (a base image for F)
#   --exclude NAME  skip what matches NAME inside directory PATHs (a tar
#                   --exclude pattern, e.g. bitcode or 'llvmjit*')
#   --user          add NAME (uid = gid = UID, home HOME) to /etc/passwd+group
#
# DIR gets Debian's merged-/usr layout (lib, lib64, bin, sbin -> usr/...), a
# 1777 /tmp, /etc/passwd and /etc/group (root, nobody, the --user entries),
# and /etc/nsswitch.conf (files for users, files+dns for hosts: since glibc
# 2.34 both modules live inside libc.so.6, nothing else to copy).
#
# Used twice: by scripts/images.sh on this machine (the host's libraries) and
# inside deploy/docker/postgres.Dockerfile's `assemble` stage (a Debian
# container's), so both ways produce the same layout. Needs bash, coreutils,
# findutils and ldd (libc-bin): any Debian.
set -euo pipefail

die() { printf 'rootfs.sh: %s\n' "$*" >&2; exit 1; }

out=
users=()
libs_for=()
excludes=()
paths=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --user) users+=("$2"); shift 2 ;;
    --libs-for) libs_for+=("$2"); shift 2 ;;
    --exclude) excludes+=("$2"); shift 2 ;;
    -*) die "unknown option $1" ;;
    *) paths+=("$1"); shift ;;
  esac
done
[ -n "$out" ] || die "--out DIR is required"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

# Debian bookworm is merged-/usr: keep the same symlinks so that the paths
# baked into binaries (/lib64/ld-linux-x86-64.so.2, /bin/sh) resolve.
mkdir -p "$out/usr/lib" "$out/usr/lib64" "$out/usr/bin" "$out/usr/sbin" "$out/etc" "$out/tmp"
for d in lib lib64 bin sbin; do
  [ -L "$out/$d" ] || ln -s "usr/$d" "$out/$d"
done
chmod 1777 "$out/tmp"

# The canonical path of a file: its directory's symlinks resolved, its own
# name kept (a library's soname is often a symlink to a versioned file).
canonical() { printf '%s/%s\n' "$(readlink -f "$(dirname "$1")")" "$(basename "$1")"; }

elfs=()
copy_file() { # SRC: dereferenced, to its canonical place
  local dst
  dst="$out$(canonical "$1")"
  [ -e "$dst" ] && return 0
  mkdir -p "$(dirname "$dst")"
  cp -L --preserve=mode,timestamps "$1" "$dst"
  # ELF magic: remember it for the library closure
  if [ "$(head -c 4 "$1" | od -An -c | tr -d ' ')" = '177ELF' ]; then
    elfs+=("$1")
  fi
}

tar_excludes=()
for x in "${excludes[@]}"; do
  tar_excludes+=(--exclude="$x")
done
for p in "${paths[@]}"; do
  [ -e "$p" ] || die "$p does not exist"
  if [ -d "$p" ]; then
    # a tree as it is (its inner symlinks kept), minus the excluded names
    dst="$out$(readlink -f "$p")"
    mkdir -p "$dst"
    tar -C "$p" -c "${tar_excludes[@]}" . | tar -C "$dst" -x --no-same-owner
    while IFS= read -r -d '' f; do
      elfs+=("$f")
    done < <(find "$dst" -type f \( -perm -u+x -o -name '*.so' -o -name '*.so.*' \) -print0)
  else
    copy_file "$p"
  fi
done
for f in "${libs_for[@]}"; do
  [ -f "$f" ] || die "$f does not exist"
  elfs+=("$f")
done

# ldd lists the whole closure of each file (direct and indirect libraries and
# the loader); statically linked files print "not a dynamic executable".
declare -A seen=()
for f in "${elfs[@]}"; do
  while read -r lib; do
    [ -n "$lib" ] && [ -z "${seen[$lib]:-}" ] || continue
    seen[$lib]=1
    copy_file "$lib"
  done < <(ldd "$f" 2>/dev/null | awk '
    /not found/ { print "MISSING " $1; next }
    $2 == "=>" && $3 ~ /^\// { print $3; next }
    $1 ~ /^\// { print $1 }')
done
for lib in "${!seen[@]}"; do
  case "$lib" in MISSING*) die "a library is missing on this system: ${lib#MISSING }" ;; esac
done

{
  echo 'root:x:0:0:root:/root:/sbin/nologin'
  echo 'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin'
} >"$out/etc/passwd"
{
  echo 'root:x:0:'
  echo 'nobody:x:65534:'
} >"$out/etc/group"
for u in "${users[@]}"; do
  IFS=: read -r name uid home <<<"$u"
  [ -n "$name" ] && [ -n "$uid" ] && [ -n "$home" ] || die "--user wants NAME:UID:HOME, got $u"
  echo "$name:x:$uid:$uid:$name:$home:/sbin/nologin" >>"$out/etc/passwd"
  echo "$name:x:$uid:" >>"$out/etc/group"
  mkdir -p "$out$home"
  chown "$uid:$uid" "$out$home"
  chmod 0755 "$out$home"
done
chmod 0644 "$out/etc/passwd" "$out/etc/group"
cat >"$out/etc/nsswitch.conf" <<'EOF'
passwd: files
group: files
shadow: files
hosts: files dns
networks: files
protocols: files
services: files
EOF
