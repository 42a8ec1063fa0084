//! The Kafka message value: JSON, schema version 1.
//!
//! ```json
//! {"v":1,"source":"replay","symbol":"BTC-USDT","interval":"1m","open_time":1614556800000,
//!  "open":45134.11,"high":45200.0,"low":45100.0,"close":45150.5,"volume":123.4,
//!  "quote_volume":5571234.2,"trades":1523,"taker_buy_base":60.1,"taker_buy_quote":2712345.3,
//!  "closed":true,"produced_at":1732250000123}
//! ```
//!
//! JSON keeps the topic readable with any Kafka tool and lets other languages join in; the
//! cost is kept low by encoding by hand (shortest round-trip floats via `ryu`, no
//! intermediate `Value`) and decoding into a borrowed struct (no `String` per field).
//! Optional fields may be absent or `null`; unknown fields are ignored so a newer producer
//! can add fields without breaking an older consumer. [`decode`] also validates, so a
//! decoded candle is always one the rest of the pipeline may trust.

use crate::candle::{Candle, Source};
use crate::validate::{validate, InvalidCandle};
use serde::Deserialize;
use std::borrow::Cow;
use thiserror::Error;

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u64 = 1;
/// Largest message value the decoder looks at. A v1 candle is about 350 bytes.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;

/// Why a message value is not a usable candle. The `Display` text is the DLQ `error` header.
#[derive(Debug, Error)]
pub enum DecodeError {
    #[error("empty payload")]
    Empty,
    #[error("payload is {0} bytes, larger than the {MAX_MESSAGE_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("malformed JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unsupported schema version {0} (this build reads v{SCHEMA_VERSION})")]
    UnsupportedVersion(u64),
    #[error("unknown source {0:?} (expected \"replay\" or \"live\")")]
    UnknownSource(String),
    #[error("unsupported interval {0:?} (messages carry 1m candles)")]
    UnsupportedInterval(String),
    #[error("invalid candle: {0}")]
    Invalid(#[from] InvalidCandle),
}

impl DecodeError {
    /// Every value [`DecodeError::kind`] can take (metrics pre-create one series each).
    pub const KINDS: [&'static str; 7] = [
        "empty",
        "too_large",
        "malformed_json",
        "unsupported_version",
        "unknown_source",
        "unsupported_interval",
        "invalid_candle",
    ];

    /// A short, fixed label for metrics (`reason` label): bounded cardinality.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::Empty => "empty",
            DecodeError::TooLarge(_) => "too_large",
            DecodeError::Json(_) => "malformed_json",
            DecodeError::UnsupportedVersion(_) => "unsupported_version",
            DecodeError::UnknownSource(_) => "unknown_source",
            DecodeError::UnsupportedInterval(_) => "unsupported_interval",
            DecodeError::Invalid(_) => "invalid_candle",
        }
    }
}

#[derive(Deserialize)]
struct Wire<'a> {
    v: u64,
    #[serde(borrow)]
    source: Cow<'a, str>,
    #[serde(borrow)]
    symbol: Cow<'a, str>,
    #[serde(borrow)]
    interval: Cow<'a, str>,
    open_time: i64,
    open: f64,
    high: f64,
    low: f64,
    close: f64,
    volume: f64,
    #[serde(default)]
    quote_volume: Option<f64>,
    #[serde(default)]
    trades: Option<u64>,
    #[serde(default)]
    taker_buy_base: Option<f64>,
    #[serde(default)]
    taker_buy_quote: Option<f64>,
    #[serde(default)]
    closed: Option<bool>,
    #[serde(default)]
    produced_at: Option<i64>,
}

#[derive(Deserialize)]
struct VersionOnly {
    v: Option<u64>,
}

