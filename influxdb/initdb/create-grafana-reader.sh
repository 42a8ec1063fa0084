#!/bin/bash
# Grafana's read-only InfluxDB credential, created at InfluxDB's first start.
#
# The influxdb:2.7 image runs the executable *.sh files of /docker-entrypoint-initdb.d once,
# right after DOCKER_INFLUXDB_INIT_MODE=setup, with the influx CLI already logged in as the
# admin and DOCKER_INFLUXDB_INIT_BUCKET_ID / DOCKER_INFLUXDB_INIT_ORG in the environment
# (docker-compose.yml mounts this folder there). It creates a v1 authorization
# INFLUXDB_READ_USER / INFLUXDB_READ_PASSWORD whose only permission is reading bucket
# `crypto`: Grafana's InfluxDB datasource sends it as HTTP Basic credentials, so an anonymous
# Grafana visitor cannot DELETE or DROP anything (InfluxDB answers "insufficient
# permissions"). scripts/stack.sh creates the same credential natively through the HTTP API.
#
# An InfluxDB volume created before this script existed has no such credential; create it
# with `docker compose exec influxdb /docker-entrypoint-initdb.d/create-grafana-reader.sh`
# (the script then looks the bucket up itself). Running it again changes nothing.
set -euo pipefail

user=${INFLUXDB_READ_USER:?INFLUXDB_READ_USER is not set (docker-compose.yml passes it from .env)}
password=${INFLUXDB_READ_PASSWORD:?INFLUXDB_READ_PASSWORD is not set (docker-compose.yml passes it from .env)}
bucket=${DOCKER_INFLUXDB_INIT_BUCKET:-crypto}
org=${DOCKER_INFLUXDB_INIT_ORG:?DOCKER_INFLUXDB_INIT_ORG is not set}
bucket_id=${DOCKER_INFLUXDB_INIT_BUCKET_ID:-$(influx bucket list --org "$org" --name "$bucket" --hide-headers | cut -f 1)}
if [ -z "$bucket_id" ]; then
  echo "create-grafana-reader: no bucket $bucket in org $org" >&2
  exit 1
fi

if influx v1 auth list --org "$org" --username "$user" --hide-headers 2>/dev/null | grep -q .; then
  echo "create-grafana-reader: v1 authorization $user exists, left as it is"
  exit 0
fi
influx v1 auth create --org "$org" --username "$user" --password "$password" \
  --read-bucket "$bucket_id" --description "Grafana: read-only $bucket"
echo "create-grafana-reader: v1 authorization $user can read bucket $bucket ($bucket_id) and nothing else"
