# shellcheck shell=bash
# The peers of the peer benchmark (scripts/bench.sh peers), installed only when missing, each
# into its own folder of the cache outside the repo, keyed by version:
#
#   $CANDLEPIPE_CACHE/spark-<pyspark>/        venv/ (pyspark from PyPI), jars/ (the Kafka
#                                             connector and its dependencies, Maven Central)
#   $CANDLEPIPE_CACHE/telegraf-<version>/     telegraf, a custom build from the Go module
#                                             proxy with only kafka_consumer, json_v2 and
#                                             influxdb_v2
#   $CANDLEPIPE_CACHE/python-peer-<versions>/ venv/ (confluent-kafka, pandas, requests)
#
# Each install runs cold (its own Maven, Go and pip caches, removed afterwards), so a fresh
# machine and a rerun after `rm -rf` the folder do the same thing. The seconds a cold install
# took, and the load average then, are kept in the folder's `.install-seconds` ("SECONDS
# LOAD1 LOAD5 LOAD15") and the benchmark reports them.
# Sourced after scripts/lib/install.sh (log, CANDLEPIPE_CACHE).

# shellcheck source=scripts/peers/versions.env
source "$(dirname "${BASH_SOURCE[0]}")/versions.env"
CANDLEPIPE_PEERS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

spark_dir() { echo "$CANDLEPIPE_CACHE/spark-$CANDLEPIPE_PYSPARK_VERSION"; }
telegraf_bin() { echo "$CANDLEPIPE_CACHE/telegraf-$CANDLEPIPE_TELEGRAF_VERSION/telegraf"; }
python_peer_dir() {
  echo "$CANDLEPIPE_CACHE/python-peer-ck$CANDLEPIPE_CONFLUENT_KAFKA_VERSION-pd$CANDLEPIPE_PANDAS_VERSION-rq$CANDLEPIPE_REQUESTS_VERSION"
}

# A venv at $1 with the pinned packages $2..; Python 3.9-3.11 (pyspark 3.5's range).
make_venv() {
  local venv=$1
  shift
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --no-cache-dir --disable-pip-version-check "$@"
}

# pyspark from PyPI in a venv, and spark-sql-kafka-0-10 with its dependencies from Maven
# Central (scripts/peers/spark/pom.xml) into jars/. Spark runs on the machine's Java 17.
ensure_spark() {
  local dir started
  dir=$(spark_dir)
  if [ -f "$dir/.complete" ]; then
    log "Spark $CANDLEPIPE_PYSPARK_VERSION present ($dir)"
    return
  fi
  command -v java >/dev/null || { log "Java 17 is needed to run Spark: apt-get install openjdk-17-jre-headless"; return 1; }
  command -v mvn >/dev/null || { log "Maven is needed to fetch Spark's Kafka connector: apt-get install maven"; return 1; }
  log "installing pyspark $CANDLEPIPE_PYSPARK_VERSION (PyPI) and spark-sql-kafka-0-10 (Maven Central) into $dir"
  started=$SECONDS
  rm -rf "$dir" && mkdir -p "$dir/jars"
  make_venv "$dir/venv" "pyspark==$CANDLEPIPE_PYSPARK_VERSION"
  mvn -q -B -Dstyle.color=never -f "$CANDLEPIPE_PEERS_DIR/spark/pom.xml" dependency:copy-dependencies \
    -Dspark.version="$CANDLEPIPE_PYSPARK_VERSION" -Dscala.binary="$CANDLEPIPE_SPARK_SCALA" \
    -DincludeScope=runtime -DoutputDirectory="$dir/jars" -Dmaven.repo.local="$dir/m2"
  rm -rf "$dir/m2"
  ls "$dir/jars/spark-sql-kafka-0-10_${CANDLEPIPE_SPARK_SCALA}-${CANDLEPIPE_PYSPARK_VERSION}.jar" >/dev/null
  "$dir/venv/bin/python" -c 'import pyspark; print("pyspark", pyspark.__version__)'
  echo "$((SECONDS - started)) $(cut -d' ' -f1-3 /proc/loadavg)" >"$dir/.install-seconds"
  touch "$dir/.complete"
  log "Spark installed in $((SECONDS - started)) s"
}

# Telegraf built from the Go module proxy with only the plugins the benchmark uses: its
# `custom` build tag leaves every plugin out unless named (plugins/*/all/*.go).
ensure_telegraf() {
  local bin dir build started
  bin=$(telegraf_bin)
  if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "Telegraf $CANDLEPIPE_TELEGRAF_VERSION"; then
    log "Telegraf $CANDLEPIPE_TELEGRAF_VERSION present ($bin)"
    return
  fi
  command -v go >/dev/null || { log "Go is needed to build Telegraf (https://go.dev/doc/install)"; return 1; }
  dir=$(dirname "$bin")
  build="$dir/build"
  log "building Telegraf $CANDLEPIPE_TELEGRAF_VERSION (kafka_consumer, json_v2, influxdb_v2) from the Go module proxy into $dir"
  started=$SECONDS
  rm -rf "$dir" && mkdir -p "$build"
  (
    export GOPATH="$build/gopath" GOCACHE="$build/gocache" GOFLAGS=-modcacherw GO111MODULE=on GOTOOLCHAIN=local
    local mod
    mod=$(cd "$build" && go mod download -json "github.com/influxdata/telegraf@v$CANDLEPIPE_TELEGRAF_VERSION" |
      sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    [ -d "$mod" ] || { echo "go mod download found no source for telegraf v$CANDLEPIPE_TELEGRAF_VERSION" >&2; exit 1; }
    # Built in a copy, as its go.mod's replace directives make `go install pkg@version` refuse.
    cp -r "$mod" "$build/src" && chmod -R u+w "$build/src"
    cd "$build/src" || exit 1
    go build -tags "custom,inputs.kafka_consumer,parsers.json_v2,outputs.influxdb_v2" \
      -ldflags "-s -w -X github.com/influxdata/telegraf/internal.Version=$CANDLEPIPE_TELEGRAF_VERSION" \
      -o "$bin.partial" ./cmd/telegraf
  )
  mv "$bin.partial" "$bin"
  rm -rf "$build"
  "$bin" --version
  echo "$((SECONDS - started)) $(cut -d' ' -f1-3 /proc/loadavg)" >"$dir/.install-seconds"
  log "Telegraf built in $((SECONDS - started)) s"
}

# The seed-style Python consumer's packages in a venv.
ensure_python_peer() {
  local dir started
  dir=$(python_peer_dir)
  if [ -f "$dir/.complete" ]; then
    log "Python peer packages present ($dir)"
    return
  fi
  log "installing confluent-kafka $CANDLEPIPE_CONFLUENT_KAFKA_VERSION, pandas $CANDLEPIPE_PANDAS_VERSION and requests into $dir"
  started=$SECONDS
  rm -rf "$dir" && mkdir -p "$dir"
  make_venv "$dir/venv" "confluent-kafka==$CANDLEPIPE_CONFLUENT_KAFKA_VERSION" \
    "pandas==$CANDLEPIPE_PANDAS_VERSION" "requests==$CANDLEPIPE_REQUESTS_VERSION"
  "$dir/venv/bin/python" -c 'import confluent_kafka, pandas, requests'
  echo "$((SECONDS - started)) $(cut -d' ' -f1-3 /proc/loadavg)" >"$dir/.install-seconds"
  touch "$dir/.complete"
}

ensure_peers() {
  ensure_spark
  ensure_telegraf
  ensure_python_peer
}
