"""The seed-style Python consumer, for the peer benchmark.

The projects candlepipe grew from consumed the topic with a short Python loop: confluent-kafka
for Kafka, pandas for the rollups, line protocol over HTTP with requests. This is that loop,
written carefully (batches, one DataFrame per batch, one HTTP session), so that
`scripts/bench.sh peers` measures what such a consumer costs, not a strawman:

- poll up to 10,000 messages (candlepipe's micro-batch cap) or 1 s;
- parse schema v1 JSON into a DataFrame, keep v = 1 and interval = 1m;
- write every 1m candle, and the 5m/15m/1h windows the batch touched (open = first, high =
  max, low = min, close = last, volume = sum), merged with the windows already seen so that
  a window that spans batches is written whole, as candlepipe writes it;
- POST line protocol to InfluxDB 2's v2 write API, then commit the offsets.

What it does not do that candlepipe does: indicators, vwap, the optional sums (quote_volume,
trades, taker_*) of the rollups, validation with a dead-letter topic, and a late-data
horizon (windows are kept until they are 2 h behind the newest candle).

Configuration comes from the environment the benchmark sets (PEER_*).
"""

import json
import os
import signal
import sys

import pandas as pd
import requests
from confluent_kafka import Consumer

ROLLUPS = {"5m": 300_000, "15m": 900_000, "1h": 3_600_000}
# Windows further behind the newest candle than this are dropped from memory.
KEEP_MS = 2 * 3_600_000
REQUEST_LINES = 5000
BATCH = 10_000


def env(name):
    value = os.environ.get(name)
    if value is None:
        sys.exit(f"python_consumer.py: environment variable {name} is not set")
    return value


def lines_of(frame, interval):
    """Line protocol for a frame of windows with open/high/low/close/volume."""
    return [
        f"candle,symbol={s},interval={interval},source={src} "
        f"open={o!r},high={h!r},low={lo!r},close={c!r},volume={v!r} {t}"
        for s, src, t, o, h, lo, c, v in zip(
            frame["symbol"].tolist(),
            frame["source"].tolist(),
            frame["open_time"].tolist(),
            frame["open"].astype(float).tolist(),
            frame["high"].astype(float).tolist(),
            frame["low"].astype(float).tolist(),
            frame["close"].astype(float).tolist(),
            frame["volume"].astype(float).tolist(),
        )
    ]


class Rollups:
    """Windows seen so far, per (interval, symbol, source, window start)."""

    def __init__(self):
        self.windows = {name: pd.DataFrame() for name in ROLLUPS}

    def update(self, candles):
        """Merges a batch of 1m candles; returns the line protocol of the windows it touched."""
        out = []
        newest = int(candles["open_time"].max())
        for name, ms in ROLLUPS.items():
            batch = candles.assign(start=candles["open_time"] // ms * ms)
            keys = ["symbol", "source", "start"]
            seen = self.windows[name]
            touched = batch[keys].drop_duplicates()
            if not seen.empty:
                earlier = seen.merge(touched, on=keys)
                batch = pd.concat([earlier, batch], ignore_index=True)
            merged = (
                batch.sort_values("open_time")
                .groupby(keys, sort=False)
                .agg(
                    open=("open", "first"),
                    high=("high", "max"),
                    low=("low", "min"),
                    close=("close", "last"),
                    volume=("volume", "sum"),
                    open_time=("open_time", "min"),
                )
                .reset_index()
            )
            out += lines_of(merged.assign(open_time=merged["start"]), name)
            # Keep the candles of the windows still open, as rows to merge with later.
            kept = pd.concat([seen, candles.assign(start=candles["open_time"] // ms * ms)])
            self.windows[name] = kept[kept["start"] >= newest - KEEP_MS][
                keys + ["open_time", "open", "high", "low", "close", "volume"]
            ]
        return out


def main():
    consumer = Consumer(
        {
            "bootstrap.servers": env("PEER_BROKERS"),
            "group.id": env("PEER_GROUP"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([env("PEER_TOPIC")])
    session = requests.Session()
    session.headers["Authorization"] = f"Token {env('PEER_INFLUX_TOKEN')}"
    write_url = f"{env('PEER_INFLUX_URL')}/api/v2/write"
    params = {
        "org": env("PEER_INFLUX_ORG"),
        "bucket": env("PEER_INFLUX_BUCKET"),
        "precision": "ms",
    }
    rollups = Rollups()
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    while not stopping:
        messages = consumer.consume(num_messages=BATCH, timeout=1.0)
        records = [json.loads(m.value()) for m in messages if m.error() is None]
        if not records:
            continue
        candles = pd.DataFrame.from_records(
            records,
            columns=["v", "symbol", "source", "interval", "open_time", "open", "high", "low", "close", "volume"],
        )
        candles = candles[(candles["v"] == 1) & (candles["interval"] == "1m")]
        lines = lines_of(candles, "1m") + rollups.update(candles)
        for i in range(0, len(lines), REQUEST_LINES):
            answer = session.post(write_url, params=params, data="\n".join(lines[i : i + REQUEST_LINES]))
            answer.raise_for_status()
        consumer.commit(asynchronous=False)
    consumer.close()


if __name__ == "__main__":
    main()
