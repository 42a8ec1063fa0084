//! The InfluxDB sink against a real influxd 1.6.7 (v1 API): what is written is exactly what
//! comes back, re-writing changes nothing, hostile tag values stay inside their tag, a field
//! type conflict rejects exactly the conflicting points, and a stopped server only delays the
//! write.
//!
//! Each test takes its own database on the shared server; the restart test starts a private
//! one. The sink runs on a tokio runtime owned by the test, so the test thread is free to
//! call the (blocking) testkit and to stop and restart the server while a write is retrying.

use candlepipe_consumer::metrics::ConsumerMetrics;
use candlepipe_consumer::point::{CandlePoint, IndicatorPoint, Point};
use candlepipe_consumer::sink::{InfluxApi, InfluxConfig, InfluxSink, SinkError, WriteOutcome};
use candlepipe_model::shutdown::{self, Shutdown};
use candlepipe_model::{Interval, Source};
use candlepipe_testkit::{testdata, unique, wait_until, Influxd};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

type Row = Map<String, Value>;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn v1_config(influxd: &Influxd, db: &str) -> InfluxConfig {
    InfluxConfig {
        url: influxd.url.clone(),
        api: InfluxApi::V1,
        db: db.to_owned(),
        max_backoff: Duration::from_millis(500),
        request_timeout: Duration::from_secs(10),
        ..InfluxConfig::default()
    }
}

/// A sink, its metrics and a shutdown that never fires unless the test fires it.
struct Harness {
    rt: tokio::runtime::Runtime,
    sink: InfluxSink,
    metrics: ConsumerMetrics,
    /// Kept alive: a shutdown whose every trigger is gone counts as fired.
    _trigger: shutdown::ShutdownTrigger,
    stop: Shutdown,
}

impl Harness {
    fn new(cfg: InfluxConfig) -> Harness {
        let metrics = ConsumerMetrics::new();
        let sink = InfluxSink::new(cfg, metrics.clone()).expect("valid config");
        let (trigger, stop) = shutdown::channel();
        Harness {
            rt: runtime(),
            sink,
            metrics,
            _trigger: trigger,
            stop,
        }
    }

    fn prepare(&self) {
        self.rt
            .block_on(self.sink.prepare(&self.stop))
            .expect("prepare");
    }

    fn write(&self, points: &[Point]) -> WriteOutcome {
        self.rt
            .block_on(self.sink.write(points, &self.stop))
            .expect("write")
    }

    fn retries(&self) -> u64 {
        self.metrics.write_retries.get()
    }

    fn errors(&self, kind: &str) -> u64 {
        self.metrics.write_errors.with_label_values(&[kind]).get()
    }

    fn points_written(&self, measurement: &str) -> u64 {
        self.metrics
            .points_written
            .with_label_values(&[measurement])
            .get()
    }

    /// A raw line protocol write, bypassing the sink (to set up a conflict).
    fn raw_write(&self, url: &str, db: &str, line: &str) -> u16 {
        let url = format!("{url}/write?db={db}&precision=ms");
        self.rt.block_on(async {
            let resp = reqwest::Client::new()
                .post(url)
                .body(line.to_owned())
                .send()
                .await
                .expect("influxd answers");
            resp.status().as_u16()
        })
    }
}

