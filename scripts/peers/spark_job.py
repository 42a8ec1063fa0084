"""Spark Structured Streaming doing candlepipe's job, for the peer benchmark.

candlepipe claims to replace the Spark jobs of the projects it grew from; this is that job,
written the way Structured Streaming is meant to be used, so that `scripts/bench.sh peers`
can run both on the same topic and the same InfluxDB 2 and compare them:

- read the Kafka topic from the beginning (the spark-sql-kafka-0-10 source);
- parse schema v1 JSON (README "Contracts") with `from_json`;
- 1m candles and 5m/15m/1h OHLCV rollups (open = first, high = max, low = min, close =
  last, sums of volume, quote_volume, trades and taker_*, and vwap) in ONE stateful
  aggregation: every candle is exploded into its four (interval, window start) keys, with a
  watermark on the window start, in `update` output mode, so a window is written again on
  each micro-batch while it fills, as candlepipe writes it;
- line protocol built by Spark SQL on the executors, collected per micro-batch and POSTed
  to InfluxDB 2's v2 write API from `foreachBatch`.

What it does not do that candlepipe does: indicators (sma/ema/macd/rsi/bollinger/log return/
volatility: recursive per-symbol state that SQL windows cannot express in a streaming
aggregation), validation with a dead-letter topic, and replacing a candle re-sent for the same
minute (`closed: false` updates would be summed twice). Spark checkpoints its offsets and state
in a folder of its own instead of committing to the consumer group.

Configuration comes from the environment the benchmark sets (PEER_*); see `main`.
"""

import http.client
import os
import signal
import sys
import tempfile
import urllib.parse

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    BooleanType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
)

# Schema v1 (README "Contracts"); unknown fields are ignored by from_json.
SCHEMA = StructType(
    [
        StructField("v", IntegerType()),
        StructField("source", StringType()),
        StructField("symbol", StringType()),
        StructField("interval", StringType()),
        StructField("open_time", LongType()),
        StructField("open", DoubleType()),
        StructField("high", DoubleType()),
        StructField("low", DoubleType()),
        StructField("close", DoubleType()),
        StructField("volume", DoubleType()),
        StructField("quote_volume", DoubleType()),
        StructField("trades", LongType()),
        StructField("taker_buy_base", DoubleType()),
        StructField("taker_buy_quote", DoubleType()),
        StructField("closed", BooleanType()),
        StructField("produced_at", LongType()),
    ]
)

# The intervals written, in ms: the 1m candle itself and its three rollups.
INTERVALS = [("1m", 60_000), ("5m", 300_000), ("15m", 900_000), ("1h", 3_600_000)]
# Optional sums: written only when every candle of the window has the field (README).
OPTIONAL_SUMS = ["quote_volume", "trades", "taker_buy_base", "taker_buy_quote"]
# Lines per write request (candlepipe's default request size).
REQUEST_LINES = 5000


def env(name, default=None):
    value = os.environ.get(name, default)
    if value is None:
        sys.exit(f"spark_job.py: environment variable {name} is not set")
    return value


def rollups(candles):
    """The four windows of every candle, aggregated with a watermark on the window start.

    The watermark trails the newest window start by 2 h: a 1 h window must stay open for its
    whole hour, plus candlepipe's default late horizon of 1 h.
    """
    keys = F.array(
        *[
            F.struct(
                F.lit(name).alias("interval"),
                (F.floor(F.col("open_time") / ms) * ms).alias("start_ms"),
            )
            for name, ms in INTERVALS
        ]
    )
    exploded = (
        candles.withColumn("w", F.explode(keys))
        .withColumn("window_start", (F.col("w.start_ms") / 1000).cast("timestamp"))
        .withWatermark("window_start", "2 hours")
    )
    sums = [F.sum(c).alias(c) for c in OPTIONAL_SUMS] + [
        F.count(c).alias(f"n_{c}") for c in OPTIONAL_SUMS
    ]
    return exploded.groupBy(
        "source", "symbol", F.col("w.interval").alias("interval"), "window_start"
    ).agg(
        F.min_by("open", "open_time").alias("open"),
        F.max("high").alias("high"),
        F.min("low").alias("low"),
        F.max_by("close", "open_time").alias("close"),
        F.sum("volume").alias("volume"),
        F.sum(F.col("volume") * (F.col("high") + F.col("low") + F.col("close")) / 3).alias(
            "typical_volume"
        ),
        F.count(F.lit(1)).alias("n"),
        *sums,
    )


