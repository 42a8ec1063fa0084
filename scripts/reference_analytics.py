#!/usr/bin/env python3
"""Reference analytics for candlepipe's consumer, computed independently with pandas.

Why this exists: the consumer computes rollups and indicators incrementally (per candle,
with snapshots for late data). Testing that code against itself proves nothing, so this
script computes the same definitions (README "Analytics definitions") the
obvious, whole-series pandas way and stores the results as CSV fixtures under
testdata/analytics/. services/consumer/tests/analytics_reference.rs feeds the same parquet
rows through the consumer's Aggregator and compares.

Run from the repository root (pip install pandas pyarrow):

    python3 scripts/reference_analytics.py

Outputs, per input (SYMBOL is the parquet file stem):
  testdata/analytics/SYMBOL.indicators.csv  one row per 1m candle: open_time (Unix ms) and
      every indicator field; an empty cell means "not written" (the warm-up rule below).
  testdata/analytics/SYMBOL.rollups.csv     interval (1m/5m/15m/1h), open_time (window start,
      Unix ms), open, high, low, close, volume, quote_volume, trades, taker_buy_base,
      taker_buy_quote, vwap; empty cell = field absent.
  testdata/analytics/SYMBOL.window_indicators.csv  interval (5m/15m/1h), open_time (window
      start, Unix ms) and every indicator field, over that interval's window closes, for
      every row of the file (not cut: the 1h series needs the whole file to warm up).

Conventions (match the consumer, see its rollup.rs / indicator.rs module docs):
  * Rollups: resample(w, label="left", closed="left"), windows without candles dropped.
    The "1m" rows are the same rule over one candle (the 1m candle point and its vwap).
  * Optional sums (quote_volume, trades, taker_*) are present only when EVERY candle of the
    window has the field: sum(min_count=number of candles in the window). Plain pandas
    .sum() would turn missing values into 0 and silently undercount.
  * vwap = sum(quote_volume)/sum(volume) when every candle has quote_volume, else
    sum(typical*volume)/sum(volume) with typical = (high+low+close)/3; absent when
    sum(volume) == 0.
  * Indicators over the closes in open_time order (gaps are not filled), each field written
    only from its 1-based candle index: log_return 2, ema_12 12, sma_20/bb_* 20, rsi_14 15,
    volatility_20 21, ema_26/macd 26, macd_signal/macd_hist 34.
  * macd_signal = macd.ewm(span=9, adjust=False) over the full macd series from candle 1
    (macd is 0 at candle 1, since both EMAs are seeded with the first close).
  * Window indicators (5m/15m/1h): the same indicators over the series of window closes,
    close = resample(w, label="left", closed="left").last() with empty windows dropped (gaps
    stay gaps), the warm-up index counted in windows. The last window is the one still
    filling: its close is the newest candle's close.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT / "testdata" / "real-ohlcv"
OUT = ROOT / "testdata" / "analytics"

# (parquet stem, number of leading rows used for the 1m indicators and the rollups; None =
# all). UNITTEST-BTC is cut to keep those fixtures small; the Rust test feeds exactly the rows
# each fixture covers. The window indicators always use every row.
INPUTS = [("XRP-ETH", None), ("UNITTEST-BTC", 2500)]

WINDOWS = [("5m", "5min"), ("15m", "15min"), ("1h", "1h")]

OPTIONAL_SUMS = {
    # consumer field name: Kaggle column name
    "quote_volume": "quote_asset_volume",
    "trades": "number_of_trades",
    "taker_buy_base": "taker_buy_base_asset_volume",
    "taker_buy_quote": "taker_buy_quote_asset_volume",
}

# field -> first 1-based candle index where it is written
FIRST_INDEX = {
    "sma_20": 20,
    "ema_12": 12,
    "ema_26": 26,
    "macd": 26,
    "macd_signal": 34,
    "macd_hist": 34,
    "rsi_14": 15,
    "bb_mid": 20,
    "bb_upper": 20,
    "bb_lower": 20,
    "log_return": 2,
    "volatility_20": 21,
}


def load(stem: str, rows: int | None) -> pd.DataFrame:
    df = pd.read_parquet(REAL / f"{stem}.parquet")
    if "open_time" in df.columns:
        df = df.set_index("open_time")
    if not isinstance(df.index, pd.DatetimeIndex):
        df.index = pd.to_datetime(df.index, unit="ms")
    df = df.sort_index()
    if rows is not None:
        df = df.iloc[:rows]
    return df.astype({c: "float64" for c in df.columns})


def to_ms(index: pd.DatetimeIndex) -> np.ndarray:
    return (index.tz_localize(None) - pd.Timestamp(0)) // pd.Timedelta(milliseconds=1)


def indicators(df: pd.DataFrame) -> pd.DataFrame:
    close = df["close"]
    out = pd.DataFrame(index=df.index)

    sma = close.rolling(20).mean()
    std_pop = close.rolling(20).std(ddof=0)
    ema12 = close.ewm(span=12, adjust=False).mean()
    ema26 = close.ewm(span=26, adjust=False).mean()
    macd = ema12 - ema26
    signal = macd.ewm(span=9, adjust=False).mean()

    delta = close.diff()
    gain = delta.clip(lower=0.0)
    loss = (-delta).clip(lower=0.0)
    avg_gain = gain.ewm(alpha=1 / 14, adjust=False).mean()
    avg_loss = loss.ewm(alpha=1 / 14, adjust=False).mean()
    rsi = 100.0 - 100.0 / (1.0 + avg_gain / avg_loss)
    rsi = rsi.mask((avg_loss == 0) & (avg_gain > 0), 100.0)
    rsi = rsi.mask((avg_loss == 0) & (avg_gain == 0), 50.0)

    log_return = np.log(close / close.shift(1))
    volatility = log_return.rolling(20).std(ddof=1)

    out["sma_20"] = sma
    out["ema_12"] = ema12
    out["ema_26"] = ema26
    out["macd"] = macd
    out["macd_signal"] = signal
    out["macd_hist"] = macd - signal
    out["rsi_14"] = rsi
    out["bb_mid"] = sma
    out["bb_upper"] = sma + 2.0 * std_pop
    out["bb_lower"] = sma - 2.0 * std_pop
    out["log_return"] = log_return
    out["volatility_20"] = volatility

    index = np.arange(1, len(df) + 1)
    for field, first in FIRST_INDEX.items():
        out.loc[index < first, field] = np.nan
    out.insert(0, "open_time", to_ms(df.index))
    return out


def window_indicators(df: pd.DataFrame) -> pd.DataFrame:
    frames = []
    for label, rule in WINDOWS:
        closes = df["close"].resample(rule, label="left", closed="left").last().dropna()
        w = indicators(closes.to_frame("close"))
        w.insert(0, "interval", label)
        frames.append(w)
    return pd.concat(frames)


def rollups(df: pd.DataFrame) -> pd.DataFrame:
    frames = []
    typical_volume = (df["high"] + df["low"] + df["close"]) / 3.0 * df["volume"]
    for label, rule in [("1m", "1min"), ("5m", "5min"), ("15m", "15min"), ("1h", "1h")]:
        r = df.resample(rule, label="left", closed="left")
        count = r["close"].count()
        w = pd.DataFrame(
            {
                "open": r["open"].first(),
                "high": r["high"].max(),
                "low": r["low"].min(),
                "close": r["close"].last(),
                "volume": r["volume"].sum(),
            }
        )
        for field, column in OPTIONAL_SUMS.items():
            if column in df.columns:
                present = df[column].notna().resample(rule, label="left", closed="left").sum()
                total = df[column].resample(rule, label="left", closed="left").sum()
                w[field] = total.where(present == count)
            else:
                w[field] = np.nan
        if "quote_asset_volume" in df.columns:
            qv_present = (
                df["quote_asset_volume"].notna().resample(rule, label="left", closed="left").sum()
                == count
            )
        else:
            qv_present = pd.Series(False, index=w.index)
        tpv = typical_volume.resample(rule, label="left", closed="left").sum()
        numerator = w["quote_volume"].where(qv_present, tpv)
        w["vwap"] = (numerator / w["volume"]).where(w["volume"] != 0)
        w = w[count > 0]
        w.insert(0, "open_time", to_ms(w.index))
        w.insert(0, "interval", label)
        frames.append(w)
    out = pd.concat(frames)
    out["trades"] = out["trades"].astype("Int64")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for stem, rows in INPUTS:
        df = load(stem, rows)
        ind = indicators(df)
        ind.to_csv(args.out / f"{stem}.indicators.csv", index=False, float_format="%.17g")
        roll = rollups(df)
        roll.to_csv(args.out / f"{stem}.rollups.csv", index=False, float_format="%.17g")
        whole = load(stem, None)
        wind = window_indicators(whole)
        wind.to_csv(args.out / f"{stem}.window_indicators.csv", index=False, float_format="%.17g")
        print(
            f"{stem}: {len(df)} candles, {len(roll)} rollup windows; "
            f"{len(whole)} candles, {len(wind)} window indicator rows -> {args.out}"
        )


if __name__ == "__main__":
    main()
