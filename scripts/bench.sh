#!/usr/bin/env bash
# Run relab's benchmarks (called by `cargo xtask bench [name]`, after setup).
# Each bench runs the lab and its reference tool side by side in one run on
# this machine and prints the figures recorded in docs/benchmarks.md.
#
#   scripts/bench.sh            # every bench
#   scripts/bench.sh pipeline   # order pipeline vs pgbench (same SQL, same server)
#   scripts/bench.sh loadgen    # load generator vs wrk (same endpoint, same run)
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

case "${1:-all}" in
  pipeline) pipeline ;;
  loadgen) loadgen ;;
  all)
    pipeline
    loadgen
    ;;
  *)
    say "unknown bench ${1:-}; known: pipeline, loadgen"
    exit 2
    ;;
esac