def line_protocol(windows):
    """One line-protocol line per window (README "InfluxDB schema"), built by Spark SQL."""

    def field(name, value):
        return F.concat(F.lit(f"{name}="), value.cast("string"))

    def optional(name, suffix=""):
        complete = F.col(f"n_{name}") == F.col("n")
        value = F.col(name).cast("string")
        return F.when(complete, F.concat(F.lit(f"{name}="), value, F.lit(suffix)))

    vwap = F.when(
        F.col("volume") > 0,
        F.when(
            F.col("n_quote_volume") == F.col("n"), F.col("quote_volume") / F.col("volume")
        ).otherwise(F.col("typical_volume") / F.col("volume")),
    )
    fields = F.concat_ws(
        ",",
        field("open", F.col("open")),
        field("high", F.col("high")),
        field("low", F.col("low")),
        field("close", F.col("close")),
        field("volume", F.col("volume")),
        optional("quote_volume"),
        optional("trades", "i"),
        optional("taker_buy_base"),
        optional("taker_buy_quote"),
        F.when(vwap.isNotNull(), F.concat(F.lit("vwap="), vwap.cast("string"))),
    )
    millis = (F.col("window_start").cast("double") * 1000).cast("long")
    return windows.select(
        F.concat(
            F.lit("candle,symbol="),
            F.col("symbol"),
            F.lit(",interval="),
            F.col("interval"),
            F.lit(",source="),
            F.col("source"),
            F.lit(" "),
            fields,
            F.lit(" "),
            millis.cast("string"),
        ).alias("line")
    )


class InfluxWriter:
    """POSTs line protocol to InfluxDB 2's `/api/v2/write` over one kept-alive connection."""

    def __init__(self, url, org, bucket, token):
        parsed = urllib.parse.urlparse(url)
        self.host, self.port = parsed.hostname, parsed.port or 8086
        query = urllib.parse.urlencode({"org": org, "bucket": bucket, "precision": "ms"})
        self.path = f"/api/v2/write?{query}"
        self.headers = {
            "Authorization": f"Token {token}",
            "Content-Type": "text/plain; charset=utf-8",
        }
        self.conn = None

    def write(self, lines):
        for i in range(0, len(lines), REQUEST_LINES):
            body = "\n".join(lines[i : i + REQUEST_LINES]).encode()
            self.post(body)

    def post(self, body):
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        self.conn.request("POST", self.path, body=body, headers=self.headers)
        answer = self.conn.getresponse()
        text = answer.read()
        if answer.status != 204:
            raise RuntimeError(f"InfluxDB answered {answer.status}: {text[:500]!r}")


def main():
    brokers = env("PEER_BROKERS")
    topic = env("PEER_TOPIC")
    writer = InfluxWriter(
        env("PEER_INFLUX_URL"),
        env("PEER_INFLUX_ORG"),
        env("PEER_INFLUX_BUCKET"),
        env("PEER_INFLUX_TOKEN"),
    )
    jars_dir = env("SPARK_KAFKA_JARS")
    jars = ",".join(
        os.path.join(jars_dir, j) for j in sorted(os.listdir(jars_dir)) if j.endswith(".jar")
    )
    checkpoint = env("SPARK_CHECKPOINT", tempfile.mkdtemp(prefix="spark-checkpoint-"))
    spark = (
        SparkSession.builder.master(env("SPARK_MASTER", "local[*]"))
        .appName("candlepipe-peer")
        .config("spark.jars", jars)
        # 200 by default: 200 state stores per micro-batch for 2 cores. One per core.
        .config("spark.sql.shuffle.partitions", env("SPARK_SHUFFLE_PARTITIONS", "2"))
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("WARN")

    candles = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", brokers)
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        # candlepipe's micro-batch cap (--max-batch 10000).
        .option("maxOffsetsPerTrigger", env("SPARK_MAX_OFFSETS_PER_TRIGGER", "10000"))
        .load()
        .select(F.from_json(F.col("value").cast("string"), SCHEMA).alias("c"))
        .select("c.*")
        .where(
            (F.col("v") == 1)
            & (F.col("interval") == "1m")
            & F.col("symbol").isNotNull()
            & F.col("open_time").isNotNull()
        )
    )

    def write_batch(windows, epoch_id):
        lines = [row.line for row in line_protocol(windows).collect()]
        writer.write(lines)

    query = (
        rollups(candles)
        .writeStream.outputMode("update")
        .option("checkpointLocation", checkpoint)
        .foreachBatch(write_batch)
        .start()
    )

    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    while query.isActive and not stopping:
        query.awaitTermination(1)
    if query.exception() is not None:
        print(f"spark_job.py: the query failed: {query.exception()}", file=sys.stderr)
        sys.exit(1)
    query.stop()
    spark.stop()


if __name__ == "__main__":
    main()
