#!/usr/bin/env bash
# Start the local Postgres 15 cluster "15 main" for Kova's development stack
# and tests (no systemd: pg_ctlcluster --skip-systemctl-redirect).
#
# Idempotent: creates the cluster if missing, (re)configures it, starts it if it
# is not running, and makes sure the superuser role exists. The last line on
# stdout is the server URL, e.g.
#
#   postgresql://root:kova@127.0.0.1:5432/postgres
#
# Authentication: the role (KOVA_PG_USER, default "root") is a superuser with a
# known password (KOVA_PG_PASSWORD, default "kova"); Debian's pg_hba.conf is left
# as shipped, so TCP connections from 127.0.0.1 use scram-sha-256 with that
# password, and the Unix socket keeps peer authentication (the Unix user root
# may simply run `psql postgres`).
#
# Environment:
#   KOVA_PG_PORT      port to listen on (default 5432; the cluster is
#                     reconfigured and restarted if it listens elsewhere)
#   KOVA_PG_CLUSTER   cluster name (default main)
#   KOVA_PG_USER      superuser role to create (default root)
#   KOVA_PG_PASSWORD  its password (default kova)
#   KOVA_PG_DURABLE   set to 1 to keep fsync/full_page_writes on; by default this
#                     development cluster trades crash safety for speed
#                     (fsync=off, synchronous_commit=off, full_page_writes=off)
#
# Must run as root (it switches to the postgres user where needed).
set -euo pipefail

VERSION=15
CLUSTER=${KOVA_PG_CLUSTER:-main}
PORT=${KOVA_PG_PORT:-5432}
PGUSER_NAME=${KOVA_PG_USER:-root}
PGPASS=${KOVA_PG_PASSWORD:-kova}
CONF_DIR=/etc/postgresql/$VERSION/$CLUSTER

log() { echo "[kova] postgres: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  echo "[kova] postgres: must run as root" >&2
  exit 1
fi
if [ ! -x /usr/lib/postgresql/$VERSION/bin/postgres ]; then
  echo "[kova] postgres: PostgreSQL $VERSION is not installed (run hack/install-system-packages.sh)" >&2
  exit 1
fi

# One run at a time (parallel test workers all call this script). The server
# must not inherit the lock's descriptor (9>&- below), or it would hold it.
exec 9>/var/run/kova-start-postgres.lock
flock 9

as_postgres() { runuser -u postgres -- "$@"; }

cluster_status() {
  # Prints "online" or "down" (pg_lsclusters' status column); empty if missing.
  pg_lsclusters --no-header 2>/dev/null | awk -v v="$VERSION" -v c="$CLUSTER" '$1==v && $2==c {print $4}'
}

# 1. The cluster.
if [ -z "$(cluster_status)" ]; then
  log "creating cluster $VERSION $CLUSTER on port $PORT"
  pg_createcluster --port "$PORT" "$VERSION" "$CLUSTER" >&2
fi

# 2. Configuration (a changed setting restarts a running server).
need_restart=0
current_port=$(pg_conftool -s "$VERSION" "$CLUSTER" show port 2>/dev/null || true)
if [ "$current_port" != "$PORT" ]; then
  log "setting port $PORT (was ${current_port:-unset})"
  pg_conftool "$VERSION" "$CLUSTER" set port "$PORT"
  need_restart=1
fi

mkdir -p "$CONF_DIR/conf.d"
kova_conf="$CONF_DIR/conf.d/kova.conf"
{
  echo "# Written by Kova's hack/start-postgres.sh; rewritten on every start."
  echo "listen_addresses = '127.0.0.1'"
  echo "max_connections = 200"
  if [ "${KOVA_PG_DURABLE:-0}" != 1 ]; then
    echo "# Development cluster: speed over crash safety (KOVA_PG_DURABLE=1 to disable)."
    echo "fsync = off"
    echo "synchronous_commit = off"
    echo "full_page_writes = off"
  fi
} >"$kova_conf.new"
if ! cmp -s "$kova_conf.new" "$kova_conf" 2>/dev/null; then
  mv "$kova_conf.new" "$kova_conf"
  chown postgres:postgres "$kova_conf" 2>/dev/null || true
  need_restart=1
else
  rm -f "$kova_conf.new"
fi

# 3. The server.
# pg_ctlcluster needs its socket and stats directories (normally made by systemd).
mkdir -p /var/run/postgresql && chown postgres:postgres /var/run/postgresql && chmod 2775 /var/run/postgresql

if [ "$(cluster_status)" = online ]; then
  if [ "$need_restart" = 1 ]; then
    log "restarting cluster $VERSION $CLUSTER (configuration changed)"
    pg_ctlcluster --skip-systemctl-redirect "$VERSION" "$CLUSTER" restart -m fast >&2 9>&-
  fi
else
  log "starting cluster $VERSION $CLUSTER"
  pg_ctlcluster --skip-systemctl-redirect "$VERSION" "$CLUSTER" start >&2 9>&-
fi

for _ in $(seq 1 60); do
  if pg_isready -q -h 127.0.0.1 -p "$PORT"; then
    break
  fi
  sleep 0.5
done
if ! pg_isready -q -h 127.0.0.1 -p "$PORT"; then
  log "server does not accept connections on 127.0.0.1:$PORT; see /var/log/postgresql/postgresql-$VERSION-$CLUSTER.log"
  exit 1
fi

# 4. The superuser role (password always reset to the known one).
sql_ident=${PGUSER_NAME//\"/\"\"}
sql_pass=${PGPASS//\'/\'\'}
as_postgres psql -X -q -v ON_ERROR_STOP=1 -p "$PORT" -d postgres >&2 <<SQL
SELECT format('CREATE ROLE %I', '${PGUSER_NAME//\'/\'\'}')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '${PGUSER_NAME//\'/\'\'}') \gexec
ALTER ROLE "$sql_ident" WITH SUPERUSER CREATEDB CREATEROLE LOGIN PASSWORD '$sql_pass';
SQL

# Percent-encode the password for the URL (only the characters that need it).
url_pass=$(printf '%s' "$PGPASS" | sed -e 's/%/%25/g' -e 's/@/%40/g' -e 's/:/%3A/g' -e 's/\//%2F/g' -e 's/?/%3F/g' -e 's/#/%23/g')
log "ready on 127.0.0.1:$PORT (role $PGUSER_NAME)"
echo "postgresql://$PGUSER_NAME:$url_pass@127.0.0.1:$PORT/postgres"
