//! Grafana's expansion of a query before it sends it: template variables (`$symbol`) and
//! its own macros (`$timeFilter`, `$__interval`, `$__rate_interval`) replaced the way
//! Grafana replaces them, so a test can run the exact text a panel would send, and
//! [`template_refs`] finds what is left.

use super::dashboard::{Dashboard, DashboardError, PanelQuery, CANDLE_INTERVAL_VAR};
use std::ops::Range;

/// What [`expand_promql`] puts for `$__rate_interval` and `$__interval`: one minute holds
/// twelve 5 s scrapes, enough for `rate()` to have data everywhere.
pub const PROMQL_RATE_INTERVAL: &str = "1m";
/// What [`expand_promql`] puts for `$__range` (`$__range_s`, `$__range_ms` accordingly).
pub const PROMQL_RANGE: &str = "1h";
const PROMQL_RANGE_MS: i64 = 3_600_000;

/// The smallest `$__interval` Grafana uses for InfluxQL panels: the InfluxDB datasource's
/// `timeInterval` (candles are minutely, a finer bucket only adds empty ones).
pub const INFLUXQL_MIN_INTERVAL_MS: i64 = 60_000;
/// The number of points Grafana aims for when it picks `$__interval` (about a panel's
/// width in pixels).
pub const MAX_DATA_POINTS: i64 = 1_000;

/// A template variable or macro reference in a query: `$name`, `${name}`,
/// `${name:format}` or the old `[[name]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateRef {
    /// `symbol`, `timeFilter`, `__interval`, ...
    pub name: String,
    /// Where the whole reference sits in the text.
    pub range: Range<usize>,
}

/// Every template reference in `text`, in order. Names are the longest run of letters,
/// digits and `_` (so `$__interval_ms` is not `$__interval`), as in Grafana.
pub fn template_refs(text: &str) -> Vec<TemplateRef> {
    let bytes = text.as_bytes();
    let word_end = |from: usize| {
        let mut i = from;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
            i += 1;
        }
        i
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let found = match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'{') => text[i + 2..].find('}').and_then(|len| {
                let inner = &text[i + 2..i + 2 + len];
                let name = inner.split([':', '.']).next().unwrap_or_default();
                (!name.is_empty() && word_end(i + 2) == i + 2 + name.len())
                    .then(|| (name.to_owned(), i + 3 + len))
            }),
            b'$' => {
                let end = word_end(i + 1);
                (end > i + 1).then(|| (text[i + 1..end].to_owned(), end))
            }
            b'[' if text[i..].starts_with("[[") => text[i + 2..].find("]]").and_then(|len| {
                let inner = &text[i + 2..i + 2 + len];
                let name = inner.split(':').next().unwrap_or_default();
                (!name.is_empty() && word_end(i + 2) == i + 2 + name.len())
                    .then(|| (name.to_owned(), i + 4 + len))
            }),
            _ => None,
        };
        match found {
            Some((name, end)) => {
                out.push(TemplateRef {
                    name,
                    range: i..end,
                });
                i = end;
            }
            None => i += 1,
        }
    }
    out
}

/// Replaces every reference `resolve` knows; leaves the others as written.
fn expand(text: &str, resolve: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len() + 32);
    let mut last = 0;
    for r in template_refs(text) {
        if let Some(value) = resolve(&r.name) {
            out.push_str(&text[last..r.range.start]);
            out.push_str(&value);
            last = r.range.end;
        }
    }
    out.push_str(&text[last..]);
    out
}

/// An InfluxQL query as Grafana would send it for this symbol, candle interval, source and
/// time range (Unix ms, both ends included):
///
/// * `$timeFilter` → `time >= {from_ms}ms and time <= {to_ms}ms` (Grafana's own spelling);
/// * `$__interval` → [`influxql_interval`]`(from_ms, to_ms)`, `$__interval_ms` in ms;
/// * `$__from` / `$__to` → `from_ms` / `to_ms`;
/// * `$symbol`, `$candle_interval`, `$source` → the values, with `\` and `'` escaped because
///   the dashboards put them inside single-quoted InfluxQL strings.
///
/// Any other reference stays as written (see [`template_refs`] to find it).
pub fn expand_influxql(
    query: &str,
    symbol: &str,
    interval: &str,
    source: &str,
    from_ms: i64,
    to_ms: i64,
) -> String {
    expand(query, |name| match name {
        "timeFilter" => Some(format!("time >= {from_ms}ms and time <= {to_ms}ms")),
        "__interval" => Some(influxql_interval(from_ms, to_ms)),
        "__interval_ms" => Some(influxql_interval_ms(from_ms, to_ms).to_string()),
        "__from" => Some(from_ms.to_string()),
        "__to" => Some(to_ms.to_string()),
        "symbol" => Some(influxql_string_escape(symbol)),
        CANDLE_INTERVAL_VAR => Some(influxql_string_escape(interval)),
        "source" => Some(influxql_string_escape(source)),
        _ => None,
    })
}

