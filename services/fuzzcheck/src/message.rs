//! The Kafka message property: what `codec::decode` promises about any bytes it is given.
//!
//! The consumer decodes every message value it reads, and a message value is whatever some
//! producer (or some person with a Kafka tool) put on the topic. So the decoder must never
//! panic, and a candle it accepts must be one the rest of the pipeline may trust:
//!
//! 1. it passes `validate` (the codec's "a decoded candle is always valid" promise);
//! 2. it is what the bytes say: a generic JSON reading (serde_json's `Value` for each v1
//!    key, with the contract's defaults: optional fields absent or `null` are `None`,
//!    `closed` defaults to true; unknown keys skipped) finds the same value in every field,
//!    floats bit for bit. This is what catches a fast hand-written decoder that reads a
//!    number or an escape differently, accepts bytes that are not one JSON object, or picks
//!    one of two values given for the same key (JSON leaves that open: other readers of the
//!    topic could see another candle);
//! 3. it survives the trip through the topic: `encode` accepts it, and decoding that
//!    encoding gives the identical candle (bit for bit, `-0.0` stays `-0.0`) stamped with the
//!    `produced_at` the encoder was given; encoding that again gives the same bytes.
//!
//! And the other way round: a message is refused only when a plain JSON reading does not
//! find a valid v1 candle in it either (or it is over the size limit), since a wrongly
//! refused candle is lost to the dead-letter topic. A refusal carries an error with a known
//! `kind` (the metrics label) and a non-empty text (the DLQ `error` header).

