#!/usr/bin/env bash
# The benchmark command (issue 7): builds the release binaries, generates the datasets with
# `datagen`, runs the criterion benches and the end-to-end benchmark
# (services/e2e/examples/pipeline_bench/: the release producer and consumer against the real
# servers compose runs, Apache Kafka in KRaft mode and InfluxDB 2 through its v2 API, at the
# versions scripts/lib/versions.env pins), and writes BENCHMARKS.md at the repo root: method,
# machine, numbers, and the numbers against the issue's targets.
#
#   scripts/bench.sh                 about 5-8 minutes on 2 idle cores, once the build is done
#   scripts/bench.sh peers           the peer benchmark instead (issue 17: Spark Structured
#                                    Streaming, Telegraf, a seed-style Python consumer):
#                                    scripts/peers/bench.sh, which writes its own section
#
# Settings (environment variables):
#   BENCH_CRITERION=1                run the criterion benches (0 skips them)
#   BENCH_SYMBOLS=40 BENCH_MINUTES=5000           main dataset (>= 200k candles)
#   BENCH_WIDE_SYMBOLS=1000 BENCH_WIDE_MINUTES=200  wide dataset (one file per symbol)
#   BENCH_PACED_RATE=5000            candles/s of the latency runs (the producer's --speed is
#                                    this x 60 / symbols: 7500 for 40 symbols)
#   BENCH_WIDE_PREFETCH_KIB=16384    the extra wide consumer run with librdkafka's prefetch
#                                    raised to this (default 1024; 0 skips it)
#   BENCH_KAGGLE_FILES=1000 BENCH_KAGGLE_ROWS=100000  Kaggle-layout dataset (one row group,
#                                    1 MiB dictionary pages, as pyarrow writes) for the replay
#                                    reader's peak RSS and rows/s without Kafka, the replay
#                                    cache's one-time conversion included (0 files skips it;
#                                    the default needs ~9 GB of temp disk and ~4 minutes)
#   BENCH_OUT=BENCHMARKS.md          where the report goes
#   SERVICE_LOG=info                 RUST_LOG of the producer and consumer under test
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = peers ]; then
  shift
  exec scripts/peers/bench.sh "$@"
fi
REPO=$(pwd)
# shellcheck source=scripts/lib/install.sh
source scripts/lib/install.sh

BENCH_CRITERION=${BENCH_CRITERION:-1}
BENCH_SYMBOLS=${BENCH_SYMBOLS:-40}
BENCH_MINUTES=${BENCH_MINUTES:-5000}
BENCH_WIDE_SYMBOLS=${BENCH_WIDE_SYMBOLS:-1000}
BENCH_WIDE_MINUTES=${BENCH_WIDE_MINUTES:-200}
BENCH_PACED_RATE=${BENCH_PACED_RATE:-5000}
BENCH_WIDE_PREFETCH_KIB=${BENCH_WIDE_PREFETCH_KIB:-16384}
BENCH_KAGGLE_FILES=${BENCH_KAGGLE_FILES:-1000}
BENCH_KAGGLE_ROWS=${BENCH_KAGGLE_ROWS:-100000}
BENCH_OUT=${BENCH_OUT:-$REPO/BENCHMARKS.md}

ensure_debian_packages
ensure_kafka
ensure_influxdb2
# shellcheck source=scripts/lib/bench_setup.sh
source scripts/lib/bench_setup.sh
bench_setup candlepipe-bench

log "cargo build --release (binaries, the benchmark example, the criterion benches)"
bench_build
cargo build --release -p producer --example replay_rss --locked
if [ "$BENCH_CRITERION" = 1 ]; then
  # One package per command, exactly as they run below: building both in one command would
  # unify their dev-dependencies' features and compile everything a second time.
  cargo bench -p consumer --bench hot_path --no-run --locked
  cargo bench -p producer --bench replay_reader --no-run --locked
fi

START=$SECONDS
log "datasets: $BENCH_SYMBOLS x $BENCH_MINUTES min and $BENCH_WIDE_SYMBOLS x $BENCH_WIDE_MINUTES min"
"$BIN_DIR/datagen" --out "$WORK/main" --pairs "" --synthetic "$BENCH_SYMBOLS" \
  --duration "${BENCH_MINUTES}m" --gap-rate 0 | tail -1
"$BIN_DIR/datagen" --out "$WORK/wide" --pairs "" --synthetic "$BENCH_WIDE_SYMBOLS" \
  --duration "${BENCH_WIDE_MINUTES}m" --gap-rate 0 | tail -1

