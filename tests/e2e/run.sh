#!/usr/bin/env bash
# The end-to-end suite (`cargo xtask e2e`; root, disposable machine; see
# docs/e2e.md): images from the debug binaries, a single-node cluster, the
# images loaded, operator/tests/e2e.rs against it, and the cluster torn down
# whatever happens: the suite fails, or is interrupted (Ctrl-C, SIGTERM).
#
#   bash tests/e2e/run.sh [cargo test args...]
#   RELAB_E2E_KEEP=1 bash tests/e2e/run.sh   # leave the cluster up afterwards
set -euo pipefail
cd "$(dirname "$0")/../.."
CLUSTER=tests/e2e/cluster/cluster.sh
CACHE="${RELAB_CACHE:-/var/cache/relab}"
say() { printf '[e2e] %s\n' "$*" >&2; }
started=$SECONDS

# --all-targets: the feature set of `cargo test --workspace --all-targets`,
# so these are the binaries the test command built (no rebuild)
cargo build --workspace --all-targets
# e2e.rs is `test = false` (left out of --all-targets): lint it here
cargo clippy -p relab-operator --test e2e -- -D warnings
bash scripts/images.sh --profile debug
say "images built in $((SECONDS - started)) s"

down() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "${RELAB_E2E_KEEP:-}" ]; then
    say "RELAB_E2E_KEEP set: the cluster stays up (bash $CLUSTER down)"
  else
    bash "$CLUSTER" down || rc=1
  fi
  say "done in $((SECONDS - started)) s (exit $rc)"
  exit "$rc"
}
trap down EXIT
trap 'say "interrupted"; exit 130' INT TERM

up=$(bash "$CLUSTER" up)   # its own trap tears a failed start down
eval "$up"
bash "$CLUSTER" load "$CACHE"/images/relab-{operator,lab-service,postgres}.tar
RELAB_KUBECONFIG="$KUBECONFIG" cargo test -p relab-operator --test e2e "$@" -- --nocapture
