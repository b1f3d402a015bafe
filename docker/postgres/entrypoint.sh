#!/usr/bin/env bash
# Entrypoint of steerbench/postgres:15. On the first start (empty PGDATA) it creates a cluster
# as the postgres user: POSTGRES_USER with POSTGRES_PASSWORD, database POSTGRES_DB, listening on
# 0.0.0.0, scram-sha-256 for every network connection and peer auth on the local socket. Then it
# runs PostgreSQL in the foreground as PID 1. Any other command (e.g. `bash`) is run as given.
set -euo pipefail

: "${PGDATA:=/var/lib/postgresql/data}"
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"

if [[ ${1:-postgres} != postgres ]]; then
  exec "$@"
fi

# Started as root: fix ownership of the data directory (a fresh volume or bind mount) and of
# the socket directory, then run this script again as postgres.
if [[ $(id -u) -eq 0 ]]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  chown postgres:postgres "$PGDATA" /var/run/postgresql
  chmod 0700 "$PGDATA"
  chmod 2775 /var/run/postgresql
  exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

if [[ ! -s $PGDATA/PG_VERSION ]]; then
  if [[ -z ${POSTGRES_PASSWORD:-} ]]; then
    echo "postgres-entrypoint: POSTGRES_PASSWORD is not set; it is required to create the cluster" >&2
    exit 1
  fi
  echo "postgres-entrypoint: creating a cluster in $PGDATA (user $POSTGRES_USER, database $POSTGRES_DB)" >&2
  pwfile=$(mktemp)
  trap 'rm -f "$pwfile"' EXIT
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  initdb --pgdata="$PGDATA" --username="$POSTGRES_USER" --pwfile="$pwfile" \
    --encoding=UTF8 --locale=C.UTF-8 \
    --auth-local=peer --auth-host=scram-sha-256 --no-instructions >&2
  rm -f "$pwfile"
  trap - EXIT
  # Peer auth on the socket maps OS users to database users by name; also let the postgres OS
  # user in as POSTGRES_USER, so `docker exec -u postgres CONTAINER psql -U "$POSTGRES_USER"` works.
  sed -i -E 's/^(local[[:space:]]+all[[:space:]]+all[[:space:]]+peer)[[:space:]]*$/\1 map=local/' "$PGDATA/pg_hba.conf"
  printf 'local postgres %s\nlocal /^(.*)$ \\1\n' "$POSTGRES_USER" >>"$PGDATA/pg_ident.conf"
  cat >>"$PGDATA/pg_hba.conf" <<'HBA'

# Added by postgres-entrypoint: password (SCRAM) authentication from any network address.
host    all             all             0.0.0.0/0               scram-sha-256
host    all             all             ::/0                    scram-sha-256
HBA
  cat >>"$PGDATA/postgresql.conf" <<'CONF'

# Added by postgres-entrypoint.
listen_addresses = '0.0.0.0'
password_encryption = 'scram-sha-256'
CONF
  if [[ $POSTGRES_DB != postgres ]]; then
    # Single-user mode: no server, no socket, no authentication needed for this one statement.
    db_ident=${POSTGRES_DB//\"/\"\"}
    user_ident=${POSTGRES_USER//\"/\"\"}
    echo "CREATE DATABASE \"$db_ident\" OWNER \"$user_ident\";" |
      postgres --single -j -D "$PGDATA" postgres >/dev/null
  fi
  echo "postgres-entrypoint: cluster created" >&2
fi

shift || true
exec postgres -D "$PGDATA" "$@"
