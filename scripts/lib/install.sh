# shellcheck shell=bash
# What candlepipe needs on a machine, installed only when missing. Sourced by
# scripts/test.sh and scripts/stack.sh so both install exactly the same things.

# Debian packages: InfluxDB 1.x (the v1 write API's tests), Prometheus, Alertmanager (with
# amtool), the compose validator, Maven (fetches Kafka), and the C toolchain bits the Rust
# crates build against.
CANDLEPIPE_DEB_PACKAGES=(influxdb prometheus prometheus-alertmanager docker-compose maven pkg-config libssl-dev cmake protobuf-compiler)
# The real servers compose runs, fetched or built once into a cache outside the repo, keyed
# by version (CANDLEPIPE_KAFKA_VERSION, CANDLEPIPE_INFLUXDB2_VERSION, CANDLEPIPE_FLUX_RUST).
# shellcheck source=scripts/lib/versions.env
source "$(dirname "${BASH_SOURCE[0]}")/versions.env"
CANDLEPIPE_CACHE="${CANDLEPIPE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/candlepipe}"
export CANDLEPIPE_CACHE

log() {
  if [ -t 2 ]; then printf '\033[1m==> %s\033[0m\n' "$*" >&2; else printf '==> %s\n' "$*" >&2; fi
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

ensure_debian_packages() {
  local missing=()
  for p in "${CANDLEPIPE_DEB_PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    log "Debian packages present (${CANDLEPIPE_DEB_PACKAGES[*]})"
    return
  fi
  log "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# Apache Kafka's jars from Maven Central (scripts/lib/kafka/pom.xml) into
# $CANDLEPIPE_CACHE/kafka-<version>/libs. Java 17 runs them; nothing is compiled.
kafka_libs() { echo "$CANDLEPIPE_CACHE/kafka-$CANDLEPIPE_KAFKA_VERSION/libs"; }

ensure_kafka() {
  local libs here
  libs=$(kafka_libs)
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  if [ -f "$libs/.complete" ]; then
    log "Apache Kafka $CANDLEPIPE_KAFKA_VERSION present ($libs)"
    return
  fi
  command -v java >/dev/null || { log "Java 17+ is needed to run Kafka: apt-get install openjdk-17-jre-headless"; return 1; }
  log "fetching Apache Kafka $CANDLEPIPE_KAFKA_VERSION from Maven Central into $libs"
  rm -rf "$libs" && mkdir -p "$libs"
  mvn -q -B -Dstyle.color=never -f "$here/kafka/pom.xml" dependency:copy-dependencies \
    -Dkafka.version="$CANDLEPIPE_KAFKA_VERSION" -DincludeScope=runtime -DoutputDirectory="$libs"
  ls "$libs"/kafka_2.13-"$CANDLEPIPE_KAFKA_VERSION".jar >/dev/null
  touch "$libs/.complete"
}

# InfluxDB 2 (influxd) built from the Go module proxy into
# $CANDLEPIPE_CACHE/influxdb-<version>/influxd, as its own Makefile builds it (without the
# UI assets). Flux's libflux is compiled by cargo through github.com/influxdata/pkg-config,
# with the Rust toolchain Flux pins. About 10 minutes on 2 cores, once.
influxd2_bin() { echo "$CANDLEPIPE_CACHE/influxdb-$CANDLEPIPE_INFLUXDB2_VERSION/influxd"; }

ensure_influxdb2() {
  local bin dir gopath src
  bin=$(influxd2_bin)
  if [ -x "$bin" ] && "$bin" version 2>/dev/null | grep -q "InfluxDB v\?$CANDLEPIPE_INFLUXDB2_VERSION"; then
    log "InfluxDB $CANDLEPIPE_INFLUXDB2_VERSION present ($bin)"
    return
  fi
  command -v go >/dev/null || { log "Go is needed to build InfluxDB 2 (https://go.dev/doc/install)"; return 1; }
  dir=$(dirname "$bin")
  gopath="$CANDLEPIPE_CACHE/go"
  src="$dir/src"
  log "building InfluxDB $CANDLEPIPE_INFLUXDB2_VERSION from the Go module proxy into $dir (first time only: about 10 minutes)"
  rustup toolchain list | grep -q "^$CANDLEPIPE_FLUX_RUST" ||
    rustup toolchain install "$CANDLEPIPE_FLUX_RUST" --profile minimal
  mkdir -p "$dir"
  (
    export GOPATH="$gopath" GOFLAGS=-modcacherw GO111MODULE=on GOTOOLCHAIN=local
    local mod
    mod=$(cd "$dir" && go mod download -json "github.com/influxdata/influxdb/v2@v$CANDLEPIPE_INFLUXDB2_VERSION" |
      sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    [ -d "$mod" ] || { echo "go mod download found no source for influxdb v$CANDLEPIPE_INFLUXDB2_VERSION" >&2; exit 1; }
    # Its go.mod has a replace directive, so `go install pkg@version` refuses it: build in a copy.
    rm -rf "$src" && cp -r "$mod" "$src" && chmod -R u+w "$src"
    cd "$src"
    go build -o "$dir/pkg-config" github.com/influxdata/pkg-config
    PKG_CONFIG="$dir/pkg-config" go build -tags sqlite_foreign_keys,sqlite_json \
      -ldflags "-X main.version=v$CANDLEPIPE_INFLUXDB2_VERSION -X main.commit=release" \
      -o "$bin.partial" ./cmd/influxd
  )
  mv "$bin.partial" "$bin"
  rm -rf "$src"
  "$bin" version
}

ensure_rust_components() {
  cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
  cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
}

# Fails early, naming the directory and the sizes, when the disk holding DIR has less than
# MIN_GB free: a build that runs out of space halfway dies with a linker "Bus error" that
# names neither. A fresh clone's build and tests peaked at 2.4 GB of target/ (2026-11-22).
ensure_free_disk() {
  local dir=$1 min_gb=$2 probe avail_kb
  probe=$dir
  while [ ! -d "$probe" ]; do probe=$(dirname "$probe"); done
  avail_kb=$(df -Pk "$probe" | awk 'NR == 2 { print $4 }')
  if [ "$avail_kb" -lt $((min_gb * 1024 * 1024)) ]; then
    log "only $((avail_kb / 1024 / 1024)) GB free under $probe; the build and tests need about $min_gb GB (free some space, or set CANDLEPIPE_MIN_FREE_GB to override)"
    return 1
  fi
  log "disk: $((avail_kb / 1024 / 1024)) GB free under $probe"
}