/// One InfluxQL panel query with its variables and macros replaced, as Grafana sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpandedInfluxQL {
    /// `dashboard / panel`, plus `[candle_interval X]` for a per-interval query.
    pub what: String,
    pub query: String,
}

/// Every InfluxQL panel query of `d` as Grafana would send it for this symbol, source and
/// time range: a query that reads `$candle_interval` once per value in `intervals`, the
/// others once (with the first value). Identical texts are sent once.
pub fn influxql_variants(
    d: &Dashboard,
    symbol: &str,
    intervals: &[String],
    source: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<ExpandedInfluxQL>, DashboardError> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for q in d.queries()? {
        let PanelQuery::InfluxQL { panel_title, query } = q else {
            continue;
        };
        let per_interval = template_refs(&query)
            .iter()
            .any(|r| r.name == CANDLE_INTERVAL_VAR);
        let values = if per_interval {
            intervals
        } else {
            &intervals[..intervals.len().min(1)]
        };
        for interval in values {
            let text = expand_influxql(&query, symbol, interval, source, from_ms, to_ms);
            if !seen.insert(text.clone()) {
                continue;
            }
            let what = if per_interval {
                format!(
                    "{} / {panel_title} [{CANDLE_INTERVAL_VAR} {interval}]",
                    d.title
                )
            } else {
                format!("{} / {panel_title}", d.title)
            };
            out.push(ExpandedInfluxQL { what, query: text });
        }
    }
    Ok(out)
}

/// A PromQL expression as Grafana would send it: `$__rate_interval` and `$__interval` →
/// [`PROMQL_RATE_INTERVAL`], `$__range` → [`PROMQL_RANGE`] (`$__range_s`, `$__range_ms`,
/// `$__interval_ms` as numbers). Any other reference stays as written.
pub fn expand_promql(expr: &str) -> String {
    expand(expr, |name| match name {
        "__rate_interval" | "__interval" => Some(PROMQL_RATE_INTERVAL.to_owned()),
        "__interval_ms" => Some(duration_ms(PROMQL_RATE_INTERVAL).to_string()),
        "__range" => Some(PROMQL_RANGE.to_owned()),
        "__range_s" => Some((PROMQL_RANGE_MS / 1000).to_string()),
        "__range_ms" => Some(PROMQL_RANGE_MS.to_string()),
        _ => None,
    })
}

/// The `$__interval` Grafana picks for an InfluxQL panel over `[from_ms, to_ms]`: the range
/// divided by [`MAX_DATA_POINTS`], rounded up the way Grafana rounds intervals (1m, 2m, 5m,
/// 10m, 15m, 20m, 30m, 1h, 2h, 3h, 6h, 12h, 1d, 7d, 30d, 365d) and never below
/// [`INFLUXQL_MIN_INTERVAL_MS`]. Always a valid InfluxQL duration (`5m`, `1h`, `7d`).
pub fn influxql_interval(from_ms: i64, to_ms: i64) -> String {
    let ms = influxql_interval_ms(from_ms, to_ms);
    for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000)] {
        if ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

fn influxql_interval_ms(from_ms: i64, to_ms: i64) -> i64 {
    const MINUTE: i64 = 60_000;
    const HOUR: i64 = 60 * MINUTE;
    const DAY: i64 = 24 * HOUR;
    // (below this raw interval, use this one), after Grafana's kbn.roundInterval
    const LADDER: [(i64, i64); 15] = [
        (90_000, MINUTE),
        (210_000, 2 * MINUTE),
        (450_000, 5 * MINUTE),
        (750_000, 10 * MINUTE),
        (1_050_000, 15 * MINUTE),
        (1_500_000, 20 * MINUTE),
        (2_700_000, 30 * MINUTE),
        (5_400_000, HOUR),
        (9_000_000, 2 * HOUR),
        (16_200_000, 3 * HOUR),
        (30_600_000, 6 * HOUR),
        (86_400_000, 12 * HOUR),
        (604_800_000, DAY),
        (1_814_400_000, 7 * DAY),
        (3_628_800_000, 30 * DAY),
    ];
    let raw = (to_ms - from_ms).max(0) / MAX_DATA_POINTS;
    let rounded = LADDER
        .iter()
        .find(|(below, _)| raw < *below)
        .map_or(365 * DAY, |(_, interval)| *interval);
    rounded.max(INFLUXQL_MIN_INTERVAL_MS)
}

/// Milliseconds of a simple duration such as `1m`, `30s`, `1h` (the constants above).
fn duration_ms(d: &str) -> i64 {
    let (n, unit) = d.split_at(d.len() - 1);
    let n: i64 = n.parse().expect("a constant duration");
    n * match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => unreachable!("constant durations use s, m or h"),
    }
}