use candlepipe_model::codec::{self, DecodeError};
use candlepipe_model::validate::validate;
use candlepipe_model::{Candle, Source};
use serde::de::{Deserialize, Deserializer, Error as _, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// Checks the decode property on one message value; panics with the input and the broken
/// promise when it does not hold.
pub fn check_decode(bytes: &[u8]) {
    check_decoder(bytes, codec::decode);
}

/// The property against any decoder with `codec::decode`'s contract (the tests hand it
/// deliberately broken ones to show each promise is really checked).
pub(crate) fn check_decoder(bytes: &[u8], decode: impl Fn(&[u8]) -> Result<Candle, DecodeError>) {
    let candle = match decode(bytes) {
        Ok(candle) => candle,
        Err(e) => {
            assert!(
                DecodeError::KINDS.contains(&e.kind()),
                "error kind {:?} is not in DecodeError::KINDS (input {})",
                e.kind(),
                show(bytes)
            );
            assert!(
                !e.to_string().is_empty(),
                "empty error text for {}",
                show(bytes)
            );
            if !matches!(e, DecodeError::TooLarge(_)) {
                if let Some(valid) = reference_reading(bytes)
                    .ok()
                    .filter(|c| validate(c).is_ok())
                {
                    panic!(
                        "decode refused ({e}) a message a plain JSON reading finds valid: \
                         {valid:?}\ninput {}",
                        show(bytes)
                    );
                }
            }
            return;
        }
    };

    if let Err(e) = validate(&candle) {
        panic!(
            "decode accepted an invalid candle ({e}): {candle:?}\ninput {}",
            show(bytes)
        );
    }

    match reference_reading(bytes) {
        Ok(reference) => assert_identical(
            &candle,
            &reference,
            "decode and a plain JSON reading of the same bytes disagree",
            bytes,
        ),
        Err(why) => panic!(
            "decode accepted bytes that are not a v1 JSON object ({why}): {candle:?}\ninput {}",
            show(bytes)
        ),
    }

    let stamp = candle.produced_at.unwrap_or(0);
    let mut encoded = Vec::new();
    if let Err(e) = codec::encode(&candle, stamp, &mut encoded) {
        panic!(
            "encode refused a candle decode accepted ({e}): {candle:?}\ninput {}",
            show(bytes)
        );
    }
    let again = match decode(&encoded) {
        Ok(again) => again,
        Err(e) => panic!(
            "decode refused encode's output ({e}): {}\noriginal input {}",
            show(&encoded),
            show(bytes)
        ),
    };
    let stamped = Candle {
        produced_at: Some(stamp),
        ..candle
    };
    assert_identical(
        &again,
        &stamped,
        "the candle changed on its way through encode and decode",
        bytes,
    );
    let mut re_encoded = Vec::new();
    codec::encode(&again, stamp, &mut re_encoded).expect("encode accepted this candle before");
    assert!(
        re_encoded == encoded,
        "encoding is not stable: {} then {}\ninput {}",
        show(&encoded),
        show(&re_encoded),
        show(bytes)
    );
}

/// The keys of a v1 message; any other key is ignored, whatever its value.
const V1_KEYS: [&str; 16] = [
    "v",
    "source",
    "symbol",
    "interval",
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "trades",
    "taker_buy_base",
    "taker_buy_quote",
    "closed",
    "produced_at",
];

/// The top-level object of a message, as a generic JSON reader sees it: the v1 keys as
/// `Value`s, every other key's value checked for syntax only (the contract ignores unknown
/// fields, so `1e999` there is no reason to refuse, although `Value` cannot hold it).
struct V1Object(Map<String, Value>);

impl<'de> Deserialize<'de> for V1Object {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = V1Object;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<V1Object, A::Error> {
                let mut fields = Map::new();
                while let Some(key) = map.next_key::<String>()? {
                    if !V1_KEYS.contains(&key.as_str()) {
                        map.next_value::<IgnoredAny>()?;
                    } else if fields.insert(key.clone(), map.next_value()?).is_some() {
                        // JSON leaves the meaning open; readers differ (first, last, error).
                        return Err(A::Error::custom(format!("duplicate key `{key}`")));
                    }
                }
                Ok(V1Object(fields))
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

/// The candle a generic JSON reader finds in `bytes`, by the v1 contract, or why there is
/// none. Deliberately knows nothing of the codec's internals.
fn reference_reading(bytes: &[u8]) -> Result<Candle, String> {
    let V1Object(object) = serde_json::from_slice(bytes).map_err(|e| format!("serde_json: {e}"))?;
    let object = &object;
    if object.get("v").and_then(Value::as_u64) != Some(1) {
        return Err("`v` is not 1".into());
    }
    let text = |key: &str| {
        object
            .get(key)
            .and_then(Value::as_str)
            .ok_or(format!("`{key}` is not a string"))
    };
    let source = match text("source")? {
        "replay" => Source::Replay,
        "live" => Source::Live,
        other => return Err(format!("unknown source {other:?}")),
    };
    if text("interval")? != "1m" {
        return Err("`interval` is not 1m".into());
    }
    let float = |key: &str| required(object, key, Value::as_f64);
    let opt_float = |key: &str| optional(object, key, Value::as_f64);
    Ok(Candle {
        symbol: text("symbol")?.to_owned(),
        source,
        open_time: required(object, "open_time", Value::as_i64)?,
        open: float("open")?,
        high: float("high")?,
        low: float("low")?,
        close: float("close")?,
        volume: float("volume")?,
        quote_volume: opt_float("quote_volume")?,
        trades: optional(object, "trades", Value::as_u64)?,
        taker_buy_base: opt_float("taker_buy_base")?,
        taker_buy_quote: opt_float("taker_buy_quote")?,
        closed: optional(object, "closed", Value::as_bool)?.unwrap_or(true),
        produced_at: optional(object, "produced_at", Value::as_i64)?,
    })
}

/// A field that must be present with a value `read` understands.
fn required<T>(
    object: &Map<String, Value>,
    key: &str,
    read: impl Fn(&Value) -> Option<T>,
) -> Result<T, String> {
    optional(object, key, read)?.ok_or(format!("`{key}` is missing"))
}

/// A field that may be absent or `null`; otherwise `read` must understand it.
fn optional<T>(
    object: &Map<String, Value>,
    key: &str,
    read: impl Fn(&Value) -> Option<T>,
) -> Result<Option<T>, String> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => read(v)
            .map(Some)
            .ok_or(format!("`{key}` has the wrong type: {v}")),
    }
}

/// Panics unless `got` and `want` are the same candle with the same float bits.
fn assert_identical(got: &Candle, want: &Candle, what: &str, input: &[u8]) {
    assert!(
        got == want && float_bits(got) == float_bits(want),
        "{what}:\n   got {got:?}\n  want {want:?}\ninput {}",
        show(input)
    );
}

/// Every float of a candle as its bits: `==` on `f64` cannot tell `-0.0` from `0.0`.
fn float_bits(c: &Candle) -> [Option<u64>; 8] {
    let bits = |v: f64| Some(v.to_bits());
    [
        bits(c.open),
        bits(c.high),
        bits(c.low),
        bits(c.close),
        bits(c.volume),
        c.quote_volume.map(f64::to_bits),
        c.taker_buy_base.map(f64::to_bits),
        c.taker_buy_quote.map(f64::to_bits),
    ]
}

/// Input bytes for a failure message: the text when it is UTF-8, and always the hex.
pub(crate) fn show(bytes: &[u8]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    match std::str::from_utf8(bytes) {
        Ok(text) => format!("{text:?} (hex {hex})"),
        Err(_) => format!("hex {hex}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the producer writes: the codec's own encoding of a typical candle.
    fn encoded() -> Vec<u8> {
        let mut c = Candle::ohlcv(
            "BTC-USDT",
            Source::Replay,
            1_614_556_800_000,
            45134.11,
            45200.0,
            45100.0,
            45150.5,
            -0.0,
        );
        c.quote_volume = Some(5571234.2);
        c.trades = Some(1523);
        let mut out = Vec::new();
        codec::encode(&c, 1_732_250_000_123, &mut out).unwrap();
        out
    }

    #[test]
    fn the_real_codec_holds_on_valid_and_invalid_messages() {
        check_decode(&encoded());
        check_decode(b"");
        check_decode(b"{\"v\":2}");
        check_decode(&[0xff, 0xfe]);
    }

    #[test]
    #[should_panic(expected = "plain JSON reading")]
    fn a_decoder_that_loses_the_sign_of_zero_is_caught() {
        check_decoder(&encoded(), |b| {
            codec::decode(b).map(|mut c| {
                c.volume = c.volume.abs();
                c
            })
        });
    }

    #[test]
    #[should_panic(expected = "not a v1 JSON object")]
    fn a_decoder_that_ignores_trailing_bytes_is_caught() {
        let mut lenient = encoded();
        lenient.extend_from_slice(b"}garbage");
        check_decoder(&lenient, |b| codec::decode(&b[..b.len() - 8]));
    }

    #[test]
    #[should_panic(expected = "invalid candle")]
    fn a_decoder_that_skips_validation_is_caught() {
        check_decoder(b"{}", |_| {
            Ok(Candle::ohlcv(
                "BTC USDT",
                Source::Live,
                0,
                1.0,
                1.0,
                1.0,
                1.0,
                1.0,
            ))
        });
    }

    #[test]
    #[should_panic(expected = "changed on its way")]
    fn a_decoder_that_drops_a_field_it_was_sent_is_caught() {
        // Reads the first message right, but loses `trades` whenever produced_at is stamped 0,
        // as it is on the way back through encode.
        let message = br#"{"v":1,"source":"live","symbol":"A","interval":"1m","open_time":946684800000,"open":1,"high":1,"low":1,"close":1,"volume":1,"trades":3}"#;
        check_decoder(message, |b| {
            codec::decode(b).map(|mut c| {
                if c.produced_at == Some(0) {
                    c.trades = None;
                }
                c
            })
        });
    }

    #[test]
    fn an_unknown_field_may_hold_any_json_number() {
        let message = br#"{"v":1,"source":"live","symbol":"A","interval":"1m","open_time":946684800000,"open":1,"high":1,"low":1,"close":1,"volume":1,"later":1e999}"#;
        assert!(codec::decode(message).is_ok());
        check_decode(message);
    }

    #[test]
    #[should_panic(expected = "duplicate key `volume`")]
    fn a_decoder_that_accepts_a_duplicate_key_is_caught() {
        let message = br#"{"v":1,"source":"live","symbol":"A","interval":"1m","open_time":946684800000,"open":1,"high":1,"low":1,"close":1,"volume":1,"volume":2}"#;
        check_decoder(message, |b| {
            let text = std::str::from_utf8(b)
                .unwrap()
                .replace(r#","volume":2"#, "");
            codec::decode(text.as_bytes())
        });
    }

    #[test]
    #[should_panic(expected = "decode refused")]
    fn a_decoder_that_refuses_a_valid_message_is_caught() {
        check_decoder(&encoded(), |_| Err(DecodeError::Empty));
    }

    #[test]
    fn failure_messages_show_text_and_hex() {
        assert_eq!(show(b"{}"), "\"{}\" (hex 7b7d)");
        assert_eq!(show(&[0xff]), "hex ff");
    }
}
