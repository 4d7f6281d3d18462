#!/usr/bin/env bash
# Build kube-apiserver and kube-controller-manager (Kubernetes v1.20.2) from
# Debian bookworm's `kubernetes` source package with Debian's Go, and cache the
# binaries under ${RELAB_CACHE:-/var/cache/relab}/k8s/bin/.
#
#   bash scripts/k8s/build.sh            # build once; later runs do nothing
#   RELAB_K8S_REBUILD=1 bash scripts/k8s/build.sh   # rebuild even if cached
#   RELAB_SKIP_APT=1 bash scripts/k8s/build.sh      # never call apt (provisioned)
#   bash scripts/k8s/build.sh --node     # also kube-scheduler, kubelet,
#                                        # kube-proxy and the pause binary
#                                        # (the single-node cluster, tests/e2e)
#
# Needs root for apt (build deps, a deb-src entry, `apt-get source`).
# Idempotent: every stage is skipped when its result already exists.
#
# Why the reflect2 step: the source package vendors
# github.com/modern-go/reflect2 v1.0.1, which is not compatible with Go 1.18+
# (bookworm's golang-go is 1.19): the API server then segfaults on the first
# custom-resource create. Debian's golang-github-modern-go-reflect2-dev (1.0.2)
# replaces it before building.
#
# Why the openapi type-check patch: the vendored go-openapi/validate (and
# kube-openapi's copy of it) tests "is this value null?" with
# reflect.DeepEqual(reflect.Zero(T), reflect.ValueOf(v)), which since Go 1.16
# is true for the empty string (see moby/moby#42583). Built with Go 1.19 as is,
# the API server refuses every "" in a custom resource ("spec.x in body must be
# of type string: \"null\"") and every CRD with `default: ''`. Upstream later
# reduced the test to `data == nil`; so does this script.
set -euo pipefail

CACHE="${RELAB_CACHE:-/var/cache/relab}/k8s"
BIN="$CACHE/bin"
SRC="$CACHE/src"
GOHOME="$CACHE/home"
REFLECT2=/usr/share/gocode/src/github.com/modern-go/reflect2
WHAT="cmd/kube-apiserver cmd/kube-controller-manager"
BINARIES=(kube-apiserver kube-controller-manager)
NODE=
DEPS_NODE=()
if [ "${1:-}" = --node ]; then
  NODE=1
  WHAT="$WHAT cmd/kube-scheduler cmd/kubelet cmd/kube-proxy"
  BINARIES+=(kube-scheduler kubelet kube-proxy)
  DEPS_NODE=(gcc libc6-dev)
fi
# Bump when the recipe changes what the binaries do: cached binaries built by
# an older recipe are then rebuilt.
RECIPE="2 (reflect2 1.0.2, openapi empty-string fix)"
DEPS=(golang-go make rsync jq etcd-server golang-github-modern-go-reflect2-dev openssl dpkg-dev xz-utils curl ca-certificates)
DEPS+=("${DEPS_NODE[@]}")
APT_OPTS=(-o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)

say() { printf '[k8s-build] %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
T_ALL=$(now)
T_STAGE=$T_ALL
stage() { T_STAGE=$(now); say "== $*"; }
done_stage() { say "   $1 took $(awk -v a="$T_STAGE" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}') s"; }

have_binaries() {
  local b
  for b in "${BINARIES[@]}"; do [ -x "$BIN/$b" ] || return 1; done
  if [ -n "$NODE" ]; then [ -x "$BIN/pause" ] || return 1; fi
  [ "$(cat "$BIN/.recipe" 2>/dev/null)" = "$RECIPE" ] || { say "cached binaries are from another recipe: rebuilding"; return 1; }
}

if [ -z "${RELAB_K8S_REBUILD:-}" ] && have_binaries; then
  say "binaries already cached (recipe $RECIPE), nothing to do:"
  for b in "${BINARIES[@]}"; do say "  $BIN/$b"; done
  exit 0
fi

# One build at a time per cache (a second caller waits, then finds the result).
mkdir -p "$CACHE"
exec 9<"$CACHE"
if ! flock -n 9; then
  say "another build is running in $CACHE: waiting for it"
  flock 9
  if [ -z "${RELAB_K8S_REBUILD:-}" ] && have_binaries; then
    say "built by the other run, nothing to do"
    exit 0
  fi
fi

apt_ok() { [ -z "${RELAB_SKIP_APT:-}" ]; }
need_root() { [ "$(id -u)" = 0 ] || die "$1 needs root (or provision by hand and set RELAB_SKIP_APT=1)"; }
APT_UPDATED=
apt_update() {
  [ -n "$APT_UPDATED" ] && return 0
  DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" update -qq
  APT_UPDATED=1
}

# ---------------------------------------------------------------- build deps
stage "build dependencies"
missing=()
for p in "${DEPS[@]}"; do
  st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [ "$st" = "install ok installed" ] || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  apt_ok || die "missing packages: ${missing[*]} (RELAB_SKIP_APT is set)"
  need_root "installing ${missing[*]}"
  say "installing: ${missing[*]}"
  apt_update
  DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  say "all installed: ${DEPS[*]}"
fi
[ -d "$REFLECT2" ] || die "$REFLECT2 missing (golang-github-modern-go-reflect2-dev)"
done_stage "build dependencies"

# ------------------------------------------------------------ deb-src entry
# True when some enabled apt source (one-line or deb822 format) already has a
# deb-src entry for the suite `bookworm`.
has_bookworm_deb_src() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    grep -Eq '^[[:space:]]*deb-src[[:space:]]+(\[[^]]*\][[:space:]]+)?[^[:space:]]+[[:space:]]+bookworm([[:space:]]|$)' "$f" && return 0
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    # deb822: stanzas separated by blank lines; fields may be in any order.
    awk '
      function flush() { if (types ~ /(^|[[:space:]])deb-src([[:space:]]|$)/ && suites ~ /(^|[[:space:]])bookworm([[:space:]]|$)/ && enabled !~ /^[[:space:]]*no/) found=1; types=""; suites=""; enabled="" }
      /^[[:space:]]*#/ { next }
      /^[[:space:]]*$/ { flush(); next }
      tolower($0) ~ /^types:/   { sub(/^[^:]*:/, ""); types=$0 }
      tolower($0) ~ /^suites:/  { sub(/^[^:]*:/, ""); suites=$0 }
      tolower($0) ~ /^enabled:/ { sub(/^[^:]*:/, ""); enabled=tolower($0) }
      END { flush(); exit(found ? 0 : 1) }
    ' "$f" && return 0
  done
  return 1
}