fn influxql_string_escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\'', "\\'")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_reference_form_with_its_longest_name() {
        let text =
            "a $symbol b ${candle_interval} c ${source:raw} d [[old]] e $__interval_ms f $__interval";
        let refs = template_refs(text);
        let names: Vec<&str> = refs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "symbol",
                "candle_interval",
                "source",
                "old",
                "__interval_ms",
                "__interval"
            ]
        );
        assert_eq!(&text[refs[2].range.clone()], "${source:raw}");
        assert_eq!(&text[refs[3].range.clone()], "[[old]]");
    }

    #[test]
    fn a_dollar_without_a_name_is_not_a_reference() {
        assert!(template_refs("x =~ /^BTC$/ and $ and ${} and [[]]").is_empty());
    }

    #[test]
    fn influxql_expansion_matches_grafanas_spelling() {
        let q = "SELECT last(\"close\") FROM \"candle\" WHERE \"symbol\" = '$symbol' AND \
                 \"interval\" = '${candle_interval}' AND \"source\" = '$source' AND $timeFilter \
                 GROUP BY time($__interval) fill(null)";
        // 6 hours → 21.6 s raw, below Grafana's 1m minimum for this datasource
        let from = 1_700_000_000_000;
        let to = from + 6 * 3_600_000;
        assert_eq!(
            expand_influxql(q, "BTC-USDT", "5m", "replay", from, to),
            "SELECT last(\"close\") FROM \"candle\" WHERE \"symbol\" = 'BTC-USDT' AND \
             \"interval\" = '5m' AND \"source\" = 'replay' AND \
             time >= 1700000000000ms and time <= 1700021600000ms \
             GROUP BY time(1m) fill(null)"
        );
    }

    #[test]
    fn influxql_values_are_escaped_for_single_quoted_strings() {
        let q = r#"WHERE "symbol" = '$symbol'"#;
        assert_eq!(
            expand_influxql(q, r"O'B\X", "1m", "live", 0, 1),
            r#"WHERE "symbol" = 'O\'B\\X'"#
        );
    }

    #[test]
    fn unknown_references_are_left_for_the_caller_to_find() {
        let out = expand_influxql(
            "SELECT $nope FROM x WHERE $timeFilter",
            "A",
            "1m",
            "s",
            0,
            1,
        );
        assert_eq!(out, "SELECT $nope FROM x WHERE time >= 0ms and time <= 1ms");
        let left: Vec<String> = template_refs(&out).into_iter().map(|r| r.name).collect();
        assert_eq!(left, ["nope"]);
    }

    #[test]
    fn interval_follows_the_range_and_never_drops_below_a_minute() {
        let h = 3_600_000;
        assert_eq!(influxql_interval(0, h), "1m");
        assert_eq!(influxql_interval(0, 24 * h), "1m"); // 86.4 s
        assert_eq!(influxql_interval(0, 48 * h), "2m"); // 172.8 s
        assert_eq!(influxql_interval(0, 7 * 24 * h), "10m"); // 604.8 s
        assert_eq!(influxql_interval(0, 30 * 24 * h), "30m"); // 2592 s
        assert_eq!(influxql_interval(0, 400 * 24 * h), "12h"); // 34560 s
        assert_eq!(influxql_interval(5, 5), "1m");
    }

    #[test]
    fn promql_macros_become_fixed_windows() {
        assert_eq!(
            expand_promql("sum(rate(x_total[$__rate_interval])) / $__range_s + y[$__range]"),
            "sum(rate(x_total[1m])) / 3600 + y[1h]"
        );
        assert_eq!(expand_promql("up"), "up");
    }
}