/// The real XRP-ETH 1m candles as candle points, with the optional fields filled from them
/// (quote volume, an integer trade count, vwap) so that every field type travels, plus one
/// indicator point per candle carrying its log return (none for the first: an empty point).
fn real_points() -> (Vec<CandlePoint>, Vec<IndicatorPoint>) {
    let candles =
        candlepipe_testkit::fixtures::read_candles(&testdata("real-ohlcv/XRP-ETH.parquet"));
    assert!(
        candles.len() > 2000,
        "fixture has {} candles",
        candles.len()
    );
    let symbol: Arc<str> = Arc::from(candles[0].symbol.as_str());
    let mut points = Vec::new();
    let mut indicators = Vec::new();
    let mut previous_close: Option<f64> = None;
    for (i, c) in candles.iter().enumerate() {
        points.push(CandlePoint {
            symbol: symbol.clone(),
            source: Source::Replay,
            interval: Interval::M1,
            time: c.open_time,
            open: c.open,
            high: c.high,
            low: c.low,
            close: c.close,
            volume: c.volume,
            quote_volume: Some(c.close * c.volume),
            trades: Some(i as u64 * 7 + 1),
            taker_buy_base: Some(c.volume / 3.0),
            taker_buy_quote: None,
            vwap: (c.volume > 0.0).then(|| (c.high + c.low + c.close) / 3.0),
        });
        indicators.push(IndicatorPoint {
            symbol: symbol.clone(),
            source: Some(Source::Replay),
            time: c.open_time,
            log_return: previous_close.map(|p| (c.close / p).ln()),
            ..IndicatorPoint::default()
        });
        previous_close = Some(c.close);
    }
    (points, indicators)
}

fn all_points(candles: &[CandlePoint], indicators: &[IndicatorPoint]) -> Vec<Point> {
    candles
        .iter()
        .cloned()
        .map(Point::Candle)
        .chain(indicators.iter().cloned().map(Point::Indicator))
        .collect()
}

fn rows_by_time(influxd: &Influxd, db: &str, q: &str) -> BTreeMap<i64, Row> {
    let rows = influxd.rows(db, q);
    let n = rows.len();
    let by_time: BTreeMap<i64, Row> = rows
        .into_iter()
        .map(|r| (r["time"].as_i64().expect("epoch ms"), r))
        .collect();
    assert_eq!(by_time.len(), n, "two rows share a timestamp in {q}");
    by_time
}

/// Asserts a stored float field is bit-for-bit the written value (absent when `None`).
fn assert_float(row: &Row, field: &str, want: Option<f64>) {
    let got = row.get(field).filter(|v| !v.is_null());
    match (got, want) {
        (None, None) => {}
        (Some(v), Some(w)) => {
            let v = v
                .as_f64()
                .unwrap_or_else(|| panic!("{field} = {v} is not a number"));
            assert_eq!(
                v.to_bits(),
                w.to_bits(),
                "{field}: stored {v:e}, wrote {w:e}"
            );
        }
        (got, want) => panic!("{field}: stored {got:?}, wrote {want:?}"),
    }
}

fn assert_candle_row(row: &Row, p: &CandlePoint) {
    assert_eq!(row["symbol"], p.symbol.as_ref());
    assert_eq!(row["interval"], p.interval.as_str());
    assert_eq!(row["source"], p.source.as_str());
    for (field, value) in [
        ("open", Some(p.open)),
        ("high", Some(p.high)),
        ("low", Some(p.low)),
        ("close", Some(p.close)),
        ("volume", Some(p.volume)),
        ("quote_volume", p.quote_volume),
        ("taker_buy_base", p.taker_buy_base),
        ("taker_buy_quote", p.taker_buy_quote),
        ("vwap", p.vwap),
    ] {
        assert_float(row, field, value);
    }
    assert_eq!(row["trades"].as_i64(), p.trades.map(|t| t as i64));
}

