//! Binance public-data kline files (`BTCUSDT-1m-2024-01.zip`, `.csv`, monthly and daily)
//! replayed end to end, without Kafka: files on disk in, candles out of `ReplaySource::run`
//! under a virtual clock.
//!
//! Expected values come from hand-written tables, or, for the real candles in
//! `testdata/real-ohlcv`, from replaying the parquet files they are re-typed from (the
//! parquet path is checked against parquet's own row API in `replay_reader.rs`).

use candlepipe_model::candle::MINUTE_MS;
use candlepipe_model::time::{fmt_ms, parse_instant_ms};
use candlepipe_model::{Candle, Source};
use candlepipe_producer::source::replay::{ReplayOptions, ReplaySource};
use std::collections::BTreeMap;
use std::path::Path;

#[path = "common/binance.rs"]
mod binance;
use binance::{binance_line, write_kline_file, Digits, Unit};

#[path = "common/replay.rs"]
mod common;
use common::{
    assert_bad_file_refused_then_skipped, assert_candles, capture_logs, plain, replay_all, NOW,
};

// ---------------------------------------------------------------------------------------
// helpers

fn at(instant: &str) -> i64 {
    parse_instant_ms(instant).unwrap()
}

/// A line of `c` as Binance writes it, in milliseconds.
fn ms_line(c: &Candle) -> String {
    binance_line(c, Unit::Millis, Digits::Eight)
}

/// Asserts global `(open_time, symbol)` order, strictly (no repeats).
#[track_caller]
fn assert_time_ordered(candles: &[Candle]) {
    for w in candles.windows(2) {
        assert!(
            (w[0].open_time, &w[0].symbol) < (w[1].open_time, &w[1].symbol),
            "out of order: {} {} then {} {}",
            w[0].symbol,
            fmt_ms(w[0].open_time),
            w[1].symbol,
            fmt_ms(w[1].open_time)
        );
    }
}

/// A complete candle with fixed, valid values: for tests about files, not about values.
fn sample(symbol: &str, open_time: i64) -> Candle {
    full(
        symbol,
        open_time,
        [1.0, 2.0, 0.5, 1.5, 3.0],
        4.5,
        2,
        1.0,
        1.5,
    )
}

/// A candle with every Binance field.
#[allow(clippy::too_many_arguments)]
fn full(
    symbol: &str,
    open_time: i64,
    ohlcv: [f64; 5],
    quote: f64,
    trades: u64,
    taker_base: f64,
    taker_quote: f64,
) -> Candle {
    let [open, high, low, close, volume] = ohlcv;
    Candle {
        quote_volume: Some(quote),
        trades: Some(trades),
        taker_buy_base: Some(taker_base),
        taker_buy_quote: Some(taker_quote),
        ..Candle::ohlcv(
            symbol,
            Source::Replay,
            open_time,
            open,
            high,
            low,
            close,
            volume,
        )
    }
}

// ---------------------------------------------------------------------------------------
// hand-made files

