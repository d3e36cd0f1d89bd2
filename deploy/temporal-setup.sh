#!/bin/sh
# Creates or upgrades Temporal's two PostgreSQL databases (run by the temporal-schema service, on the
# temporalio/admin-tools image). Safe to run on every `docker compose up`: an existing database is kept
# and update-schema only applies versions it has not applied yet.
set -eu
: "${POSTGRES_SEEDS:?}" "${POSTGRES_USER:?}"
SQL_PASSWORD="$(cat /run/secrets/postgres_password)"
export SQL_PASSWORD
port="${DB_PORT:-5432}"
schema=/etc/temporal/schema/postgresql/v12

nc -z -w 10 "$POSTGRES_SEEDS" "$port"
for db in temporal temporal_visibility; do
  dir=temporal
  [ "$db" = temporal_visibility ] && dir=visibility
  sql() { temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -u "$POSTGRES_USER" -p "$port" --db "$db" "$@"; }
  sql create || echo "database $db exists"
  sql setup-schema -v 0.0 || echo "schema version table of $db exists"
  sql update-schema -d "$schema/$dir/versioned"
done
echo "Temporal schema is up to date"
