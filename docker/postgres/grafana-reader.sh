#!/usr/bin/env bash
# Creates or updates `grafana_reader`, the database login of Grafana's PostgreSQL data source
# (dashboards/provisioning/datasources/steerbench.yaml), with the password in
# STEER_GRAFANA_DB_PASSWORD. The role reads every table (pg_read_all_data: API tokens appear
# only as hashes) and owns nothing; its sessions are read-only by default. Safe to run again.
#
# Run by compose's `grafana-db-role` service; connects with libpq's PGHOST, PGUSER (a
# superuser, which GRANT pg_read_all_data needs), PGPASSWORD and PGDATABASE.
set -euo pipefail

: "${STEER_GRAFANA_DB_PASSWORD:?is not set}"
# Quiet about what is already so (e.g. the role already a member of pg_read_all_data).
export PGOPTIONS="-c client_min_messages=warning"
# The password goes to psql as a variable, which psql quotes as a literal (:'password').
psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet -v password="$STEER_GRAFANA_DB_PASSWORD" <<'SQL'
SELECT 'CREATE ROLE grafana_reader LOGIN'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'grafana_reader') \gexec
ALTER ROLE grafana_reader WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'password';
GRANT pg_read_all_data TO grafana_reader;
ALTER ROLE grafana_reader SET default_transaction_read_only = on;
SQL
echo "grafana-reader: role grafana_reader is ready (read-only)" >&2