#[test]
fn hand_made_csv_and_zip_files_in_ms_and_us_replay_with_their_gaps_and_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 2024-12-31 in milliseconds, a gap at 23:58.
    write_kline_file(
        d,
        "BTCUSDT-1m-2024-12-31.csv",
        "1735689360000,93500.50000000,93502.00000000,93499.25000000,93501.00000000,0.07451000,1735689419999,6966.75000000,12,0.03000000,2805.00000000,0\n\
         1735689420000,93501.00000000,93501.00000000,93501.00000000,93501.00000000,0.00000000,1735689479999,0.00000000,0,0.00000000,0.00000000,0\n\
         1735689540000,93501.00000000,93510.00000000,93500.00000000,93505.50000000,2.50000000,1735689599999,233760.00000000,311,1.25000000,116880.00000000,0\n",
    );
    // 2025-01-01, zipped, in microseconds as Binance's 2025 spot files, with one ms row
    // mixed in, a bad line (line 3, `high` not a number), a gap at 00:04 and a µs time
    // that is not a whole millisecond (line 6).
    let zip = write_kline_file(
        d,
        "BTCUSDT-1m-2025-01-01.zip",
        "1735689600000000,93505.50000000,93506.00000000,93400.00000000,93450.00000000,1.00000000,1735689659999999,93450.00000000,5,0.50000000,46725.00000000,0\n\
         1735689660000,93450.00000000,93460.00000000,93440.00000000,93455.00000000,1.00000000,1735689719999,93455.00000000,6,0.50000000,46727.50000000,0\n\
         1735689720000000,93455.00000000,9345x,93440.00000000,93455.00000000,1.00000000,1735689779999999,93455.00000000,6,0.50000000,46727.50000000,0\n\
         1735689780000000,93455.00000000,93470.00000000,93450.00000000,93460.00000000,3.00000000,1735689839999999,280380.00000000,9,1.50000000,140190.00000000,0\n\
         1735689900000000,93460.00000000,93460.00000000,93460.00000000,93460.00000000,0.25000000,1735689959999999,23365.00000000,1,0.00000000,0.00000000,0\n\
         1735689960000001,93460.00000000,93460.00000000,93460.00000000,93460.00000000,0.25000000,1735690019999999,23365.00000000,1,0.00000000,0.00000000,0\n",
    );
    // Another symbol, with a header line, in µs.
    write_kline_file(
        d,
        "ETHBTC-1m-2025-01-01.csv",
        "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,taker_buy_quote_volume,ignore\n\
         1735689600000000,0.03570000,0.03575000,0.03565000,0.03571000,12.50000000,1735689659999999,0.44625000,40,6.00000000,0.21420000,0\n",
    );

    let (result, logs) = capture_logs(|| replay_all(plain(d)));
    let (out, stats) = result.unwrap();
    let m = |instant: &str| at(instant);
    let want = vec![
        full(
            "BTC-USDT",
            m("2024-12-31T23:56:00Z"),
            [93500.5, 93502.0, 93499.25, 93501.0, 0.07451],
            6966.75,
            12,
            0.03,
            2805.0,
        ),
        full(
            "BTC-USDT",
            m("2024-12-31T23:57:00Z"),
            [93501.0, 93501.0, 93501.0, 93501.0, 0.0],
            0.0,
            0,
            0.0,
            0.0,
        ),
        full(
            "BTC-USDT",
            m("2024-12-31T23:59:00Z"),
            [93501.0, 93510.0, 93500.0, 93505.5, 2.5],
            233760.0,
            311,
            1.25,
            116880.0,
        ),
        full(
            "BTC-USDT",
            m("2025-01-01T00:00:00Z"),
            [93505.5, 93506.0, 93400.0, 93450.0, 1.0],
            93450.0,
            5,
            0.5,
            46725.0,
        ),
        full(
            "ETH-BTC",
            m("2025-01-01T00:00:00Z"),
            [0.0357, 0.03575, 0.03565, 0.03571, 12.5],
            0.44625,
            40,
            6.0,
            0.2142,
        ),
        full(
            "BTC-USDT",
            m("2025-01-01T00:01:00Z"),
            [93450.0, 93460.0, 93440.0, 93455.0, 1.0],
            93455.0,
            6,
            0.5,
            46727.5,
        ),
        full(
            "BTC-USDT",
            m("2025-01-01T00:03:00Z"),
            [93455.0, 93470.0, 93450.0, 93460.0, 3.0],
            280380.0,
            9,
            1.5,
            140190.0,
        ),
        full(
            "BTC-USDT",
            m("2025-01-01T00:05:00Z"),
            [93460.0, 93460.0, 93460.0, 93460.0, 0.25],
            23365.0,
            1,
            0.0,
            0.0,
        ),
    ];
    assert_candles(&out, &want, "hand-made klines");
    assert_eq!(stats.bad_rows(), 2);
    assert_eq!(stats.bad_files(), 0);
    assert_eq!(stats.percent_done(), 100.0, "gaps count as read at the end");

    // Each bad line is logged with its file, line and column.
    let zip = zip.display().to_string();
    for (line, reason) in [
        (3, "column 3 (`high`) is not a number: \"9345x\""),
        (
            6,
            "open_time 1735689960000001 (Microsecond) is not a whole millisecond",
        ),
    ] {
        let log = logs
            .lines()
            .find(|l| l.contains(&format!("skipping bad line {line} of {zip}: ")))
            .unwrap_or_else(|| panic!("no log line for line {line}:\n{logs}"));
        assert!(log.contains(reason), "{log}");
    }
}

