#!/bin/bash
# Runs once, when the clickhouse container starts on an empty data directory (the image's
# /docker-entrypoint-initdb.d hook). Creates a read-only user for Grafana: dashboards get SELECT
# on meshwatch's tables and nothing else (the datasource plugin runs whatever SQL a panel holds).
# readonly = 2: no writes or DDL, but the plugin may still set per-query settings (it does).
# The password comes from the environment (infra/.env), never from this file.
set -euo pipefail

if [[ -z "${GRAFANA_CLICKHOUSE_PASSWORD:-}" ]]; then
  echo "GRAFANA_CLICKHOUSE_PASSWORD is not set: skipping the grafana user" >&2
  exit 0
fi
# Quote the password for a SQL string literal (double any single quote and backslash).
pw=${GRAFANA_CLICKHOUSE_PASSWORD//\\/\\\\}
pw=${pw//\'/\'\'}
clickhouse client --user "${CLICKHOUSE_USER}" --password "${CLICKHOUSE_PASSWORD}" --multiquery <<SQL
CREATE USER IF NOT EXISTS grafana IDENTIFIED WITH sha256_password BY '${pw}'
    SETTINGS readonly = 2;
GRANT SELECT ON meshwatch.* TO grafana;
SQL