CRITERION_ARGS=()
if [ "$BENCH_CRITERION" = 1 ]; then
  # Stale results must not pass for this run's.
  rm -rf "$TARGET_DIR/criterion/consumer" "$TARGET_DIR/criterion/replay"
  log "criterion: consumer hot path"
  load=$(loadavg)
  cargo bench -p consumer --bench hot_path --locked 2>&1 | grep -E '^(consumer|replay)/|time:|thrpt:' || true
  for id in decode aggregate encode decode_aggregate_encode; do
    CRITERION_ARGS+=(--criterion-load "consumer/$id=$load")
  done
  log "criterion: replay reader"
  load=$(loadavg)
  cargo bench -p producer --bench replay_reader --locked 2>&1 | grep -E '^(consumer|replay)/|time:|thrpt:' || true
  CRITERION_ARGS+=(--criterion-load "replay/read_merge_validate=$load")
  CRITERION_ARGS+=(--criterion-dir "$TARGET_DIR/criterion")
fi

log "end-to-end benchmark"
E2E_START=$SECONDS
"$BIN_DIR/examples/pipeline_bench" \
  --dataset "$WORK/main" --wide-dataset "$WORK/wide" --report "$WORK/report.md" \
  --bin-dir "$BIN_DIR" --paced-rate "$BENCH_PACED_RATE" \
  --wide-prefetch-kib "$BENCH_WIDE_PREFETCH_KIB" "${CRITERION_ARGS[@]}"
E2E_SECS=$((SECONDS - E2E_START))

