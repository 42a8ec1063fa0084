//! Reading Yahoo's chart JSON into per-minute bars, keeping exactly what the live source
//! needs and nothing Yahoo did not say.
//!
//! A 1m chart answer looks like this (trimmed):
//!
//! ```json
//! {"chart":{"result":[{
//!    "meta":{"symbol":"BTC-USD","regularMarketTime":1732250047,"dataGranularity":"1m",…},
//!    "timestamp":[1732249920,1732249980,1732250040],
//!    "indicators":{"quote":[{"open":[97000.5,null,97010.0],"high":[…],"low":[…],
//!                            "close":[…],"volume":[1200000,null,0]}]}}],
//!  "error":null}}
//! ```
//!
//! * `timestamp[i]` (Unix seconds) and the five arrays line up index by index; a response
//!   whose arrays do not line up is malformed, never guessed at.
//! * A row whose open/high/low/close has a `null` is a minute Yahoo has no data for: a gap.
//!   It becomes no bar at all (never zeros). Minutes Yahoo leaves out are gaps too.
//! * A row with prices but a `null` volume is kept with `volume: None`; the feed decides.
//! * `meta.regularMarketTime` is Yahoo's clock (the last trade). The live source needs it to
//!   tell closed minutes from the one in progress, which is why this module reads the raw
//!   JSON itself (yfinance-rs' `HistoryBuilder` drops it; see the `live` module docs).
//! * Yahoo sometimes sends the latest trade as an extra row stamped with the trade's own
//!   second (e.g. `…:47`) next to the row of its minute. Rows are floored to the minute and
//!   rows of the same minute merged the way Python yfinance merges that "live" row
//!   (`_fix_Yahoo_returning_live_separate`): first open, highest high, lowest low, last
//!   close, volumes added. An exact duplicate timestamp keeps the later row.
//! * `meta.dataGranularity` other than `1m` (Yahoo coarsens silently when asked for too
//!   much) is an error: 5-minute bars must never be published as 1-minute candles.

use candlepipe_model::candle::MINUTE_MS;
use serde::Deserialize;
use thiserror::Error;

/// One minute of a Yahoo chart, prices all present.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Bar {
    /// Minute open time, Unix ms, minute aligned.
    pub open_time: i64,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    /// `None` when Yahoo sent `null` for the volume of a minute that has prices.
    pub volume: Option<f64>,
}

/// A parsed chart answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Chart {
    /// Bars in ascending minute order, one per minute at most.
    pub bars: Vec<Bar>,
    /// Yahoo's clock as far as the answer tells it (Unix ms): the later of
    /// `meta.regularMarketTime` and the newest row's timestamp. `None` if it tells neither.
    pub market_time: Option<i64>,
    /// Rows that were gaps (`null` prices).
    pub null_rows: usize,
}

/// Why a chart answer cannot be used. The text names the field that is wrong.
#[derive(Debug, Error)]
pub(crate) enum ChartError {
    #[error("malformed JSON: {0}")]
    Json(serde_json::Error),
    #[error("Yahoo answered with an error: {code}: {description}")]
    Api { code: String, description: String },
    #[error("no `chart.result[0]` and no `chart.error`")]
    NoResult,
    #[error("`{field}` has {got} entries but `timestamp` has {want}")]
    Misaligned {
        field: &'static str,
        got: usize,
        want: usize,
    },
    #[error("`indicators.quote[0].{0}` is missing although `timestamp` has entries")]
    MissingArray(&'static str),
    #[error("`meta.dataGranularity` is {0:?}, not 1m")]
    Granularity(String),
}

#[derive(Deserialize)]
struct Envelope {
    chart: Option<ChartNode>,
}

#[derive(Deserialize)]
struct ChartNode {
    #[serde(default)]
    result: Option<Vec<ResultNode>>,
    #[serde(default)]
    error: Option<ErrorNode>,
}

#[derive(Deserialize)]
struct ErrorNode {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Deserialize)]
struct ResultNode {
    #[serde(default)]
    meta: Meta,
    #[serde(default)]
    timestamp: Option<Vec<i64>>,
    #[serde(default)]
    indicators: Option<Indicators>,
}

#[derive(Deserialize, Default)]
struct Meta {
    #[serde(default, rename = "regularMarketTime")]
    regular_market_time: Option<i64>,
    #[serde(default, rename = "dataGranularity")]
    data_granularity: Option<String>,
}

#[derive(Deserialize)]
struct Indicators {
    #[serde(default)]
    quote: Vec<QuoteNode>,
}

