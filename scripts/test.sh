#!/usr/bin/env bash
# The test command: installs what is missing (idempotently), then runs fmt, clippy
# -D warnings, the Prometheus and compose checks, and every test. Integration tests start
# their own Apache Kafka (KRaft), InfluxDB 2, InfluxDB 1.x, Prometheus and Alertmanager on
# free loopback ports and kill them on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/install.sh
source scripts/lib/install.sh

ensure_debian_packages
ensure_rust_components
ensure_kafka
ensure_influxdb2
export PATH="$HOME/.cargo/bin:$PATH"

# A one-off run gains nothing from incremental compilation, which only adds GBs of cache;
# a developer who reruns often can export CARGO_INCREMENTAL=1.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
ensure_free_disk "${CARGO_TARGET_DIR:-target}" "${CANDLEPIPE_MIN_FREE_GB:-4}"

# Servers' temp dirs go here, removed at the end whatever happens.
CANDLEPIPE_TEST_TMP=$(mktemp -d -t candlepipe-test-XXXXXX)
export TMPDIR="$CANDLEPIPE_TEST_TMP"
cleanup() { rm -rf "$CANDLEPIPE_TEST_TMP"; }
trap cleanup EXIT

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

if [ -d prometheus ]; then
  log "promtool check config / test rules"
  promtool check config prometheus/prometheus.yml
  if compgen -G "prometheus/tests/*.yml" >/dev/null; then
    promtool test rules prometheus/tests/*.yml
  fi
fi

if [ -f alertmanager/alertmanager.yml ]; then
  log "amtool check-config"
  amtool check-config alertmanager/alertmanager.yml
fi

if [ -f docker-compose.yml ]; then
  log "docker-compose config"
  docker-compose -f docker-compose.yml config -q
fi

log "cargo build (binaries the integration tests run)"
cargo build --workspace --bins --locked

log "cargo test"
cargo test --workspace --locked -- --test-threads "${TEST_THREADS:-2}"