# The replay reader on the Kaggle layout (services/producer/examples/replay_rss.rs): the
# first run makes the replay cache's small-page copies, the second reuses them.
if [ "$BENCH_KAGGLE_FILES" -gt 0 ]; then
  log "Kaggle layout: $BENCH_KAGGLE_FILES files x $BENCH_KAGGLE_ROWS rows, one row group, 1 MiB pages"
  "$BIN_DIR/datagen" --out "$WORK/kaggle" --pairs "" --synthetic "$BENCH_KAGGLE_FILES" \
    --duration "${BENCH_KAGGLE_ROWS}m" --gap-rate 0 | tail -1
  kaggle_mib=$(($(du -sb "$WORK/kaggle" | cut -f1) / 1048576))
  kaggle_load=$(loadavg)
  kaggle_first=$("$BIN_DIR/examples/replay_rss" --dataset "$WORK/kaggle" | grep '^REPLAY ')
  kaggle_second=$("$BIN_DIR/examples/replay_rss" --dataset "$WORK/kaggle" | grep '^REPLAY ')
  cache_bytes=$(du -sb "$WORK/kaggle/.candlepipe-cache" 2>/dev/null | cut -f1)
  cache_mib=$((${cache_bytes:-0} / 1048576))
  field() { tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p"; }
  cat >"$WORK/kaggle.md" <<EOF

## Replay reader on the Kaggle layout

$BENCH_KAGGLE_FILES files × $BENCH_KAGGLE_ROWS rows ($kaggle_mib MiB), written by \`datagen\` as pyarrow
writes the Kaggle files: one row group, dictionary encoding, 1 MiB pages. The release
\`replay_rss\` example replays them in one merge at max speed without Kafka, as
\`producer --speed max --no-loop --no-rebase\` does; peak RSS is the process's VmHWM. Load
average before: $kaggle_load.

| run | one-time conversion | replay rows/s | peak RSS |
| --- | --- | --- | --- |
| first start (makes the replay cache, $cache_mib MiB) | $(field "$kaggle_first" open_s) s for $(field "$kaggle_first" cache_converted) files | $(field "$kaggle_first" rows_per_s) | $(field "$kaggle_first" peak_rss_mib) MiB |
| later starts (reuse it) | – ($(field "$kaggle_second" cache_reused) copies reused) | $(field "$kaggle_second" rows_per_s) | $(field "$kaggle_second" peak_rss_mib) MiB |
EOF
fi

# The peer benchmark's section (scripts/bench.sh peers) is kept as it is: it has its own run.
PEERS_SECTION="$WORK/peers-section.md"
if [ -f "$BENCH_OUT" ]; then
  sed -n '/^<!-- peers:begin/,/^<!-- peers:end -->/p' "$BENCH_OUT" >"$PEERS_SECTION"
fi
cpu_model=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
mem_line=$(free -h | awk '/^Mem:/ {print $2 " total, " $7 " available"}')
{
  cat <<EOF
# Benchmarks

Written by \`scripts/bench.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'); rerun it to refresh (do not edit by hand).
The run (datasets, criterion, end to end; not the build) took $((SECONDS - START)) s, the
end-to-end part $E2E_SECS s.

**These numbers come from a shared 2-core machine**: other engineers were compiling and testing
while they were taken. Each measurement lists the load average (1/5/15 min) before and after it
and how busy the machine's CPUs were during it; read a number with a load above ~1 as a lower
bound of what the code does on a quiet machine. The servers (Apache Kafka, InfluxDB 2) share
the same two cores with the process being measured.

## Machine

| | |
| --- | --- |
| CPU | $cpu_model |
| cores (\`nproc\`) | $(nproc) |
| memory (\`free -h\`) | $mem_line |
| kernel | $(uname -sr) |
| rustc | $(rustc --version) |
| Apache Kafka | $CANDLEPIPE_KAFKA_VERSION (KRaft, single node, jars from Maven Central) |
| Java (runs Kafka) | $(java -version 2>&1 | head -1) |
| InfluxDB 2 | $("$(influxd2_bin)" version 2>&1 | head -1 | sed 's/ build_date:.*//') |
| load average when the run started | $(loadavg) |

## Method

- **Build**: \`cargo build --release --workspace --bins\` (thin LTO, 4 codegen units) and the example
  \`services/e2e/examples/pipeline_bench/\` in release; the benchmark drives the release
  \`producer\` and \`consumer\` binaries as an operator would.
- **Datasets** (\`datagen\`, Kaggle binance-full-history schema, no gaps): main =
  $BENCH_SYMBOLS symbols × $BENCH_MINUTES minutes; wide = $BENCH_WIDE_SYMBOLS symbols ×
  $BENCH_WIDE_MINUTES minutes, one single-row-group file per symbol.
- **Criterion** (\`cargo bench -p consumer --bench hot_path\`, \`cargo bench -p producer --bench replay_reader\`):
  one core, in-process, no Kafka or HTTP; 10 samples each.
- **Servers**: the ones compose runs, started by the test harness (\`services/testkit\`) as
  child processes on loopback ports: one Apache Kafka $CANDLEPIPE_KAFKA_VERSION broker (KRaft, a
  single node acting as broker and controller, 256 MiB heap, its log on local disk), topics of
  6 partitions with one replica; a fresh InfluxDB $CANDLEPIPE_INFLUXDB2_VERSION for each consumer
  run and each bulk write, each writing into a new bucket through the v2 API (org + token).
- **Producer**: \`producer --mode replay --speed max --no-loop --no-rebase\`; wall time from spawn to
  exit 0 (every candle acknowledged); CPU and peak RSS from the kernel's rusage of the reaped child
  (\`wait4\`, what \`/usr/bin/time -v\` prints).
- **Consumer**: \`consumer --influx-api v2 --max-batch 10000 --trigger 1s\`, once with
  \`--influx-gzip true\` and once \`false\` (the default), on the full topic (the latency
  and wide runs use the default); its \`/metrics\` sampled every 25 ms;
  candles/s from the first point written to the last (\`candlepipe_influx_points_written_total\`,
  \`candlepipe_consumer_messages_total\`); CPU = utime+stime from \`/proc/<pid>/stat\`, peak RSS =
  \`VmHWM\`, both read just before SIGTERM; afterwards InfluxDB must hold one 1m point per candle.
- **Latency**: the consumer joins first, then the producer replays at \`--speed\` =
  $BENCH_PACED_RATE candles/s × 60 ÷ symbols (7500 for 40 symbols: 125 market minutes/s); p50/p99
  from the consumer's \`candlepipe_end_to_end_latency_seconds\` buckets, interpolated like PromQL's
  \`histogram_quantile\`.
- **Ceiling** (same run, same machine): (a) a librdkafka \`BaseConsumer\` that only counts the main
  topic's messages; (b) the same candles' points, computed by the consumer library's \`Aggregator\`
  with the same 10,000-candle batches, written with its \`InfluxSink\` through the v2 API in
  10,000-point requests (gzip off; 1 and 2 concurrent writers, the faster counts), converted to
  candles/s with the consumer's measured points per candle. Ceiling = the smaller of (a) and (b).
- **Wide**: the producer at max speed on the wide dataset gives its RSS for ~1,000 files in one
  merge; the consumer's RSS with 1,000 symbols is measured on the full topic (the worst case:
  librdkafka's prefetch fills), on the full topic with the prefetch raised to
  ${BENCH_WIDE_PREFETCH_KIB} KiB (\`--kafka-property\`, not the default of 1,024 KiB), and at the
  steady $BENCH_PACED_RATE candles/s.

EOF
  cat "$WORK/report.md"
  if [ -f "$WORK/kaggle.md" ]; then cat "$WORK/kaggle.md"; fi
  if [ -s "$PEERS_SECTION" ]; then
    echo
    cat "$PEERS_SECTION"
  fi
} >"$BENCH_OUT"
log "wrote $BENCH_OUT ($((SECONDS - START)) s after the build)"
