#!/bin/sh
# Initialise PGDATA on the first start (user, password and database from POSTGRES_USER,
# POSTGRES_PASSWORD and POSTGRES_DB), then run PostgreSQL in the foreground on $PORT.
set -eu
: "${PGDATA:=/var/lib/postgresql/data/pgdata}"
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
: "${PORT:=5432}"
if [ -z "${POSTGRES_PASSWORD:-}" ]; then
  echo "testenv-postgres: POSTGRES_PASSWORD is empty; give it from a generated secret" >&2
  exit 2
fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  umask 077
  pwfile="$(mktemp)"
  printf '%s' "$POSTGRES_PASSWORD" >"$pwfile"
  initdb --pgdata="$PGDATA" --username="$POSTGRES_USER" --pwfile="$pwfile" \
    --auth=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 --no-instructions >/dev/null
  rm -f "$pwfile"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  if [ "$POSTGRES_DB" != "postgres" ]; then
    # The name is a quoted identifier: a double quote in it is doubled.
    db="$(printf '%s' "$POSTGRES_DB" | sed 's/"/""/g')"
    printf 'CREATE DATABASE "%s";\n' "$db" | postgres --single -D "$PGDATA" postgres >/dev/null
  fi
  echo "testenv-postgres: initialised $PGDATA (database $POSTGRES_DB, user $POSTGRES_USER)"
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' -c port="$PORT" \
  -c unix_socket_directories=/tmp -c fsync=off -c full_page_writes=off