/// Decodes and validates one message value.
pub fn decode(payload: &[u8]) -> Result<Candle, DecodeError> {
    if payload.is_empty() {
        return Err(DecodeError::Empty);
    }
    if payload.len() > MAX_MESSAGE_BYTES {
        return Err(DecodeError::TooLarge(payload.len()));
    }
    let wire: Wire = match serde_json::from_slice(payload) {
        Ok(w) => w,
        Err(e) => {
            // A future schema may not parse as v1 at all: say "version", not "missing field".
            if let Ok(VersionOnly { v: Some(v) }) = serde_json::from_slice(payload) {
                if v != SCHEMA_VERSION {
                    return Err(DecodeError::UnsupportedVersion(v));
                }
            }
            return Err(DecodeError::Json(e));
        }
    };
    if wire.v != SCHEMA_VERSION {
        return Err(DecodeError::UnsupportedVersion(wire.v));
    }
    let source: Source = wire
        .source
        .parse()
        .map_err(|_| DecodeError::UnknownSource(wire.source.clone().into_owned()))?;
    if wire.interval != "1m" {
        return Err(DecodeError::UnsupportedInterval(wire.interval.into_owned()));
    }
    let candle = Candle {
        symbol: wire.symbol.into_owned(),
        source,
        open_time: wire.open_time,
        open: wire.open,
        high: wire.high,
        low: wire.low,
        close: wire.close,
        volume: wire.volume,
        quote_volume: wire.quote_volume,
        trades: wire.trades,
        taker_buy_base: wire.taker_buy_base,
        taker_buy_quote: wire.taker_buy_quote,
        closed: wire.closed.unwrap_or(true),
        produced_at: wire.produced_at,
    };
    validate(&candle)?;
    Ok(candle)
}

