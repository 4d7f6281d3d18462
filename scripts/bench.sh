#!/usr/bin/env bash
# Run relab's benchmarks (called by `cargo xtask bench [name]`, after setup).
# Each bench runs the lab and its reference tool side by side in one run on
# this machine and prints the figures recorded in docs/benchmarks.md.
#
#   scripts/bench.sh            # every bench
#   scripts/bench.sh pipeline   # order pipeline vs pgbench (same SQL, same server)
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

# loadgen() { ... }   # placeholder: load generator vs wrk (added by the load generator work)

case "${1:-all}" in
  pipeline) pipeline ;;
  # loadgen) loadgen ;;   # placeholder, see above
  all)
    pipeline
    # loadgen   # placeholder, see above
    ;;
  *)
    say "unknown bench ${1:-}; known: pipeline"
    exit 2
    ;;
esac
