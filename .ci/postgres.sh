#!/usr/bin/env bash
# Start a throwaway PostgreSQL server on 127.0.0.1 for the tests (idempotent).
#
# Installs Debian's postgresql if missing, initialises a cluster under $SWEEP_PG_DIR
# (owned by the postgres user: the server refuses to run as root), starts it on
# $SWEEP_PG_PORT, creates the role "sweep" (password generated once) and the
# database "sweep", and prints the URL (the only thing on stdout; also written to
# $SWEEP_PG_DIR/url). Use it as
#     export SWEEP_TEST_POSTGRES_URL=$(.ci/postgres.sh)
set -euo pipefail

PG_DIR=${SWEEP_PG_DIR:-/var/tmp/sweep-pg}
PG_PORT=${SWEEP_PG_PORT:-55432}

bash "$(dirname "$0")/../scripts/install-debian.sh" postgresql
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
as_pg() { runuser -u postgres -- "$@"; }

mkdir -p "$PG_DIR"
chown postgres:postgres "$PG_DIR"
chmod 700 "$PG_DIR"
if [ ! -s "$PG_DIR/password" ]; then
    head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$PG_DIR/password"
fi
PASSWORD=$(cat "$PG_DIR/password")

if [ ! -f "$PG_DIR/data/PG_VERSION" ]; then
    as_pg "$BIN/initdb" -D "$PG_DIR/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 -E UTF8 >/dev/null
    # Tests with several worker processes and per-test databases need more than the default 100.
    cat >> "$PG_DIR/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_DIR'
max_connections = 200
fsync = off
synchronous_commit = off
CONF
fi
if ! as_pg "$BIN/pg_ctl" -D "$PG_DIR/data" status >/dev/null 2>&1; then
    as_pg "$BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 start >/dev/null
fi

psql_pg() { as_pg "$BIN/psql" -h "$PG_DIR" -p "$PG_PORT" -U postgres -d postgres -qtA -v ON_ERROR_STOP=1 "$@"; }
if [ "$(psql_pg -c "SELECT 1 FROM pg_roles WHERE rolname = 'sweep'")" != "1" ]; then
    # CREATEDB: the test fixture makes a fresh database per test.
    psql_pg -c "CREATE ROLE sweep LOGIN CREATEDB PASSWORD '$PASSWORD'"
else
    psql_pg -c "ALTER ROLE sweep LOGIN CREATEDB PASSWORD '$PASSWORD'"
fi
if [ "$(psql_pg -c "SELECT 1 FROM pg_database WHERE datname = 'sweep'")" != "1" ]; then
    psql_pg -c "CREATE DATABASE sweep OWNER sweep"
fi

URL="postgresql+psycopg://sweep:$PASSWORD@127.0.0.1:$PG_PORT/sweep"
echo "$URL" > "$PG_DIR/url"
chmod 600 "$PG_DIR/url"
echo "$URL"