/// Numbers or nulls; volumes are read as `f64` so a fractional volume is not an error.
#[derive(Deserialize)]
struct QuoteNode {
    #[serde(default)]
    open: Option<Vec<Option<f64>>>,
    #[serde(default)]
    high: Option<Vec<Option<f64>>>,
    #[serde(default)]
    low: Option<Vec<Option<f64>>>,
    #[serde(default)]
    close: Option<Vec<Option<f64>>>,
    #[serde(default)]
    volume: Option<Vec<Option<f64>>>,
}

/// Parses one chart response body.
pub(crate) fn parse_chart(body: &[u8]) -> Result<Chart, ChartError> {
    let env: Envelope = serde_json::from_slice(body).map_err(ChartError::Json)?;
    let node = env.chart.ok_or(ChartError::NoResult)?;
    if let Some(e) = node.error {
        return Err(ChartError::Api {
            code: e.code.unwrap_or_default(),
            description: e.description.unwrap_or_default(),
        });
    }
    let result = node
        .result
        .and_then(|r| r.into_iter().next())
        .ok_or(ChartError::NoResult)?;
    if let Some(g) = result
        .meta
        .data_granularity
        .filter(|g| !g.trim().is_empty())
    {
        if g.trim() != "1m" {
            return Err(ChartError::Granularity(g));
        }
    }
    let timestamps = result.timestamp.unwrap_or_default();
    let newest_row = timestamps.iter().max().map(|t| t * 1000);
    let market_time = match (
        result.meta.regular_market_time.map(|t| t * 1000),
        newest_row,
    ) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    if timestamps.is_empty() {
        return Ok(Chart {
            market_time,
            ..Chart::default()
        });
    }
    let quote = result
        .indicators
        .and_then(|i| i.quote.into_iter().next())
        .ok_or(ChartError::MissingArray("open"))?;
    let n = timestamps.len();
    let column = |field: &'static str, v: Option<Vec<Option<f64>>>| {
        let v = v.ok_or(ChartError::MissingArray(field))?;
        if v.len() != n {
            return Err(ChartError::Misaligned {
                field,
                got: v.len(),
                want: n,
            });
        }
        Ok(v)
    };
    let open = column("open", quote.open)?;
    let high = column("high", quote.high)?;
    let low = column("low", quote.low)?;
    let close = column("close", quote.close)?;
    let volume = column("volume", quote.volume)?;

    let mut rows: Vec<(i64, Bar)> = Vec::with_capacity(n);
    let mut null_rows = 0;
    for i in 0..n {
        let (Some(o), Some(h), Some(l), Some(c)) = (open[i], high[i], low[i], close[i]) else {
            null_rows += 1;
            continue;
        };
        let t = timestamps[i] * 1000;
        let bar = Bar {
            open_time: t.div_euclid(MINUTE_MS) * MINUTE_MS,
            open: o,
            high: h,
            low: l,
            close: c,
            volume: volume[i],
        };
        rows.push((t, bar));
    }
    rows.sort_by_key(|(t, _)| *t); // stable: equal timestamps keep Yahoo's order
    let mut bars: Vec<Bar> = Vec::with_capacity(rows.len());
    let mut last_t = i64::MIN;
    for (t, bar) in rows {
        match bars.last_mut() {
            Some(prev) if t == last_t => *prev = bar,
            Some(prev) if prev.open_time == bar.open_time => merge_live_row(prev, &bar),
            _ => bars.push(bar),
        }
        last_t = t;
    }
    Ok(Chart {
        bars,
        market_time,
        null_rows,
    })
}

