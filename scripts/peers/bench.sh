#!/usr/bin/env bash
# The peer benchmark (issue 17), run as `scripts/bench.sh peers`: candlepipe's consumer next to
# Spark Structured Streaming, Telegraf and the seed-style Python consumer, in one run, on one
# topic, each into a fresh InfluxDB 2, plus the ceiling and candlepipe's latency at a steady
# pace. It installs what is missing (scripts/lib/install.sh, scripts/peers/install.sh), builds
# the release binaries, generates the dataset with `datagen`, runs
# `pipeline_bench peers` (services/e2e/examples/pipeline_bench/peers.rs), and writes its
# section of BENCHMARKS.md between the `peers:begin`/`peers:end` markers (the rest of the file
# is scripts/bench.sh's, which keeps this section when it rewrites the file).
#
#   scripts/bench.sh peers      about 10 minutes once installed and built (Spark's JVM
#                               start and Telegraf's 1,000-message acknowledgements dominate)
#
# Settings (environment variables):
#   BENCH_SYMBOLS=40 BENCH_MINUTES=5000   the dataset (>= 200k candles, >= 40 symbols)
#   BENCH_PACED_RATE=5000                 candles/s of candlepipe's latency run
#   BENCH_PEERS="spark telegraf python"   which peers run, in this order
#   BENCH_OUT=BENCHMARKS.md               the report the section goes into
#   BENCH_PEER_LOGS=<dir>                 keep the peers' logs there (default: a temp dir)
#   SPARK_SHUFFLE_PARTITIONS=2 SPARK_MAX_OFFSETS_PER_TRIGGER=10000   the Spark job's settings
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$(pwd)
# shellcheck source=scripts/lib/install.sh
source scripts/lib/install.sh
# shellcheck source=scripts/peers/install.sh
source scripts/peers/install.sh

BENCH_SYMBOLS=${BENCH_SYMBOLS:-40}
BENCH_MINUTES=${BENCH_MINUTES:-5000}
BENCH_PACED_RATE=${BENCH_PACED_RATE:-5000}
BENCH_PEERS=${BENCH_PEERS:-spark telegraf python}
BENCH_OUT=${BENCH_OUT:-$REPO/BENCHMARKS.md}
export SPARK_SHUFFLE_PARTITIONS=${SPARK_SHUFFLE_PARTITIONS:-2}
export SPARK_MAX_OFFSETS_PER_TRIGGER=${SPARK_MAX_OFFSETS_PER_TRIGGER:-10000}

ensure_debian_packages
ensure_kafka
ensure_influxdb2
ensure_peers
# shellcheck source=scripts/lib/bench_setup.sh
source scripts/lib/bench_setup.sh
bench_setup candlepipe-peers

log "cargo build --release (binaries, the benchmark example)"
bench_build

START=$SECONDS
START_LOAD=$(loadavg)
log "dataset: $BENCH_SYMBOLS x $BENCH_MINUTES min"
"$BIN_DIR/datagen" --out "$WORK/main" --pairs "" --synthetic "$BENCH_SYMBOLS" \
  --duration "${BENCH_MINUTES}m" --gap-rate 0 | tail -1

export SPARK_KAFKA_JARS
SPARK_KAFKA_JARS="$(spark_dir)/jars"
spark_version="pyspark $CANDLEPIPE_PYSPARK_VERSION (Scala $CANDLEPIPE_SPARK_SCALA), spark-sql-kafka-0-10 $CANDLEPIPE_PYSPARK_VERSION, $(java -version 2>&1 | head -1 | sed 's/"//g')"
python_version="Python $(python3 -c 'import platform; print(platform.python_version())'), confluent-kafka $CANDLEPIPE_CONFLUENT_KAFKA_VERSION, pandas $CANDLEPIPE_PANDAS_VERSION, requests $CANDLEPIPE_REQUESTS_VERSION"
PEER_ARGS=()
for peer in $BENCH_PEERS; do
  case $peer in
    spark) PEER_ARGS+=(--peer "Spark Structured Streaming|$spark_version|1m candles and 5m/15m/1h rollups with vwap and the optional sums, in one stateful aggregation (watermark 2 h on the window start, update mode, \`local[*]\`, $SPARK_SHUFFLE_PARTITIONS shuffle partitions, \`maxOffsetsPerTrigger\` $SPARK_MAX_OFFSETS_PER_TRIGGER), line protocol built in Spark SQL and POSTed from \`foreachBatch\` (scripts/peers/spark_job.py). No indicators, no validation or dead letters, a re-sent minute is summed twice|$(spark_dir)/venv/bin/python $REPO/scripts/peers/spark_job.py") ;;
    telegraf) PEER_ARGS+=(--peer "Telegraf|Telegraf $CANDLEPIPE_TELEGRAF_VERSION (custom build: inputs.kafka_consumer, parsers.json_v2, outputs.influxdb_v2)|the 1m candles passed through, nothing else: no rollups (Telegraf has no OHLC aggregator), no vwap, no indicators, no validation (scripts/peers/telegraf.conf: batches of 5,000, 1 s flush, 10,000 messages in flight, gzip, the output's default)|$(telegraf_bin) --config $REPO/scripts/peers/telegraf.conf") ;;
    python) PEER_ARGS+=(--peer "Python (seed-style)|$python_version|1m candles and 5m/15m/1h OHLCV rollups with pandas per batch of 10,000 (scripts/peers/python_consumer.py). No vwap, no optional sums in the rollups, no indicators, no validation|$(python_peer_dir)/venv/bin/python $REPO/scripts/peers/python_consumer.py") ;;
    *) log "unknown peer '$peer' in BENCH_PEERS (spark, telegraf, python)"; exit 2 ;;
  esac
