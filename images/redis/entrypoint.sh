#!/bin/sh
# Run redis-server in the foreground on $PORT, with REDIS_PASSWORD as its password.
set -eu
: "${PORT:=6379}"
if [ -z "${REDIS_PASSWORD:-}" ]; then
  echo "testenv-redis: REDIS_PASSWORD is empty; give it from a generated secret" >&2
  exit 2
fi
# The password goes through a config read from stdin, not argv (visible in ps).
printf 'requirepass "%s"\n' "$(printf '%s' "$REDIS_PASSWORD" | sed 's/["\\]/\\&/g')" |
  exec redis-server - --port "$PORT" --bind 0.0.0.0 --protected-mode no --dir /tmp \
    --save '' --appendonly no --logfile ''
