#!/usr/bin/env bash
# Starts a private PostgreSQL server for the test suite (as a non-root user, on a private port,
# data under $PGDATA_DIR) and prints the URL to use as FLOTILLA_TEST_PG_URL. Idempotent: if the
# server already runs it just prints the URL.
set -euo pipefail
PORT="${FLOTILLA_PG_PORT:-55432}"
DATA="${PGDATA_DIR:-/tmp/flotilla-pg-$PORT}"
BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)"
[ -n "$BIN" ] || { echo "postgresql server binaries not found (apt-get install postgresql)" >&2; exit 1; }
RUNAS=()
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --home /var/lib/postgresql postgres
  RUNAS=(runuser -u postgres --)
  mkdir -p "$DATA"; chown postgres "$DATA"
fi
if ! "${RUNAS[@]}" "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" 2>/dev/null; then
  if [ ! -s "$DATA/PG_VERSION" ]; then
    "${RUNAS[@]}" "$BIN/initdb" -D "$DATA" -U flotilla --auth=trust -E UTF8 >/dev/null
  fi
  "${RUNAS[@]}" "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w \
    -o "-p $PORT -k /tmp -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=off -c synchronous_commit=off" start >/dev/null
fi
echo "postgres://flotilla@127.0.0.1:$PORT/postgres"