/// Appends the JSON v1 encoding of `c` to `out`, stamping `produced_at`.
///
/// The candle must be valid (finite numbers, a safe symbol): sources validate before they
/// encode, and an invalid candle is an error here rather than malformed JSON on the topic.
pub fn encode(c: &Candle, produced_at: i64, out: &mut Vec<u8>) -> Result<(), InvalidCandle> {
    validate(c)?;
    let mut ints = itoa::Buffer::new();
    let mut floats = ryu::Buffer::new();
    out.extend_from_slice(b"{\"v\":1,\"source\":\"");
    out.extend_from_slice(c.source.as_str().as_bytes());
    out.extend_from_slice(b"\",\"symbol\":\"");
    // validate() guarantees the charset needs no JSON escaping.
    out.extend_from_slice(c.symbol.as_bytes());
    out.extend_from_slice(b"\",\"interval\":\"1m\",\"open_time\":");
    out.extend_from_slice(ints.format(c.open_time).as_bytes());
    let mut float = |out: &mut Vec<u8>, key: &[u8], v: f64| {
        out.extend_from_slice(key);
        out.extend_from_slice(floats.format_finite(v).as_bytes());
    };
    float(out, b",\"open\":", c.open);
    float(out, b",\"high\":", c.high);
    float(out, b",\"low\":", c.low);
    float(out, b",\"close\":", c.close);
    float(out, b",\"volume\":", c.volume);
    if let Some(v) = c.quote_volume {
        float(out, b",\"quote_volume\":", v);
    }
    if let Some(t) = c.trades {
        out.extend_from_slice(b",\"trades\":");
        out.extend_from_slice(ints.format(t).as_bytes());
    }
    if let Some(v) = c.taker_buy_base {
        float(out, b",\"taker_buy_base\":", v);
    }
    if let Some(v) = c.taker_buy_quote {
        float(out, b",\"taker_buy_quote\":", v);
    }
    out.extend_from_slice(if c.closed {
        b",\"closed\":true,\"produced_at\":"
    } else {
        b",\"closed\":false,\"produced_at\":"
    });
    out.extend_from_slice(ints.format(produced_at).as_bytes());
    out.push(b'}');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EXAMPLE: &str = r#"{"v":1,"source":"replay","symbol":"BTC-USDT","interval":"1m",
 "open_time":1614556800000,"open":45134.11,"high":45200.0,"low":45100.0,"close":45150.5,
 "volume":123.4,"quote_volume":5571234.2,"trades":1523,
 "taker_buy_base":60.1,"taker_buy_quote":2712345.3,
 "closed":true,"produced_at":1732250000123}"#;

    #[test]
    fn decodes_the_documented_example() {
        let c = decode(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(c.symbol, "BTC-USDT");
        assert_eq!(c.source, Source::Replay);
        assert_eq!(c.open_time, 1_614_556_800_000);
        assert_eq!(c.open, 45134.11);
        assert_eq!(c.trades, Some(1523));
        assert_eq!(c.taker_buy_quote, Some(2712345.3));
        assert_eq!(c.produced_at, Some(1_732_250_000_123));
        assert!(c.closed);
    }

    #[test]
    fn encode_then_decode_is_identity() {
        let mut c = decode(EXAMPLE.as_bytes()).unwrap();
        c.produced_at = Some(7);
        let mut buf = Vec::new();
        encode(&c, 7, &mut buf).unwrap();
        // The encoding is plain JSON that serde_json accepts too.
        let _: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(decode(&buf).unwrap(), c);
    }

    #[test]
    fn optional_fields_may_be_absent_or_null() {
        let min = r#"{"v":1,"source":"live","symbol":"BTC-USD","interval":"1m","open_time":1614556800000,"open":1,"high":2,"low":0.5,"close":1.5,"volume":0,"quote_volume":null,"closed":false}"#;
        let c = decode(min.as_bytes()).unwrap();
        assert_eq!(c.quote_volume, None);
        assert_eq!(c.trades, None);
        assert!(!c.closed);
        let mut buf = Vec::new();
        encode(&c, 1, &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(
            !text.contains("quote_volume"),
            "absent stays absent: {text}"
        );
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let cases = [
            ("", "empty payload"),
            ("{", "malformed JSON"),
            (r#"{"v":2,"x":1}"#, "unsupported schema version 2"),
            (
                &EXAMPLE.replace("\"v\":1", "\"v\":3"),
                "unsupported schema version 3",
            ),
            (
                &EXAMPLE.replace("\"open\":45134.11,", ""),
                "missing field `open`",
            ),
            (
                &EXAMPLE.replace("45134.11", "\"NaN\""),
                "invalid type: string",
            ),
            (
                &EXAMPLE.replace("\"replay\"", "\"kraken\""),
                "unknown source \"kraken\"",
            ),
            (
                &EXAMPLE.replace("\"1m\"", "\"5m\""),
                "unsupported interval \"5m\"",
            ),
            (
                &EXAMPLE.replace("1523", "-4"),
                "invalid value: integer `-4`",
            ),
            (&EXAMPLE.replace("123.4", "-123.4"), "`volume` is negative"),
            (
                &EXAMPLE.replace("45200.0", "45000.0"),
                "high 45000 is below low 45100",
            ),
        ];
        for (payload, expected) in cases {
            let err = decode(payload.as_bytes()).unwrap_err().to_string();
            assert!(
                err.contains(expected),
                "{err:?} should contain {expected:?}"
            );
        }
        let big = vec![b' '; MAX_MESSAGE_BYTES + 1];
        assert!(matches!(decode(&big), Err(DecodeError::TooLarge(_))));
    }

    #[test]
    fn every_kind_is_listed() {
        let errors = [
            DecodeError::Empty,
            DecodeError::TooLarge(1),
            DecodeError::Json(serde_json::from_str::<u8>("x").unwrap_err()),
            DecodeError::UnsupportedVersion(2),
            DecodeError::UnknownSource("x".into()),
            DecodeError::UnsupportedInterval("5m".into()),
            DecodeError::Invalid(InvalidCandle::EmptySymbol),
        ];
        let kinds: Vec<&str> = errors.iter().map(DecodeError::kind).collect();
        assert_eq!(kinds, DecodeError::KINDS);
    }

    #[test]
    fn encode_refuses_an_invalid_candle() {
        let mut c = decode(EXAMPLE.as_bytes()).unwrap();
        c.close = f64::NAN;
        assert!(encode(&c, 0, &mut Vec::new()).is_err());
    }

    proptest! {
        #[test]
        fn any_valid_candle_round_trips(
            minute in 0i64..1_000_000,
            low in 1e-9f64..1e9,
            spread in 0f64..1e6,
            o in 0f64..=1.0, cl in 0f64..=1.0,
            volume in 0f64..1e12,
            trades in proptest::option::of(0u64..u64::MAX),
            qv in proptest::option::of(0f64..1e15),
            closed in any::<bool>(),
        ) {
            let high = low + spread;
            let c = Candle {
                symbol: "ETH-USDT".into(), source: Source::Live,
                open_time: crate::validate::MIN_OPEN_TIME_MS + minute * 60_000,
                open: (low + o * spread).min(high), high, low, close: (low + cl * spread).min(high),
                volume, quote_volume: qv, trades, taker_buy_base: None, taker_buy_quote: qv,
                closed, produced_at: Some(42),
            };
            let mut buf = Vec::new();
            encode(&c, 42, &mut buf).unwrap();
            prop_assert_eq!(decode(&buf).unwrap(), c);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
        }
    }
}