# The mirror URI that the existing bookworm `deb` entry uses (default
# deb.debian.org), so that the added deb-src entry matches it.
bookworm_mirror() {
  local f uri=""
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    uri=$(awk '
      function flush() { if (uris != "" && types ~ /(^|[[:space:]])deb([[:space:]]|$)/ && suites ~ /(^|[[:space:]])bookworm([[:space:]]|$)/ && enabled !~ /^[[:space:]]*no/ && out == "") { split(uris, a, " "); out=a[1] } uris=""; suites=""; types=""; enabled="" }
      /^[[:space:]]*#/ { next }
      /^[[:space:]]*$/ { flush(); next }
      tolower($0) ~ /^types:/   { sub(/^[^:]*:/, ""); types=$0 }
      tolower($0) ~ /^uris:/    { sub(/^[^:]*:[[:space:]]*/, ""); uris=$0 }
      tolower($0) ~ /^suites:/  { sub(/^[^:]*:/, ""); suites=$0 }
      tolower($0) ~ /^enabled:/ { sub(/^[^:]*:/, ""); enabled=tolower($0) }
      END { flush(); print out }
    ' "$f")
    [ -n "$uri" ] && { echo "$uri"; return; }
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    uri=$(awk '$1=="deb" { i=2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ } if ($(i+1)=="bookworm") { print $i; exit } }' "$f")
    [ -n "$uri" ] && { echo "$uri"; return; }
  done
  echo "http://deb.debian.org/debian"
}

stage "deb-src entry for bookworm"
if has_bookworm_deb_src; then
  say "a deb-src entry for bookworm exists already"
else
  apt_ok || die "no deb-src entry for bookworm and RELAB_SKIP_APT is set"
  need_root "adding a deb-src entry"
  mirror=$(bookworm_mirror)
  keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  if [ -d /etc/apt/sources.list.d ] && { ls /etc/apt/sources.list.d/*.sources >/dev/null 2>&1 || [ ! -s /etc/apt/sources.list ]; }; then
    # deb822 system (bookworm container images): a separate file, existing
    # entries untouched.
    f=/etc/apt/sources.list.d/relab-deb-src.sources
    {
      echo "# added by relab scripts/k8s/build.sh: source packages (kubernetes)"
      echo "Types: deb-src"
      echo "URIs: $mirror"
      echo "Suites: bookworm"
      echo "Components: main"
      [ -f "$keyring" ] && echo "Signed-By: $keyring"
    } > "$f"
  else
    f=/etc/apt/sources.list.d/relab-deb-src.list
    printf '# added by relab scripts/k8s/build.sh: source packages (kubernetes)\ndeb-src %s bookworm main\n' "$mirror" > "$f"
  fi
  say "added $f (deb-src $mirror bookworm main)"
  APT_UPDATED=
fi
done_stage "deb-src entry"

# ----------------------------------------------------------- source download
stage "download source package"
mkdir -p "$SRC"
cd "$SRC"
if ls "$SRC"/kubernetes_*.dsc >/dev/null 2>&1; then
  say "source package already downloaded: $(ls "$SRC"/kubernetes_*.dsc)"
else
  apt_ok || die "source package not cached in $SRC and RELAB_SKIP_APT is set"
  need_root "apt-get source"
  apt_update
  # --download-only: fetch .dsc + tarballs, unpack ourselves below.
  apt-get "${APT_OPTS[@]}" source --download-only -qq kubernetes/bookworm >/dev/null 2>"$SRC/apt-source.log" \
    || { cat "$SRC/apt-source.log" >&2; die "apt-get source kubernetes failed"; }
fi
DSC=$(find "$SRC" -maxdepth 1 -name "kubernetes_*.dsc" -print -quit)
say "$(basename "$DSC"): $(du -ch --apparent-size "$SRC"/kubernetes_* | tail -1 | cut -f1) downloaded in $SRC"
done_stage "download"

# ---------------------------------------------------------------- extract
stage "extract"
TREE="$SRC/tree"
if [ -f "$TREE/.relab-extracted" ]; then
  say "already extracted in $TREE"
else
  rm -rf "$TREE" "$TREE.tmp"
  # dpkg-source applies Debian's patches; --no-check: the .dsc was fetched by
  # apt from a signed index, no need for debian-keyring here.
  dpkg-source --no-check -x "$DSC" "$TREE.tmp" >/dev/null
  mv "$TREE.tmp" "$TREE"
  touch "$TREE/.relab-extracted"
fi
[ -f "$TREE/Makefile" ] || die "$TREE has no Makefile"
done_stage "extract"

# ------------------------------------------------------- reflect2 replacement
stage "replace vendored reflect2 with Debian's 1.0.2"
V="$TREE/vendor/github.com/modern-go/reflect2"
[ -d "$V" ] || die "$V missing: unexpected source tree layout"
rm -rf "$V"
mkdir -p "$V"
# everything but tests (their deps are not vendored)
(cd "$REFLECT2" && find . -type f ! -name '*_test.go' -print0 | xargs -0 -I{} cp --parents {} "$V/")
[ -n "$(find "$V" -name '*_test.go')" ] && die "test files left in $V"
say "vendor/github.com/modern-go/reflect2 <- $REFLECT2 ($(find "$V" -name '*.go' | wc -l) .go files)"
done_stage "reflect2"

# ----------------------------------------------- openapi empty-string fix
stage "patch vendored openapi validators (empty string is not null on Go >= 1.16)"
ZERO_CHECK='if data == nil || reflect.DeepEqual(reflect.Zero(reflect.TypeOf(data)), reflect.ValueOf(data)) {'
for f in vendor/k8s.io/kube-openapi/pkg/validation/validate/type.go vendor/github.com/go-openapi/validate/type.go; do
  [ -f "$TREE/$f" ] || continue
  if grep -qF "$ZERO_CHECK" "$TREE/$f"; then
    sed -i "s/$(printf '%s' "$ZERO_CHECK" | sed 's/[][\/.*^$]/\\&/g')/if data == nil {/" "$TREE/$f"
    say "patched $f"
  fi
  grep -qF "$ZERO_CHECK" "$TREE/$f" && die "could not patch $f"
done
done_stage "openapi patch"

# ------------------------------------------------------------------- build
stage "make WHAT=\"$WHAT\" (Go $(go version | awk '{print $3}'))"
mkdir -p "$GOHOME"
(
  cd "$TREE"
  export HOME="$GOHOME" GOCACHE="$GOHOME/.cache/go-build" GOFLAGS="${GOFLAGS:-}"
  # The server binaries are static (CGO off) by Kubernetes' own build rules;
  # kubelet is built as upstream builds it.
  [ -n "$NODE" ] || export CGO_ENABLED=0
  unset GOPATH GOROOT
  make WHAT="$WHAT"
) > "$CACHE/build.log" 2>&1 || { tail -n 40 "$CACHE/build.log" >&2; die "make failed (full log: $CACHE/build.log)"; }
done_stage "compile"

# ------------------------------------------------------------------ install
stage "install binaries"
mkdir -p "$BIN"
for b in "${BINARIES[@]}"; do
  out=$(find "$TREE/_output" -type f -name "$b" -perm -u+x -print -quit)
  [ -n "$out" ] || die "built $b not found under $TREE/_output"
  install -m 0755 "$out" "$BIN/$b.tmp"
  mv "$BIN/$b.tmp" "$BIN/$b"
  say "$BIN/$b: $("$BIN/$b" --version 2>/dev/null), $(du -h "$BIN/$b" | cut -f1)"
done
if [ -n "$NODE" ]; then
  # The pod sandbox ("pause") binary, from the same source, static.
  gcc -Os -static -o "$BIN/pause.tmp" "$TREE/build/pause/linux/pause.c" \
    -DVERSION="relab" 2>>"$CACHE/build.log" || die "compiling pause.c failed (log: $CACHE/build.log)"
  strip "$BIN/pause.tmp" && mv "$BIN/pause.tmp" "$BIN/pause"
  say "$BIN/pause: $(du -h "$BIN/pause" | cut -f1)"
fi
echo "$RECIPE" > "$BIN/.recipe"
done_stage "install"
say "total $(awk -v a="$T_ALL" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}') s"
