#!/bin/sh
# relab's Postgres entrypoint (busybox sh): the subset of the official
# postgres image's contract that relab's operator uses
# (operator/src/controller/children.rs):
#
#   env  PGDATA                      data directory (default
#                                    /var/lib/postgresql/data; the operator
#                                    sets .../data/pgdata inside its emptyDir)
#        POSTGRES_HOST_AUTH_METHOD   auth for TCP clients (trust in the lab);
#                                    else POSTGRES_PASSWORD is required and
#                                    scram-sha-256 is used
#        POSTGRES_USER               superuser (default postgres)
#        POSTGRES_PASSWORD           its password (optional with trust)
#        POSTGRES_DB                 database created at init (default: the
#                                    user's name)
#        POSTGRES_INITDB_ARGS        extra initdb arguments (e.g. --no-sync)
#   args `-c name=value ...`         server settings (as with the official
#                                    image: arguments that start with `-` are
#                                    passed to postgres), or a command to run
#
# On an empty PGDATA it runs initdb, starts a socket-only server (invisible
# to the readiness probe `pg_isready -h 127.0.0.1`), creates POSTGRES_DB,
# stops it; then it execs postgres listening on every address, port 5432.
# Runs as the image's user (uid 70); nothing outside PGDATA, the socket
# directory /var/run/postgresql and /tmp is written, so a read-only root
# filesystem is fine.
set -eu

log() { echo "relab-postgres: $*" >&2; }

if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
  set -- postgres "$@"
fi
if [ "$1" != postgres ]; then
  exec "$@"
fi
if [ "$(id -u)" = 0 ]; then
  log "refusing to run the server as root: run as uid 70 (the image's USER)"
  exit 1
fi

export PGDATA="${PGDATA:-/var/lib/postgresql/data}"
user="${POSTGRES_USER:-postgres}"
db="${POSTGRES_DB:-$user}"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  auth="${POSTGRES_HOST_AUTH_METHOD:-}"
  if [ -z "$auth" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
      log "PGDATA is empty and neither POSTGRES_PASSWORD nor POSTGRES_HOST_AUTH_METHOD (e.g. trust) is set"
      exit 1
    fi
    auth=scram-sha-256
  fi
  mkdir -p "$PGDATA"
  chmod 0700 "$PGDATA"
  log "initializing $PGDATA (superuser $user, database $db, host auth $auth)"
  pwfile=
  if [ -n "${POSTGRES_PASSWORD:-}" ]; then
    pwfile="$(mktemp)"
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  fi
  # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of words
  initdb --username="$user" --encoding=UTF8 --locale=C \
    --auth-local=trust --auth-host="$auth" ${pwfile:+--pwfile="$pwfile"} \
    ${POSTGRES_INITDB_ARGS:-} >/dev/null
  [ -z "$pwfile" ] || rm -f "$pwfile"
  {
    echo
    echo "# relab-postgres: TCP clients from anywhere ($auth)"
    echo "host all all all $auth"
  } >>"$PGDATA/pg_hba.conf"
  echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"

  if [ "$db" != postgres ]; then
    # a server on the socket only: the probes do not see it
    pg_ctl -D "$PGDATA" -w -t 60 -o "-c listen_addresses='' -c unix_socket_directories=/var/run/postgresql" start >/dev/null
    escaped="$(printf '%s' "$db" | sed 's/"/""/g')"
    psql -v ON_ERROR_STOP=1 -q -h /var/run/postgresql -U "$user" -d postgres \
      -c "CREATE DATABASE \"$escaped\"" >/dev/null
    pg_ctl -D "$PGDATA" -w -t 60 -m fast stop >/dev/null
  fi
  log "initialized"
fi

shift
exec postgres "$@"
