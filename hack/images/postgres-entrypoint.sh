#!/bin/sh
# Entrypoint of Kova's PostgreSQL image (hack/build-images.sh): the contract
# of the official `postgres` image that the Kova chart relies on, for an image
# built from Debian's postgresql-15 packages.
#
#   POSTGRES_PASSWORD   password of POSTGRES_USER (required)
#   POSTGRES_USER       superuser created at initdb (default: postgres)
#   POSTGRES_DB         database created at initdb (default: POSTGRES_USER)
#   PGDATA              data directory (default: /var/lib/postgresql/data)
#   POSTGRES_INITDB_ARGS extra initdb arguments
#
# An empty PGDATA is initialised once (password authentication for TCP
# clients, trust for the local socket inside the container); then the server
# replaces this script (exec) and runs in the foreground. Run as root, it
# takes ownership of PGDATA and drops to the postgres user (uid 999).
set -eu

: "${PGDATA:=/var/lib/postgresql/data}"
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
export PGDATA

if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
  set -- postgres "$@"
fi

if [ "$1" != postgres ]; then
  exec "$@"
fi

if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA"
  chown postgres:postgres "$PGDATA"
  chmod 0700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

log() { echo "kova-postgres: $*" >&2; }

# On every start, as the official image does: a volume's fsGroup handling may
# have opened the data directory to the group, and PostgreSQL refuses to
# start on anything wider than 0750.
if [ -d "$PGDATA" ]; then
  chmod 0700 "$PGDATA" || :
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD:-}" ]; then
    log "error: the data directory $PGDATA is empty and POSTGRES_PASSWORD is not set"
    exit 1
  fi
  mkdir -p "$PGDATA"
  chmod 0700 "$PGDATA"
  log "initialising $PGDATA (superuser $POSTGRES_USER, database $POSTGRES_DB)"
  pwfile=$(mktemp)
  trap 'rm -f "$pwfile"' EXIT
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of arguments
  initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust \
    --auth-host=scram-sha-256 --encoding=UTF8 ${POSTGRES_INITDB_ARGS:-} >&2
  rm -f "$pwfile"
  trap - EXIT
  printf '\n# kova-postgres: password authentication from any address\nhost all all all scram-sha-256\n' \
    >>"$PGDATA/pg_hba.conf"
  printf "\n# kova-postgres\nlisten_addresses = '*'\n" >>"$PGDATA/postgresql.auto.conf"
  if [ "$POSTGRES_DB" != postgres ]; then
    db=$(printf '%s' "$POSTGRES_DB" | sed 's/"/""/g')
    echo "CREATE DATABASE \"$db\";" | postgres --single -j -D "$PGDATA" postgres >/dev/null
  fi
  log "initialised"
fi

exec "$@"
