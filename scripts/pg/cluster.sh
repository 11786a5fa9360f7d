#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster from Debian's `postgresql` package, owned by the
# `postgres` user, listening on 127.0.0.1 (a free port) with its socket in the cluster's own temp
# directory, and prints its URL. Nothing is installed or configured system-wide.
#
#   url=$(bash scripts/pg/cluster.sh start /tmp/pg)   # prints postgres://postgres@127.0.0.1:PORT/postgres
#   bash scripts/pg/cluster.sh stop /tmp/pg            # stops it and removes /tmp/pg
#
# The tests use it through SOUNDCHECK_TEST_DATABASE (each test creates its own database in it).
#
# The cluster also accepts TLS, with a certificate for the name `localhost` (not for
# 127.0.0.1) signed by a throwaway CA at DIR/ca.pem (SOUNDCHECK_TEST_DATABASE_CA in the tests),
# so the suite's connections (sslmode=prefer by default) are encrypted, as a real fleet's are.
set -euo pipefail
action=${1:?usage: cluster.sh start|stop DIR}
dir=${2:?usage: cluster.sh start|stop DIR}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$bin" ] || { echo "PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }

as_postgres() {
  if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$1"; else sh -c "$1"; fi
}

case "$action" in
  start)
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_postgres "'$bin/initdb' -D '$dir/data' -U postgres --auth=trust -E UTF8 >/dev/null"
    # A CA and a server certificate for `localhost`, both throwaway (PostgreSQL wants its key
    # owned by the server's user and private).
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=soundcheck test CA" \
      -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
      -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
    printf 'subjectAltName=DNS:localhost\n' > "$dir/san.ext"
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
      -CAcreateserial -days 2 -extfile "$dir/san.ext" -out "$dir/server.crt" 2>/dev/null
    cp "$dir/server.crt" "$dir/server.key" "$dir/data/"
    chmod 600 "$dir/data/server.key"
    [ "$(id -u)" = 0 ] && chown postgres "$dir/data/server.crt" "$dir/data/server.key"
    as_postgres "'$bin/pg_ctl' -D '$dir/data' -l '$dir/log' -w \
      -o \"-p $port -k '$dir' -c listen_addresses=127.0.0.1 -c max_connections=300 -c ssl=on\" start >/dev/null"
    echo "postgres://postgres@127.0.0.1:$port/postgres"
    ;;
  stop)
    as_postgres "'$bin/pg_ctl' -D '$dir/data' -m fast -w stop >/dev/null"
    # The suite makes one database per server it starts (~8 MB each, ~1 GB a run): a stopped
    # cluster is never reused, so its directory goes with it.
    rm -rf "$dir"
    ;;
  *) echo "usage: cluster.sh start|stop DIR" >&2; exit 2 ;;
esac
