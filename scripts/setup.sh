#!/usr/bin/env bash
# Install and start what relab's tests, benches and local runs need on a
# Debian bookworm machine: PostgreSQL (server, client, pgbench), Prometheus'
# promtool, wrk, hyperfine and headless Chromium (the report's screenshot test). Idempotent: does nothing that is already done.
#
#   scripts/setup.sh            # everything
#   RELAB_SKIP_APT=1 scripts/setup.sh   # never call apt (already provisioned)
#
# Postgres: if 127.0.0.1:5432 already accepts `postgres` without a password,
# it is used as is. Otherwise a private trust-auth cluster is created under
# /var/lib/relab/pg and started on 127.0.0.1:${RELAB_PG_PORT:-5432}.
set -euo pipefail

# `setup.sh run`: only what `relab run` needs (PostgreSQL's server binaries
# for its ephemeral database); nothing is started.
if [ "${1:-}" = run ]; then
  if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then
    exit 0
  fi
  if [ "$(id -u)" != 0 ]; then
    printf '[setup] PostgreSQL server binaries missing: run as root, or apt-get install postgresql\n' >&2; exit 2
  fi
  printf '[setup] installing postgresql (apt) for relab run\n' >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  exit 0
fi

PG_PORT="${RELAB_PG_PORT:-5432}"
PG_DIR="${RELAB_PG_DIR:-/var/lib/relab/pg}"
say() { printf '[setup] %s\n' "$*" >&2; }

need_apt=()
command -v psql >/dev/null 2>&1 || need_apt+=(postgresql-client)
[ -x /usr/lib/postgresql/15/bin/initdb ] || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
ls /usr/lib/postgresql/*/bin/pgbench >/dev/null 2>&1 || need_apt+=(postgresql)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
command -v hyperfine >/dev/null 2>&1 || need_apt+=(hyperfine)
# headless Chromium renders report.html in a test (screenshot + DOM)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)

if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "${RELAB_SKIP_APT:-0}" = 1 ]; then
    say "missing ${need_apt[*]} and RELAB_SKIP_APT=1: install them first"; exit 2
  fi
  if [ "$(id -u)" != 0 ]; then
    say "missing ${need_apt[*]}: run as root (or: sudo apt-get install ${need_apt[*]})"; exit 2
  fi
  say "installing ${need_apt[*]} (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2046
  apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${need_apt[@]}" | sort -u) >/dev/null
fi

pg_ok() { psql "postgres://postgres@127.0.0.1:${PG_PORT}/postgres" -Atqc 'select 1' >/dev/null 2>&1; }

if pg_ok; then
  say "postgres on 127.0.0.1:${PG_PORT} accepts user postgres: using it"
else
  PG_BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
  if [ ! -s "$PG_DIR/PG_VERSION" ]; then
    say "creating a private trust-auth cluster in $PG_DIR"
    install -d -o postgres -g postgres -m 700 "$PG_DIR"
    runuser -u postgres -- "$PG_BIN/initdb" -D "$PG_DIR" -U postgres --auth=trust >/dev/null
  fi
  say "starting postgres on 127.0.0.1:${PG_PORT}"
  runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DIR" -l "$PG_DIR/server.log" -w \
    -o "-p ${PG_PORT} -c listen_addresses=127.0.0.1 -k $PG_DIR -c max_connections=300" start >/dev/null
  for _ in $(seq 1 50); do pg_ok && break; sleep 0.2; done
  pg_ok || { say "postgres did not come up; see $PG_DIR/server.log"; exit 2; }
fi
say "ready: postgres://postgres@127.0.0.1:${PG_PORT}/postgres, promtool $(promtool --version 2>&1 | head -1 | awk '{print $3}')"