#[test]
fn monthly_and_daily_files_of_a_symbol_merge_into_one_ordered_stream_beside_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let minute = |instant: &str, price: f64| {
        full(
            "X",
            at(instant),
            [price, price + 1.0, price - 1.0, price, 2.0],
            2.0 * price,
            3,
            1.0,
            price,
        )
    };
    // BTCUSDT: January as a monthly zip, then 1 and 3 February as daily files (one zip,
    // one csv), listed out of order on purpose; 2 February is missing (a gap of a day).
    let files: [(&str, Vec<Candle>); 3] = [
        (
            "BTCUSDT-1m-2024-02-03.csv",
            vec![minute("2024-02-03T00:00:00Z", 40.0)],
        ),
        (
            "BTCUSDT-1m-2024-01.zip",
            vec![
                minute("2024-01-01T00:00:00Z", 10.0),
                minute("2024-01-15T12:00:00Z", 11.0),
                minute("2024-01-31T23:59:00Z", 12.0),
            ],
        ),
        (
            "BTCUSDT-1m-2024-02-01.zip",
            vec![
                minute("2024-02-01T00:00:00Z", 20.0),
                minute("2024-02-01T00:01:00Z", 21.0),
            ],
        ),
    ];
    // ETHUSDT: daily files overlapping BTC's days.
    let eth = [(
        "ETHUSDT-1m-2024-01-15.csv",
        vec![
            minute("2024-01-15T11:59:00Z", 5.0),
            minute("2024-01-15T12:00:00Z", 6.0),
        ],
    )];
    let mut want = Vec::new();
    for (name, candles) in files.iter().chain(&eth) {
        let symbol = if name.starts_with("BTC") {
            "BTC-USDT"
        } else {
            "ETH-USDT"
        };
        let text: String = candles.iter().map(|c| ms_line(c) + "\n").collect();
        write_kline_file(d, name, &text);
        want.extend(candles.iter().map(|c| Candle {
            symbol: symbol.into(),
            ..c.clone()
        }));
    }
    // A parquet file in the same folder joins the same merge.
    let parquet = candlepipe_testkit::testdata("real-ohlcv/XRP-ETH.parquet");
    std::fs::copy(&parquet, d.join("XRP-ETH.parquet")).unwrap();

    let (out, stats) = replay_all(plain(d)).unwrap();
    assert_time_ordered(&out);
    let klines: Vec<Candle> = out
        .iter()
        .filter(|c| c.symbol != "XRP-ETH")
        .cloned()
        .collect();
    want.sort_by(|a, b| (a.open_time, &a.symbol).cmp(&(b.open_time, &b.symbol)));
    assert_candles(&klines, &want, "kline symbols");
    let only_parquet = replay_all(ReplayOptions {
        dataset: d.to_owned(),
        symbols: Some(vec!["XRP-ETH".into()]),
        ..plain(d)
    })
    .unwrap()
    .0;
    assert!(only_parquet.len() > 2_000);
    assert_eq!(out.len(), klines.len() + only_parquet.len());
    assert_eq!(stats.bad_rows(), 0);

    // --symbols takes the mapped names, and --start/--end cut across the files.
    let opts = ReplayOptions {
        symbols: Some(vec!["BTC-USDT".into()]),
        start: Some(at("2024-01-15T00:00:00Z")),
        end: Some(at("2024-02-01T00:01:00Z")),
        ..plain(d)
    };
    let (cut, stats) = replay_all(opts).unwrap();
    let times: Vec<String> = cut.iter().map(|c| fmt_ms(c.open_time)).collect();
    assert_eq!(
        times,
        [
            "2024-01-15T12:00:00.000Z",
            "2024-01-31T23:59:00.000Z",
            "2024-02-01T00:00:00.000Z"
        ]
    );
    assert_eq!(stats.percent_done(), 100.0);
    let opts = ReplayOptions {
        symbols: Some(vec!["BTCUSDT".into()]),
        ..plain(d)
    };
    let err = ReplaySource::open(opts).err().unwrap().to_string();
    assert!(
        err.contains("[\"BTCUSDT\"] have no file") && err.contains("for BTC-USDT"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// the real candles, re-typed

/// Writes `candles` (one symbol, original times) as Binance kline files named for
/// `binance_symbol`: whole months alternately as `.zip` and `.csv`, the last month as
/// daily files, as a user who downloads the current month day by day would have them.
fn write_as_binance(
    dir: &Path,
    binance_symbol: &str,
    candles: &[Candle],
    unit: Unit,
    digits: Digits,
) -> usize {
    let mut months: BTreeMap<String, Vec<&Candle>> = BTreeMap::new();
    for c in candles {
        months
            .entry(fmt_ms(c.open_time)[..7].to_owned())
            .or_default()
            .push(c);
    }
    let last = months.keys().last().cloned().unwrap();
    let mut files = 0;
    for (i, (month, rows)) in months.iter().enumerate() {
        let mut periods: BTreeMap<String, String> = BTreeMap::new();
        for c in rows {
            let day = &fmt_ms(c.open_time)[..10];
            let period = if *month == last { day } else { month.as_str() };
            let text = periods.entry(period.to_owned()).or_default();
            text.push_str(&binance_line(c, unit, digits));
            text.push('\n');
        }
        for (period, text) in periods {
            let extension = if i % 2 == 0 { "zip" } else { "csv" };
            let name = format!("{binance_symbol}-1m-{period}.{extension}");
            write_kline_file(dir, &name, &text);
            files += 1;
        }
    }
    files
}

/// The candle each price and volume of which went through `digits` (see
/// [`Digits::typed`]).
fn typed(c: &Candle, digits: Digits) -> Candle {
    let t = |v: f64| digits.typed(v);
    Candle {
        open: t(c.open),
        high: t(c.high),
        low: t(c.low),
        close: t(c.close),
        volume: t(c.volume),
        ..c.clone()
    }
}

#[test]
fn real_candles_retyped_as_binance_csv_replay_exactly_as_from_parquet() {
    let real = candlepipe_testkit::testdata("real-ohlcv");
    let (from_parquet, _) = replay_all(plain(&real)).unwrap();
    // The real files hold some values one ulp away from their 8-place decimal
    // (0.0016200000000000001 for 0.00162): Binance's CSV has the decimal, which reads as
    // the f64 nearest to it. Everything else is equal bit for bit, and written with the
    // shortest round-trip decimals instead, every value is.
    let ulps = |a: f64, b: f64| (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs();
    let mut off_by_one = 0;
    for c in &from_parquet {
        for v in [c.open, c.high, c.low, c.close, c.volume] {
            let decimal = Digits::Eight.typed(v);
            assert!(ulps(v, decimal) <= 1, "{v} has more than 8 places");
            off_by_one += usize::from(decimal != v);
        }
    }
    println!(
        "{off_by_one} of {} values are one ulp off their 8-place decimal",
        5 * from_parquet.len()
    );

    for (unit, digits) in [
        (Unit::Millis, Digits::Eight),
        (Unit::Micros, Digits::Eight),
        (Unit::Millis, Digits::Shortest),
    ] {
        let what = format!("{unit:?} {digits:?}");
        let dir = tempfile::tempdir().unwrap();
        let mut files = 0;
        for (symbol, binance) in [("XRP-ETH", "XRPETH"), ("UNITTEST-BTC", "UNITTESTBTC")] {
            let candles: Vec<Candle> = from_parquet
                .iter()
                .filter(|c| c.symbol == symbol)
                .cloned()
                .collect();
            assert!(candles.len() > 2_000, "{symbol}");
            files += write_as_binance(dir.path(), binance, &candles, unit, digits);
        }
        assert!(files > 6, "{what}: several files per symbol: {files}");

        let (from_csv, stats) = replay_all(plain(dir.path())).unwrap();
        assert_eq!(stats.bad_rows(), 0, "{what}");
        assert_eq!(stats.percent_done(), 100.0, "{what}");
        // The kline files carry every Binance column: those the parquet files lack are
        // what was written, and the rest is the parquet candle.
        let extras_as_written = from_csv.iter().zip(&from_parquet).all(|(k, p)| {
            let quote = p.volume * p.close;
            (
                k.quote_volume,
                k.trades,
                k.taker_buy_base,
                k.taker_buy_quote,
            ) == (
                Some(digits.typed(quote)),
                Some((p.open_time / MINUTE_MS % 977) as u64),
                Some(digits.typed(p.volume / 2.0)),
                Some(digits.typed(quote / 2.0)),
            )
        });
        assert!(extras_as_written, "{what}");
        let stripped: Vec<Candle> = from_csv
            .into_iter()
            .map(|c| Candle {
                quote_volume: None,
                trades: None,
                taker_buy_base: None,
                taker_buy_quote: None,
                ..c
            })
            .collect();
        let want: Vec<Candle> = from_parquet.iter().map(|c| typed(c, digits)).collect();
        assert_candles(&stripped, &want, &what);
        // And so the messages on Kafka are the same bytes.
        let encode = |c: &Candle| {
            let mut out = Vec::new();
            candlepipe_model::codec::encode(c, NOW, &mut out).unwrap();
            out
        };
        assert!(stripped
            .iter()
            .zip(&want)
            .all(|(a, b)| encode(a) == encode(b)));
        if let Digits::Shortest = digits {
            assert_candles(&stripped, &from_parquet, "bit for bit");
        }
    }
}

// ---------------------------------------------------------------------------------------
// bad files

/// A good kline file plus one bad file made by `make`; checks the error without
/// `--skip-bad-files` (naming the file and `expected`) and the skip with it.
fn check_bad_file(name: &str, make: impl Fn(&Path), expected: &str) {
    let dir = tempfile::tempdir().unwrap();
    let good = sample("GOOD-USDT", at("2024-03-01T00:00:00Z"));
    write_kline_file(dir.path(), "GOODUSDT-1m-2024-03-01.csv", &ms_line(&good));
    make(dir.path());
    assert_bad_file_refused_then_skipped(dir.path(), &[good], name, expected);
}

#[test]
fn unreadable_kline_files_are_errors_naming_the_file_or_skipped() {
    let line = ms_line(&sample("X", at("2024-03-01T00:00:00Z")));
    let put = |name: &'static str, bytes: Vec<u8>| {
        move |d: &Path| std::fs::write(d.join(name), &bytes).unwrap()
    };
    check_bad_file(
        "notes.csv",
        put("notes.csv", b"x".to_vec()),
        "file name is not a Binance kline file name",
    );
    check_bad_file(
        "BTCUSDT-1h-2024-03.zip",
        put("BTCUSDT-1h-2024-03.zip", b"x".to_vec()),
        "holds 1h klines; only 1m",
    );
    check_bad_file(
        "BTCUSDT-1m-2024-03.zip",
        put("BTCUSDT-1m-2024-03.zip", line.clone().into_bytes()),
        "not a readable zip file",
    );
    check_bad_file(
        "BTCUSDT-1m-2024-03.csv",
        put("BTCUSDT-1m-2024-03.csv", Vec::new()),
        "file is empty",
    );
    check_bad_file(
        "BTCUSDT-1m-2024-03-02.csv",
        put(
            "BTCUSDT-1m-2024-03-02.csv",
            b"{\"open_time\": 1}\n".to_vec(),
        ),
        "not a Binance kline CSV: line 1: 1 columns; a Binance kline line has 12",
    );
    let zipped = {
        let dir = tempfile::tempdir().unwrap();
        let path = write_kline_file(dir.path(), "T.zip", &line);
        std::fs::read(path).unwrap()
    };
    let half = zipped[..zipped.len() / 2].to_vec();
    check_bad_file(
        "BTCUSDT-1m-2024-03-03.zip",
        put("BTCUSDT-1m-2024-03-03.zip", half),
        "not a readable zip file",
    );
}

#[test]
fn a_zip_damaged_inside_fails_while_streaming_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let start = at("2024-03-01T00:00:00Z");
    let text: String = (0..2_000)
        .map(|i| {
            let c = full(
                "X",
                start + i * MINUTE_MS,
                [10.0, 11.0, 9.0, 10.5, 1.0 + i as f64],
                10.0,
                1,
                0.5,
                5.0,
            );
            ms_line(&c) + "\n"
        })
        .collect();
    let bad = write_kline_file(d, "BTCUSDT-1m-2024-03.zip", &text);
    let other = sample("ETH-USDT", start + 5 * MINUTE_MS);
    write_kline_file(d, "ETHUSDT-1m-2024-03.csv", &ms_line(&other));
    // Damage the deflate stream in its middle; the zip's directory stays intact, so the
    // file passes the check at open and fails while streaming.
    let mut bytes = std::fs::read(&bad).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle..middle + 16]
        .iter_mut()
        .for_each(|b| *b ^= 0xa5);
    std::fs::write(&bad, bytes).unwrap();

    let err = replay_all(plain(d)).err().unwrap().to_string();
    assert!(
        err.contains("BTCUSDT-1m-2024-03.zip: cannot read past line")
            && err.contains("damaged zip entry"),
        "{err}"
    );
    let opts = ReplayOptions {
        skip_bad_files: true,
        ..plain(d)
    };
    let (out, stats) = replay_all(opts).unwrap();
    assert_eq!(stats.bad_files(), 1);
    assert!(out.contains(&other), "the other symbol replays");
    assert!(out.iter().filter(|c| c.symbol == "BTC-USDT").count() < 2_000);
}

#[test]
fn a_symbol_in_both_parquet_and_kline_files_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let real = candlepipe_testkit::testdata("real-ohlcv/XRP-ETH.parquet");
    std::fs::copy(real, dir.path().join("XRP-ETH.parquet")).unwrap();
    let c = sample("X", at("2024-03-01T00:00:00Z"));
    write_kline_file(dir.path(), "XRPETH-1m-2024-03.zip", &ms_line(&c));
    let err = ReplaySource::open(plain(dir.path()))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("symbol XRP-ETH is in both")
            && err.contains("XRP-ETH.parquet")
            && err.contains("XRPETH-1m-2024-03.zip"),
        "{err}"
    );
}