/// `SHOW FIELD KEYS`: field name → InfluxDB type.
fn field_types(influxd: &Influxd, db: &str, measurement: &str) -> BTreeMap<String, String> {
    influxd
        .rows(db, &format!("SHOW FIELD KEYS FROM \"{measurement}\""))
        .into_iter()
        .map(|r| {
            (
                r["fieldKey"].as_str().unwrap().to_owned(),
                r["fieldType"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn count(influxd: &Influxd, db: &str, q: &str) -> i64 {
    influxd
        .rows(db, q)
        .first()
        .map(|r| r["count"].as_i64().unwrap())
        .unwrap_or(0)
}

fn databases(influxd: &Influxd) -> BTreeSet<String> {
    influxd
        .rows("", "SHOW DATABASES")
        .into_iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn prepare_creates_the_database_once() {
    let influxd = Influxd::shared();
    let db = unique("prepare");
    assert!(!databases(influxd).contains(&db));
    let h = Harness::new(v1_config(influxd, &db));
    h.prepare();
    assert!(databases(influxd).contains(&db));
    // Idempotent: a restarted consumer prepares again.
    h.prepare();
    assert!(databases(influxd).contains(&db));
    assert!(h.rt.block_on(h.sink.ping()));
}

#[test]
fn prepare_refuses_a_missing_retention_policy() {
    let influxd = Influxd::shared();
    let db = unique("rp");
    let h = Harness::new(InfluxConfig {
        retention_policy: Some("nonexistent".into()),
        ..v1_config(influxd, &db)
    });
    match h.rt.block_on(h.sink.prepare(&h.stop)) {
        Err(SinkError::Fatal(why)) => assert!(why.contains("nonexistent"), "{why}"),
        other => panic!("expected a fatal error, got {other:?}"),
    }
}

#[test]
fn real_candles_and_indicators_read_back_exactly() {
    let influxd = Influxd::shared();
    let db = unique("roundtrip");
    let h = Harness::new(InfluxConfig {
        batch_points: 700, // several requests, the last one partial
        ..v1_config(influxd, &db)
    });
    h.prepare();
    let (candles, indicators) = real_points();
    let points = all_points(&candles, &indicators);
    let outcome = h.write(&points);
    assert_eq!(outcome.rejected, []);
    assert_eq!(outcome.empty, 1, "the first indicator point has no field");
    assert_eq!(outcome.written, points.len() - 1);

    let stored = rows_by_time(influxd, &db, "SELECT * FROM candle");
    assert_eq!(stored.len(), candles.len());
    for p in &candles {
        assert_candle_row(&stored[&p.time], p);
    }
    let stored = rows_by_time(influxd, &db, "SELECT * FROM indicator");
    assert_eq!(stored.len(), indicators.len() - 1);
    for p in &indicators[1..] {
        let row = &stored[&p.time];
        assert_eq!(row["symbol"], p.symbol.as_ref());
        assert_eq!(row["interval"], "1m");
        assert_eq!(row["source"], "replay");
        assert_float(row, "log_return", p.log_return);
    }

    let types = field_types(influxd, &db, "candle");
    assert_eq!(types["trades"], "integer");
    assert!(
        types.iter().all(|(k, t)| k == "trades" || t == "float"),
        "{types:?}"
    );
    assert_eq!(h.points_written("candle"), candles.len() as u64);
    assert_eq!(h.points_written("indicator"), indicators.len() as u64 - 1);
    assert_eq!(h.retries(), 0);
}

#[test]
fn writing_the_same_points_again_changes_nothing() {
    let influxd = Influxd::shared();
    let db = unique("idempotent");
    let h = Harness::new(v1_config(influxd, &db));
    h.prepare();
    let (candles, indicators) = real_points();
    let points = all_points(&candles[..600], &indicators[..600]);
    let q = "SELECT * FROM candle, indicator GROUP BY *";

    let first = h.write(&points);
    let after_first = influxd.query(&db, q);
    let second = h.write(&points);
    let after_second = influxd.query(&db, q);

    assert_eq!(first, second);
    assert_eq!(after_first, after_second);
    assert_eq!(count(influxd, &db, "SELECT count(close) FROM candle"), 600);
    assert_eq!(
        count(influxd, &db, "SELECT count(log_return) FROM indicator"),
        599
    );
}

#[test]
fn hostile_tag_values_stay_inside_their_tag() {
    let influxd = Influxd::shared();
    let db = unique("escaping");
    let h = Harness::new(v1_config(influxd, &db));
    h.prepare();
    let representable = [
        "A B",
        "A,B",
        "A=B",
        "A\"B",
        r"A\B",
        r#"x y,z=w\v"q"#,
        "candle,symbol=evil open=1",
        "ünïcødé-€",
        "'single'",
    ];
    let refused = [
        "X\nhack,symbol=Y open=1 1",
        "tab\tbed",
        r"trailing\",
        r"a\,b",
    ];
    let (base, _) = real_points();
    let points: Vec<Point> = representable
        .iter()
        .chain(refused.iter())
        .enumerate()
        .map(|(i, symbol)| {
            Point::Candle(CandlePoint {
                symbol: Arc::from(*symbol),
                open: i as f64,
                ..base[0].clone()
            })
        })
        .collect();
    let outcome = h.write(&points);
    assert_eq!(outcome.written, representable.len());
    let rejected: Vec<usize> = outcome.rejected.iter().map(|r| r.index).collect();
    assert_eq!(
        rejected,
        (representable.len()..points.len()).collect::<Vec<_>>()
    );
    assert!(outcome
        .rejected
        .iter()
        .all(|r| r.error.contains("tag symbol")));

    // One series and one point per representable symbol, each with its own value; nothing else.
    let series = influxd.rows(&db, "SHOW SERIES");
    assert_eq!(series.len(), representable.len(), "{series:?}");
    let measurements = influxd.rows(&db, "SHOW MEASUREMENTS");
    assert_eq!(measurements.len(), 1, "{measurements:?}");
    let stored: BTreeMap<String, f64> = influxd
        .rows(&db, "SELECT open, symbol FROM candle")
        .into_iter()
        .map(|r| {
            (
                r["symbol"].as_str().unwrap().to_owned(),
                r["open"].as_f64().unwrap(),
            )
        })
        .collect();
    let expected: BTreeMap<String, f64> = representable
        .iter()
        .enumerate()
        .map(|(i, s)| (s.to_string(), i as f64))
        .collect();
    assert_eq!(stored, expected);
}

#[test]
fn a_field_type_conflict_rejects_exactly_the_conflicting_points() {
    // One gzipped request, and many plain ones: a rejected request is unpacked from its
    // body again, and its lines must keep their index in the batch.
    for (gzip, batch_points) in [(true, 5000), (false, 64)] {
        field_type_conflict(gzip, batch_points);
    }
}

fn field_type_conflict(gzip: bool, batch_points: usize) {
    let influxd = Influxd::shared();
    let db = unique("conflict");
    let h = Harness::new(InfluxConfig {
        gzip,
        batch_points,
        ..v1_config(influxd, &db)
    });
    h.prepare();
    let (candles, _) = real_points();
    // InfluxDB 1.x fixes a field's type per shard (7 days for the default policy). The first
    // 400 candles fall in one shard, where `trades` is made a float below; the last 400 are
    // in a later shard and unaffected.
    let first_week = &candles[..400];
    let later: Vec<CandlePoint> = candles[..400]
        .iter()
        .map(|c| CandlePoint {
            time: c.time + 30 * 86_400_000,
            ..c.clone()
        })
        .collect();
    let spoiler = format!(
        "candle,interval=1m,source=replay,symbol=SPOILER trades=1.5 {}",
        first_week[0].time
    );
    assert_eq!(
        h.raw_write(&influxd.url, &db, &spoiler),
        204,
        "seeding the float field"
    );

    // In the first week, every third candle has no trade count and so cannot conflict.
    let points: Vec<Point> = first_week
        .iter()
        .enumerate()
        .map(|(i, c)| CandlePoint {
            trades: if i % 3 == 0 { None } else { c.trades },
            ..c.clone()
        })
        .chain(later.iter().cloned())
        .map(Point::Candle)
        .collect();
    let outcome = h.write(&points);

    let conflicting: Vec<usize> = (0..400).filter(|i| i % 3 != 0).collect();
    let rejected: Vec<usize> = outcome.rejected.iter().map(|r| r.index).collect();
    assert_eq!(rejected, conflicting);
    assert!(
        outcome
            .rejected
            .iter()
            .all(|r| r.error.contains("field type conflict") && r.line.contains("trades=")),
        "{:?}",
        &outcome.rejected[..1]
    );
    assert_eq!(outcome.written, points.len() - conflicting.len());

    let stored = rows_by_time(
        influxd,
        &db,
        "SELECT * FROM candle WHERE symbol = 'XRP-ETH'",
    );
    assert_eq!(stored.len(), outcome.written);
    for (i, p) in points.iter().enumerate() {
        let Point::Candle(p) = p else { unreachable!() };
        match stored.get(&p.time) {
            Some(row) if !conflicting.contains(&i) => {
                assert_float(row, "open", Some(p.open));
                assert_float(row, "close", Some(p.close));
            }
            None if conflicting.contains(&i) => {}
            other => panic!("point {i} stored as {other:?}"),
        }
    }
    assert!(h.errors("client") > 0);
}

#[test]
fn a_write_waits_out_a_stopped_influxd_and_completes_after_restart() {
    let mut influxd = Influxd::start();
    let db = unique("restart");
    let h = Harness::new(v1_config(&influxd, &db));
    h.prepare();
    let (candles, indicators) = real_points();
    let points = all_points(&candles[..1000], &indicators[..1000]);

    influxd.stop();
    assert!(!h.rt.block_on(h.sink.ping()));

    // While InfluxDB is down, a shutdown ends the retrying with `Stopped`.
    let (trigger, stop) = shutdown::channel();
    let sink = h.sink.clone();
    let few = points[..10].to_vec();
    let stopped = h.rt.spawn(async move { sink.write(&few, &stop).await });
    wait_until(Duration::from_secs(30), "a failed write attempt", || {
        h.retries() >= 1
    });
    trigger.fire();
    assert!(matches!(
        h.rt.block_on(stopped).unwrap(),
        Err(SinkError::Stopped)
    ));

    // Otherwise it keeps retrying until the server is back.
    let sink = h.sink.clone();
    let stop = h.stop.clone();
    let owned = points.clone();
    let write = h.rt.spawn(async move { sink.write(&owned, &stop).await });
    let retries = h.retries();
    wait_until(Duration::from_secs(30), "the write to retry", || {
        h.retries() >= retries + 3
    });
    assert!(
        !write.is_finished(),
        "a write finished while influxd was down"
    );
    influxd.restart();
    wait_until(Duration::from_secs(60), "the write to complete", || {
        write.is_finished()
    });
    let outcome = h.rt.block_on(write).unwrap().expect("write after restart");
    assert_eq!(outcome.written, points.len() - 1);
    assert_eq!(outcome.rejected, []);
    assert_eq!(
        count(&influxd, &db, "SELECT count(close) FROM candle"),
        1000
    );
    assert_eq!(
        count(&influxd, &db, "SELECT count(log_return) FROM indicator"),
        999
    );
    assert!(h.errors("connect") >= 3);
}

/// ~100k candle points in one call, the batch loop's worst case: all of them must land.
/// Prints the throughput (no assertion on time).
#[test]
fn a_large_batch_is_written_completely() {
    let influxd = Influxd::shared();
    let db = unique("bulk");
    let h = Harness::new(v1_config(influxd, &db));
    h.prepare();
    let (candles, _) = real_points();
    let symbols: Vec<Arc<str>> = (0..40).map(|i| Arc::from(format!("SYM{i}-ETH"))).collect();
    let points: Vec<Point> = symbols
        .iter()
        .flat_map(|s| {
            candles.iter().map(|c| {
                Point::Candle(CandlePoint {
                    symbol: s.clone(),
                    ..c.clone()
                })
            })
        })
        .collect();
    assert!(points.len() >= 95_000, "{}", points.len());
    let started = Instant::now();
    let outcome = h.write(&points);
    let elapsed = started.elapsed();
    assert_eq!(outcome.written, points.len());
    eprintln!(
        "wrote {} candle points in {elapsed:?}: {:.0} points/s (batch {} points, gzip {})",
        points.len(),
        points.len() as f64 / elapsed.as_secs_f64(),
        h.sink.config().batch_points,
        h.sink.config().gzip
    );
    assert_eq!(
        count(influxd, &db, "SELECT count(close) FROM candle"),
        points.len() as i64
    );
}