done

log "peer benchmark"
cp_version="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print([p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="consumer"][0])') ($(git rev-parse --short HEAD))"
"$BIN_DIR/examples/pipeline_bench" peers --dataset "$WORK/main" --report "$WORK/peers.md" \
  --bin-dir "$BIN_DIR" --paced-rate "$BENCH_PACED_RATE" --candlepipe-version "$cp_version" \
  ${BENCH_PEER_LOGS:+--logs "$BENCH_PEER_LOGS"} "${PEER_ARGS[@]}"

install_time() {
  local f=$1/.install-seconds
  if [ -f "$f" ]; then
    read -r secs l1 l5 l15 <"$f"
    echo "$secs s (load average when it finished: ${l1:-?} ${l5:-?} ${l15:-?})"
  else
    echo "not recorded"
  fi
}

SECTION="$WORK/section.md"
{
  echo "<!-- peers:begin (written by scripts/bench.sh peers; rerun it to refresh, do not edit by hand) -->"
  cat <<EOF
## Peers side by side (\`scripts/bench.sh peers\`, issue 17)

Written by \`scripts/bench.sh peers\` on $(date -u '+%Y-%m-%d %H:%M UTC') in $((SECONDS - START)) s
(dataset, the runs; not the installs or the build). Load average at the start: $START_LOAD, on
the shared $(nproc)-core machine described above; read a number taken at a load above ~1 as a
lower bound. The servers share the same cores with the peer being measured.

**Versions and installs.** Each peer is installed by \`scripts/peers/install.sh\` into
\`\$CANDLEPIPE_CACHE/<name>-<version>\`, cold (its own Maven, Go and pip caches). Cold install
time on this machine:

| peer | installed from | cold install |
| --- | --- | --- |
| Spark Structured Streaming | pyspark $CANDLEPIPE_PYSPARK_VERSION from PyPI into a venv; spark-sql-kafka-0-10_$CANDLEPIPE_SPARK_SCALA $CANDLEPIPE_PYSPARK_VERSION and its dependencies from Maven Central (scripts/peers/spark/pom.xml) | $(install_time "$(spark_dir)") |
| Telegraf | github.com/influxdata/telegraf v$CANDLEPIPE_TELEGRAF_VERSION from the Go module proxy, \`go build -tags custom,inputs.kafka_consumer,parsers.json_v2,outputs.influxdb_v2\` ($(go version | cut -d' ' -f3)) | $(install_time "$(dirname "$(telegraf_bin)")") |
| Python (seed-style) | confluent-kafka $CANDLEPIPE_CONFLUENT_KAFKA_VERSION, pandas $CANDLEPIPE_PANDAS_VERSION, requests $CANDLEPIPE_REQUESTS_VERSION from PyPI into a venv | $(install_time "$(python_peer_dir)") |

**Method.** Dataset: \`datagen\`, $BENCH_SYMBOLS symbols × $BENCH_MINUTES minutes, no gaps. candlepipe's
consumer runs with its defaults (only where to read and write is given): 10,000-message
micro-batches, 5,000-point write requests two at a time, bodies not gzipped (\`--influx-gzip\`
is off by default since this benchmark measured it: see the README's consumer flags). The
peers' settings are in their files under \`scripts/peers/\` and in the table below.

EOF
  cat "$WORK/peers.md"
  echo
  echo "<!-- peers:end -->"
} >"$SECTION"

# Replace the old section, or append one.
if [ -f "$BENCH_OUT" ] && grep -q '^<!-- peers:begin' "$BENCH_OUT"; then
  sed -i '/^<!-- peers:begin/,/^<!-- peers:end -->/d' "$BENCH_OUT"
fi
{
  if [ -f "$BENCH_OUT" ]; then sed -e :a -e '/^\n*$/{$d;N;ba' -e '}' "$BENCH_OUT"; echo; fi
  cat "$SECTION"
} >"$WORK/out.md"
mv "$WORK/out.md" "$BENCH_OUT"
log "wrote the peer section of $BENCH_OUT ($((SECONDS - START)) s after the build)"