/// Folds a later row of the same minute into `into` (Yahoo's separate "live" row).
fn merge_live_row(into: &mut Bar, later: &Bar) {
    into.high = into.high.max(later.high);
    into.low = into.low.min(later.low);
    into.close = later.close;
    into.volume = match (into.volume, later.volume) {
        (Some(a), Some(b)) => Some(a + b),
        (a, b) => a.or(b),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_732_249_920; // a minute boundary, seconds

    fn body(ts: &str, o: &str, h: &str, l: &str, c: &str, v: &str, meta: &str) -> Vec<u8> {
        format!(
            r#"{{"chart":{{"result":[{{"meta":{{{meta}}},"timestamp":[{ts}],
               "indicators":{{"quote":[{{"open":[{o}],"high":[{h}],"low":[{l}],"close":[{c}],"volume":[{v}]}}]}}}}],"error":null}}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn nulls_are_gaps_and_values_are_kept_exactly() {
        let ts = format!("{},{},{}", T, T + 60, T + 120);
        let b = body(
            &ts,
            "0.001413,null,0.001416",
            "0.001416,null,0.001417",
            "0.001413,null,0.001416",
            "0.001414,null,0.001417",
            "1482,null,522.5",
            r#""regularMarketTime":1732250047,"dataGranularity":"1m""#,
        );
        let chart = parse_chart(&b).unwrap();
        assert_eq!(chart.null_rows, 1);
        assert_eq!(chart.bars.len(), 2);
        assert_eq!(chart.bars[0].open_time, T * 1000);
        assert_eq!(chart.bars[0].open, 0.001413);
        assert_eq!(chart.bars[0].volume, Some(1482.0));
        assert_eq!(chart.bars[1].open_time, (T + 120) * 1000);
        assert_eq!(
            chart.bars[1].volume,
            Some(522.5),
            "fractional volumes are fine"
        );
        assert_eq!(chart.market_time, Some(1_732_250_047_000));
    }

    #[test]
    fn null_volume_with_prices_is_kept_as_unknown() {
        let b = body(&T.to_string(), "1", "2", "0.5", "1.5", "null", "");
        let chart = parse_chart(&b).unwrap();
        assert_eq!(chart.bars[0].volume, None);
        assert_eq!(
            chart.market_time,
            Some(T * 1000),
            "the newest row tells the time"
        );
    }

    #[test]
    fn a_separate_live_row_is_merged_into_its_minute() {
        let ts = format!("{},{},{}", T, T + 60, T + 107);
        let b = body(
            &ts,
            "1,2,2.5",
            "1,3,4",
            "1,1.5,2.2",
            "1,2.5,2.4",
            "10,20,5",
            "",
        );
        let chart = parse_chart(&b).unwrap();
        assert_eq!(chart.bars.len(), 2);
        let live = &chart.bars[1];
        assert_eq!(live.open_time, (T + 60) * 1000);
        assert_eq!(
            (live.open, live.high, live.low, live.close),
            (2.0, 4.0, 1.5, 2.4)
        );
        assert_eq!(live.volume, Some(25.0));
        assert_eq!(chart.market_time, Some((T + 107) * 1000));
    }

    #[test]
    fn duplicate_timestamps_keep_the_later_row_and_order_is_restored() {
        let ts = format!("{},{},{}", T + 60, T, T + 60);
        let b = body(&ts, "2,1,3", "2,1,3", "2,1,3", "2,1,3", "1,1,1", "");
        let chart = parse_chart(&b).unwrap();
        let opens: Vec<f64> = chart.bars.iter().map(|b| b.open).collect();
        assert_eq!(opens, vec![1.0, 3.0]);
    }

    #[test]
    fn empty_windows_have_no_bars_but_still_tell_the_time() {
        let b = br#"{"chart":{"result":[{"meta":{"regularMarketTime":1732250047},"indicators":{"quote":[{}]}}],"error":null}}"#;
        let chart = parse_chart(b).unwrap();
        assert!(chart.bars.is_empty());
        assert_eq!(chart.market_time, Some(1_732_250_047_000));
    }

    #[test]
    fn every_kind_of_garbage_is_an_error_that_names_it() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"{\"chart\":{\"result\":[{".to_vec(), "malformed JSON"),
            (b"<html>429</html>".to_vec(), "malformed JSON"),
            (b"{}".to_vec(), "chart.result"),
            (
                br#"{"chart":{"result":null,"error":{"code":"Not Found","description":"No data found, symbol may be delisted"}}}"#.to_vec(),
                "Not Found: No data found",
            ),
            (body(&T.to_string(), "1", "1", "1", "1,2", "1", ""), "`close` has 2 entries but `timestamp` has 1"),
            (
                format!(r#"{{"chart":{{"result":[{{"timestamp":[{T}],"indicators":{{"quote":[{{"open":[1],"high":[1],"low":[1],"close":[1]}}]}}}}]}}}}"#).into_bytes(),
                "quote[0].volume` is missing",
            ),
            (body(&T.to_string(), "1", "1", "1", "1", "1", r#""dataGranularity":"5m""#), "\"5m\", not 1m"),
            (body(&T.to_string(), "\"x\"", "1", "1", "1", "1", ""), "malformed JSON"),
        ];
        for (b, want) in cases {
            let err = parse_chart(&b).expect_err(want).to_string();
            assert!(err.contains(want), "{err:?} should mention {want:?}");
        }
    }
}
