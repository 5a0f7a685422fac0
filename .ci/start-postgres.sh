#!/usr/bin/env bash
# Start a throwaway PostgreSQL on loopback for the test suite and print its SQLAlchemy URL.
# initdb/pg_ctl refuse to run as root, so the cluster belongs to an unprivileged user.
# Usage: eval "$(bash .ci/start-postgres.sh)"  -> sets MEDISENTINEL_TEST_DATABASE_URL, PG_STOP
set -euo pipefail

# Below the kernel's ephemeral range (32768-60999 here): a client socket left by an earlier
# step cannot be sitting on it. Another cluster (a developer's) may hold it: take the next free.
PG_PORT="${PG_PORT:-25432}"
next_free_port() {
  while (exec 3<>"/dev/tcp/127.0.0.1/$PG_PORT") 2>/dev/null; do PG_PORT=$((PG_PORT + 1)); done
}
PG_USER_OS="${PG_USER_OS:-medisentinel-ci}"

find_bindir() {
  local dir
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$dir/initdb" ]; then echo "$dir"; return 0; fi
  done
  return 1
}

if ! BINDIR="$(find_bindir)"; then
  echo "installing PostgreSQL from Debian packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
  BINDIR="$(find_bindir)"
fi

if [ "$(id -u)" = "0" ]; then
  id "$PG_USER_OS" >/dev/null 2>&1 || useradd --system --no-create-home --shell /bin/bash "$PG_USER_OS"
  AS_PG=(runuser -u "$PG_USER_OS" --)
else
  AS_PG=()
fi

DATA_DIR="$(mktemp -d /tmp/medisentinel-pg.XXXXXX)"
SOCKET_DIR="$DATA_DIR/socket"
mkdir -p "$SOCKET_DIR"
[ "$(id -u)" = "0" ] && chown -R "$PG_USER_OS" "$DATA_DIR"

"${AS_PG[@]}" "$BINDIR/initdb" -D "$DATA_DIR/data" -U postgres --auth=trust -E UTF8 >&2

# A start that fails (a port taken between the probe and the bind, say) prints the server's
# log and tries the next port, so CI says why instead of going on without a database.
started=""
for attempt in 1 2 3 4 5; do
  next_free_port
  if "${AS_PG[@]}" "$BINDIR/pg_ctl" -D "$DATA_DIR/data" -l "$DATA_DIR/log" -w -t 120 \
    -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $SOCKET_DIR -c max_connections=200 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    start >&2; then
    started=yes
    break
  fi
  echo "PostgreSQL did not start on port $PG_PORT (attempt $attempt); its log:" >&2
  tail -n 30 "$DATA_DIR/log" >&2 || true
  PG_PORT=$((PG_PORT + 1))
done
if [ -z "$started" ]; then
  echo "PostgreSQL would not start; giving up" >&2
  exit 1
fi
"$BINDIR/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -q -c "CREATE DATABASE medisentinel_test" >&2

echo "export MEDISENTINEL_TEST_DATABASE_URL='postgresql+psycopg://postgres@127.0.0.1:$PG_PORT/medisentinel_test'"
echo "export PG_STOP='${AS_PG[*]} $BINDIR/pg_ctl -D $DATA_DIR/data -m fast stop'"
