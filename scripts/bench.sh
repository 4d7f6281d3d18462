#!/usr/bin/env bash
# Run relab's benchmarks (called by `cargo xtask bench [name]`, after setup).
# Each bench runs the lab and its reference tool side by side in one run on
# this machine and prints the figures recorded in docs/benchmarks.md.
#
#   scripts/bench.sh            # every bench
#   scripts/bench.sh pipeline   # order pipeline vs pgbench (same SQL, same server)
#   scripts/bench.sh loadgen    # load generator vs wrk (same endpoint, same run)
#   scripts/bench.sh operator   # 100 experiments at once against a real API server
#   scripts/bench.sh operator-1000  # 1,000 at once: peak RSS, reconcile errors, all past Pending
#   scripts/bench.sh variants   # 4 variants x 3 runs vs the same 12 runs one by one
#   scripts/bench.sh db-proxy   # SELECT 1 at 1,000/s direct vs through the fault proxy
#
# Knobs are environment variables, documented in each bench (e.g.
# RELAB_BENCH_ORDERS, RELAB_BENCH_CLIENTS for the pipeline bench).
set -euo pipefail

cd "$(dirname "$0")/.."
say() { printf '[bench] %s\n' "$*" >&2; }

pipeline() {
  say "order pipeline vs pgbench (lab-service/benches/pipeline.rs)"
  cargo bench -p lab-service --bench pipeline
}

loadgen() {
  say "load generator vs wrk on the same endpoint (lab-service/benches/loadgen.rs)"
  command -v "${RELAB_WRK:-wrk}" >/dev/null 2>&1 || { say "wrk not found: run scripts/setup.sh"; exit 2; }
  cargo bench -p lab-service --bench loadgen
}

operator() {
  say "operator: ${RELAB_BENCH_EXPERIMENTS:-100} experiments at once on a real API server (operator/benches/operator.rs)"
  if [ -z "${RELAB_KUBECONFIG:-}" ]; then
    bash scripts/k8s/build.sh
    eval "$(bash scripts/k8s/control-plane.sh start)"
    trap 'bash scripts/k8s/control-plane.sh stop' EXIT
    export RELAB_KUBECONFIG="$KUBECONFIG"
  fi
  cargo bench -p relab-operator --bench operator
}

operator_1000() {
  RELAB_BENCH_EXPERIMENTS=1000 RELAB_BENCH_REFERENCE=0 operator
}

db_proxy() {
  say "database fault proxy vs a direct connection (lab-service/benches/db_proxy.rs)"
  cargo bench -p lab-service --bench db_proxy
}

variants() {
  say "variants: a comparison vs the same lab runs one by one (operator/benches/variants.rs)"
  cargo bench -p relab-operator --bench variants
}

case "${1:-all}" in
  pipeline) pipeline ;;
  variants) variants ;;
  loadgen) loadgen ;;
  operator) operator ;;
  operator-1000) operator_1000 ;;
  db-proxy) db_proxy ;;
  all)
    pipeline
    loadgen
    operator
    variants
    db_proxy
    ;;
  *)
    say "unknown bench ${1:-}; known: pipeline, loadgen, operator, operator-1000, variants, db-proxy"
    exit 2
    ;;
esac
