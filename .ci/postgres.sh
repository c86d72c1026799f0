#!/usr/bin/env bash
# Starts a throw-away PostgreSQL server for the PostgreSQL source test and prints the export
# line for FEDGATE_TEST_PG. Usage:  eval "$(bash .ci/postgres.sh start)"  ...  bash .ci/postgres.sh stop
# Installs Debian's postgresql package if no server binaries are present (needs root).
set -euo pipefail
PORT=${FEDGATE_PG_PORT:-55432}
STATE=/tmp/fedgate-ci-pg
case "${1:-start}" in
  start)
    if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
      apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    fi
    PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    if [ -f "$STATE/postmaster.pid" ]; then runuser -u postgres -- "$PGBIN/pg_ctl" -D "$STATE" -m fast stop >&2 || true; fi
    rm -rf "$STATE" && mkdir -p "$STATE" && chown postgres "$STATE" && chmod 700 "$STATE"
    runuser -u postgres -- "$PGBIN/initdb" -D "$STATE" -A trust -U fedgate >/dev/null
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$STATE" -l "$STATE/server.log" -w \
      -o "-p $PORT -k $STATE -c listen_addresses=127.0.0.1" start >&2
    echo "export FEDGATE_TEST_PG='host=127.0.0.1 port=$PORT user=fedgate dbname=postgres'"
    ;;
  stop)
    PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$STATE" -m fast stop >&2 || true
    ;;
esac
