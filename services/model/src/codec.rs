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
//! intermediate `Value`). Optional fields may be absent or `null`; unknown fields are
//! ignored so a newer producer can add fields without breaking an older consumer.
//! [`decode`] also validates, so a decoded candle is always one the rest of the pipeline
//! may trust.
//!
//! Decoding is the first thing the consumer does with every message, so it has two paths.
//! Messages laid out exactly as [`encode`] writes them (all of candlepipe's own) are read
//! by a small exact-shape reader, `as_encoded`: byte comparisons for the keys, SWAR digit
//! parsing and correctly rounded floats, about a third of serde's cost. Anything else (other
//! key order, whitespace, `null`, unknown fields, any malformed input) falls back to serde,
//! which is the reference: the fast path only ever accepts what serde accepts, with the same
//! values bit for bit, and every error message comes from serde or the validator. Tests
//! compare the two on random, extreme and mutated messages.

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
    Json(serde_json::Error),
    #[error("unsupported schema version {0} (this build reads v{SCHEMA_VERSION})")]
    UnsupportedVersion(u64),
    #[error("unknown source {0:?} (expected \"replay\" or \"live\")")]
    UnknownSource(String),
    #[error("unsupported interval {0:?} (messages carry 1m candles)")]
    UnsupportedInterval(String),
    #[error("invalid candle: {0}")]
    Invalid(InvalidCandle),
}

// The wrapped errors are part of the message, so they are not also a `source()`: a cause
// chain printed with `{:#}` shows each once. Hence plain `From`s, not thiserror's `#[from]`.
impl From<serde_json::Error> for DecodeError {
    fn from(e: serde_json::Error) -> Self {
        DecodeError::Json(e)
    }
}

impl From<InvalidCandle> for DecodeError {
    fn from(e: InvalidCandle) -> Self {
        DecodeError::Invalid(e)
    }
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
    let candle = match as_encoded::decode(payload) {
        Some(candle) => candle,
        None => decode_general(payload)?,
    };
    validate(&candle)?;
    Ok(candle)
}

/// Any JSON text serde accepts for [`Wire`]: the reference decoder, and the only one that
/// produces errors.
fn decode_general(payload: &[u8]) -> Result<Candle, DecodeError> {
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
    Ok(Candle {
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
    })
}

/// The fast path: a message laid out exactly as [`encode`] writes it (keys in that order, no
/// whitespace, no escapes, non-negative numbers), read with a few byte comparisons instead
/// of serde's generic map walk.
///
/// It only ever *accepts*: on the first byte that differs from that layout it returns
/// `None` and [`decode_general`] reads the message from the start, so anything unusual
/// (other key order, unknown fields, `null`, whitespace, escapes, negative numbers, bad
/// input of any kind) gets exactly serde's decision and error message. What it accepts,
/// serde accepts too, with the same values: the symbol is limited to the bytes the
/// validator allows (no escape can be involved), integers to 18 digits (no overflow), and
/// floats are rounded correctly, as serde's `float_roundtrip` does, so both give the same
/// bits (tests compare the two on random and mutated messages).
mod as_encoded {
    use crate::candle::{Candle, Source};

    /// Powers of ten exactly representable as `f64`.
    const POW10: [f64; 23] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
        1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
    ];

    /// Always inlined into [`super::decode`] (its one caller outside tests): as a call, the
    /// candle (~150 bytes) was built in this function's result and then copied out of it
    /// with a `memcpy` call, ~50 instructions per message in all.
    #[inline(always)]
    pub(super) fn decode(payload: &[u8]) -> Option<Candle> {
        let mut r = Reader { s: payload, i: 0 };
        r.expect(b"{\"v\":1,\"source\":\"")?;
        let source = if r.eat(b"replay\"") {
            Source::Replay
        } else if r.eat(b"live\"") {
            Source::Live
        } else {
            return None;
        };
        r.expect(b",\"symbol\":\"")?;
        let symbol = r.symbol()?;
        r.expect(b",\"interval\":\"1m\",\"open_time\":")?;
        let open_time = r.integer()?;
        r.expect(b",\"open\":")?;
        let open = r.float()?;
        r.expect(b",\"high\":")?;
        let high = r.float()?;
        r.expect(b",\"low\":")?;
        let low = r.float()?;
        r.expect(b",\"close\":")?;
        let close = r.float()?;
        r.expect(b",\"volume\":")?;
        let volume = r.float()?;
        let quote_volume = r.optional_float(b",\"quote_volume\":")?;
        let trades = if r.eat(b",\"trades\":") {
            Some(r.unsigned()?)
        } else {
            None
        };
        let taker_buy_base = r.optional_float(b",\"taker_buy_base\":")?;
        let taker_buy_quote = r.optional_float(b",\"taker_buy_quote\":")?;
        // absent means closed, as in the general path
        let closed = !r.eat(b",\"closed\":false");
        if closed {
            r.eat(b",\"closed\":true");
        }
        let produced_at = if r.eat(b",\"produced_at\":") {
            Some(r.integer()?)
        } else {
            None
        };
        r.expect(b"}")?;
        if r.i != payload.len() {
            return None;
        }
        Some(Candle {
            symbol: symbol.to_owned(),
            source,
            open_time,
            open,
            high,
            low,
            close,
            volume,
            quote_volume,
            trades,
            taker_buy_base,
            taker_buy_quote,
            closed,
            produced_at,
        })
    }

    /// Powers of ten that fit a `u64`.
    const POW10_INT: [u64; 20] = {
        let mut p = [1u64; 20];
        let mut i = 1;
        while i < 20 {
            p[i] = p[i - 1] * 10;
            i += 1;
        }
        p
    };

    /// The ASCII digits at the start of the 8 bytes of `word` (little-endian: the first
    /// byte is the lowest): (their value, how many, 0 to 8). SWAR, as in the fast_float
    /// library: no loop and no branch per digit.
    pub(super) fn leading_digits(word: u64) -> (u64, usize) {
        const ONES: u64 = 0x0101_0101_0101_0101;
        // digit bytes become their value 0..=9
        let t = word ^ (0x30 * ONES);
        // Bit 7 of a byte is set where t >= 10. Exact for every byte up to and including
        // the first non-digit (no carry comes in from a digit byte below it), which is all
        // trailing_zeros looks at.
        let non_digit = (t.wrapping_add(0x76 * ONES) | t) & (0x80 * ONES);
        let n = (non_digit.trailing_zeros() / 8) as usize;
        if n == 0 {
            return (0, 0);
        }
        // the n digits to the top bytes: the value of "000…0d1d2…dn"
        let t = t << (8 * (8 - n));
        const MASK: u64 = 0x0000_00FF_0000_00FF;
        const MUL1: u64 = 100 + (1_000_000 << 32);
        const MUL2: u64 = 1 + (10_000 << 32);
        let pairs = t.wrapping_mul(10).wrapping_add(t >> 8);
        let value = ((pairs & MASK).wrapping_mul(MUL1))
            .wrapping_add(((pairs >> 16) & MASK).wrapping_mul(MUL2))
            >> 32;
        (value, n)
    }

    /// `mantissa / 10^k` (k <= 19) rounded to the nearest `f64`, ties to even: the digits
    /// of a 16- to 19-digit decimal such as `473.51973619984733`, which Clinger's path
    /// cannot take (the mantissa is not an exact double) and which std's parser reads at
    /// about twice the cost.
    ///
    /// The quotient of the two doubles is within about an ulp of the exact value; it is
    /// then checked, and stepped to its neighbour if needed, by comparing the exact rational
    /// with the midpoints to the neighbouring doubles in 128-bit integers. `None` (std
    /// decides) where that does not apply: k > 19 (10^k would not fit 64 bits), or a value
    /// that is not a normal double.
    pub(super) fn exact_quotient(mantissa: u64, k: u32) -> Option<f64> {
        const HIDDEN: u64 = 1 << 52;
        let divisor = u128::from(*POW10_INT.get(k as usize)?);
        let mut v = mantissa as f64 / POW10[k as usize];
        for _ in 0..4 {
            let bits = v.to_bits();
            let biased = (bits >> 52) as i64; // v >= 0: no sign bit
            if biased == 0 || biased >= 0x7ff {
                return None;
            }
            let m = (bits & (HIDDEN - 1)) | HIDDEN;
            // v = m * 2^e. The midpoints to the neighbours, in units of 2^(e - 2), are
            // 4m + 2 above and 4m - 2 below, or 4m - 1 when m is a power of two (the
            // neighbour below is then in the binade below, half as far). Below 2^55, so
            // times the divisor (below 2^64) they fit 128 bits.
            let above = u128::from(4 * m + 2) * divisor;
            let below = u128::from(4 * m - if m == HIDDEN { 1 } else { 2 }) * divisor;
            // mantissa / divisor against c * 2^(e - 2): mantissa * 2^(2 - e) against
            // c * divisor (values from 2^55 up, e > 2, are left to std)
            let e = biased - 1075;
            let shift = 2 - e;
            if !(0..128).contains(&shift) {
                return None;
            }
            let x = u128::from(mantissa);
            if x.leading_zeros() < shift as u32 {
                return None;
            }
            let x = x << shift;
            let even = m.is_multiple_of(2);
            v = if x > above || (x == above && !even) {
                f64::from_bits(bits + 1)
            } else if x < below || (x == below && !even) {
                f64::from_bits(bits - 1)
            } else {
                return Some(v);
            };
        }
        None
    }

    /// A cursor over the message bytes.
    struct Reader<'a> {
        s: &'a [u8],
        i: usize,
    }

    impl<'a> Reader<'a> {
        /// Consumes `literal` if the input continues with it. Always inlined: with the
        /// literal's length known, the comparison is a few register compares instead of a
        /// call to `memcmp`.
        #[inline(always)]
        fn eat(&mut self, literal: &[u8]) -> bool {
            let matches = self.s[self.i..].starts_with(literal);
            if matches {
                self.i += literal.len();
            }
            matches
        }

        #[inline(always)]
        fn expect(&mut self, literal: &[u8]) -> Option<()> {
            self.eat(literal).then_some(())
        }

        fn peek(&self) -> Option<u8> {
            self.s.get(self.i).copied()
        }

        /// The symbol up to its closing quote, which is consumed: only the validator's
        /// charset, so the JSON string has no escape and is the symbol byte for byte.
        fn symbol(&mut self) -> Option<&'a str> {
            let start = self.i;
            let len = self.s[start..]
                .iter()
                .position(|&b| !crate::validate::is_symbol_byte(b))?;
            self.i += len;
            self.expect(b"\"")?;
            // The scan admits ASCII only, so this check cannot fail; it costs ~120
            // instructions per message (~1 % of the hot path), kept rather than an `unsafe`
            // unchecked conversion in the decoder of untrusted input.
            std::str::from_utf8(&self.s[start..start + len]).ok()
        }

        /// Consumes a run of ASCII digits: (value, digit count), the value wrapping past
        /// 19 digits (callers bound the count). Up to eight digits per step, found and
        /// converted in one 64-bit word: a 17-digit price takes three steps.
        #[inline]
        fn digits(&mut self) -> (u64, usize) {
            let start = self.i;
            let mut value = 0u64;
            while let Some(chunk) = self.s.get(self.i..self.i + 8) {
                let (chunk_value, n) =
                    leading_digits(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
                value = value.wrapping_mul(POW10_INT[n]).wrapping_add(chunk_value);
                self.i += n;
                if n < 8 {
                    return (value, self.i - start);
                }
            }
            // the last few bytes of the message
            while let Some(d @ b'0'..=b'9') = self.peek() {
                value = value.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
                self.i += 1;
            }
            (value, self.i - start)
        }

        /// A JSON integer of at most 18 digits (no sign, no leading zero), so it fits any
        /// integer field. What follows it is checked by the caller's next literal.
        fn unsigned(&mut self) -> Option<u64> {
            let first = self.peek()?;
            let (value, count) = self.digits();
            ((1..=18).contains(&count) && (first != b'0' || count == 1)).then_some(value)
        }

        fn integer(&mut self) -> Option<i64> {
            self.unsigned().map(|v| v as i64) // < 10^18 < i64::MAX
        }

        /// A non-negative JSON number as an `f64`, correctly rounded.
        fn float(&mut self) -> Option<f64> {
            let start = self.i;
            let first = self.peek()?;
            let (mut mantissa, mut digits) = self.digits();
            if digits == 0 || (first == b'0' && digits > 1) {
                return None;
            }
            let mut exponent = 0i64;
            if self.eat(b".") {
                let (fraction, fraction_digits) = self.digits();
                if fraction_digits == 0 {
                    return None;
                }
                mantissa = mantissa
                    .wrapping_mul(POW10_INT.get(fraction_digits).copied().unwrap_or(0))
                    .wrapping_add(fraction);
                digits += fraction_digits;
                exponent = -(fraction_digits as i64);
            }
            if let Some(b'e' | b'E') = self.peek() {
                self.i += 1;
                let negative = self.eat(b"-");
                if !negative {
                    self.eat(b"+");
                }
                let (e, e_digits) = self.digits();
                if !(1..=4).contains(&e_digits) {
                    return None; // no digits, or far outside f64's range: serde decides
                }
                exponent += if negative { -(e as i64) } else { e as i64 };
            }
            // The mantissa is exact with at most 19 digits.
            if digits <= 19 && (-22..=22).contains(&exponent) {
                if mantissa <= 1 << 53 {
                    // Clinger's fast path (serde and std try it first too): mantissa and
                    // power of ten are both exact doubles, so the one rounding of the
                    // product or quotient is the correct one.
                    let m = mantissa as f64;
                    return Some(if exponent < 0 {
                        m / POW10[(-exponent) as usize]
                    } else {
                        m * POW10[exponent as usize]
                    });
                }
                if exponent == 0 {
                    return Some(mantissa as f64); // the cast rounds to nearest, ties even
                }
                if exponent < 0 {
                    if let Some(v) = exact_quotient(mantissa, (-exponent) as u32) {
                        return Some(v);
                    }
                }
            }
            // Otherwise std's correctly rounded parser (Eisel-Lemire) on the same text. An
            // overflow or underflow is left to serde (it reports the former as an error).
            let text = std::str::from_utf8(&self.s[start..self.i]).ok()?;
            let value: f64 = text.parse().ok()?;
            (value.is_finite() && value != 0.0).then_some(value)
        }

        /// `Some(Some(v))` when the input continues with `key` and a number, `Some(None)`
        /// when it does not continue with `key`, `None` when the number is not one. Always
        /// inlined, like [`Reader::eat`]: with `key` a parameter of a call, comparing it was
        /// a `memcmp` call (~55 instructions per message for the three optional floats).
        #[inline(always)]
        fn optional_float(&mut self, key: &[u8]) -> Option<Option<f64>> {
            if self.eat(key) {
                self.float().map(Some)
            } else {
                Some(None)
            }
        }
    }
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

    /// The cause of a decode error shows once in `{:#}` (a message embedding its cause
    /// must not also return it as `source()`).
    #[test]
    fn decode_error_causes_print_once() {
        for payload in [&b"{not json"[..], br#"{"v":1}"#] {
            let e = decode(payload).unwrap_err();
            let own = e.to_string();
            let shown = format!("{:#}", anyhow::Error::new(e));
            assert_eq!(shown, own, "{payload:?}");
        }
        let invalid = DecodeError::from(InvalidCandle::HighBelowLow {
            high: 1.0,
            low: 2.0,
        });
        let shown = format!("{:#}", anyhow::Error::new(invalid));
        assert_eq!(shown.matches("below").count(), 1, "{shown}");
    }

    const EXAMPLE: &str = r#"{"v":1,"source":"replay","symbol":"BTC-USDT","interval":"1m",
 "open_time":1614556800000,"open":45134.11,"high":45200.0,"low":45100.0,"close":45150.5,
 "volume":123.4,"quote_volume":5571234.2,"trades":1523,
 "taker_buy_base":60.1,"taker_buy_quote":2712345.3,
 "closed":true,"produced_at":1732250000123}"#;

    /// Bytes the symbol scan refuses, multi-byte UTF-8 and invalid UTF-8 included, leave
    /// the symbol to serde, which decodes or refuses it as a whole.
    #[test]
    fn a_symbol_outside_the_charset_takes_the_general_path() {
        for (symbol, decoded) in [
            (&b"BTC-USDT"[..], Some("BTC-USDT")),
            (br"BTC\u00e9", None),
            ("BTCé".as_bytes(), None),
            (&b"BTC\xff"[..], None),
            (&b"BTC\x80\x80"[..], None),
            (&b"BTC USDT"[..], None),
        ] {
            let candle = Candle::ohlcv(
                "BTC-USDT",
                Source::Replay,
                1_614_556_800_000,
                2.0,
                3.0,
                1.0,
                2.5,
                4.0,
            );
            let mut payload = Vec::new();
            encode(&candle, 1, &mut payload).unwrap();
            let at = payload.windows(8).position(|w| w == b"BTC-USDT").unwrap();
            payload.splice(at..at + 8, symbol.iter().copied());
            let result = decode(&payload);
            assert_eq!(
                result.as_ref().ok().map(|c| c.symbol.as_str()),
                decoded,
                "{symbol:?}"
            );
            assert_eq!(
                as_encoded::decode(&payload).map(|c| c.symbol),
                decoded.map(str::to_owned),
                "{symbol:?}"
            );
        }
    }

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
            trades in proptest::option::of(0u64..=crate::validate::MAX_TRADES),
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

        /// The fast path reads every encoded candle, including extreme floats
        /// (subnormal, 17 digits, exponents), exactly as serde does.
        #[test]
        fn the_fast_path_reads_what_encode_writes_as_serde_does(
            c in any_candle(),
        ) {
            let mut buf = Vec::new();
            encode(&c, 42, &mut buf).unwrap();
            let fast = as_encoded::decode(&buf);
            prop_assert!(fast.is_some(), "{}", String::from_utf8_lossy(&buf));
            prop_assert_eq!(fast, Some(decode_general(&buf).unwrap()));
        }

        /// Whatever a message looks like, decode gives serde's answer: the same candle or
        /// the same error text, and the fast path never accepts what serde would not.
        #[test]
        fn any_mutation_gets_the_general_decoders_answer(
            c in any_candle(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..3, mutation_byte()), 1..4),
        ) {
            let mut buf = Vec::new();
            encode(&c, 42, &mut buf).unwrap();
            for (at, kind, byte) in edits {
                let i = at.index(buf.len() + 1);
                match kind {
                    0 if i < buf.len() => buf[i] = byte,
                    1 if i < buf.len() => { buf.remove(i); }
                    _ => buf.insert(i, byte),
                }
            }
            let general = decode_general(&buf);
            if let Some(fast) = as_encoded::decode(&buf) {
                prop_assert_eq!(Some(&fast), general.as_ref().ok(), "{}", String::from_utf8_lossy(&buf));
            }
            let reference = general.and_then(|c| {
                validate(&c)?;
                Ok(c)
            });
            match (decode(&buf), reference) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
                (a, b) => prop_assert!(false, "{a:?} vs {b:?} for {}", String::from_utf8_lossy(&buf)),
            }
        }
    }

    /// A non-negative f64 the validator accepts, from any bit pattern up to its cap
    /// (subnormals, huge, integers; bits of non-negative floats order like their values).
    fn any_amount() -> impl Strategy<Value = f64> {
        let cap = crate::validate::MAX_AMOUNT.to_bits();
        prop_oneof![
            (0..=cap).prop_map(f64::from_bits),
            (0u64..10_000_000_000).prop_map(|n| n as f64 / 1000.0),
            Just(0.0),
        ]
    }

    prop_compose! {
        fn any_candle()(
            symbol in "[A-Za-z0-9._-]{1,32}",
            live in any::<bool>(),
            minute in 0i64..1_000_000,
            mut prices in proptest::array::uniform4(any_amount()),
            volume in any_amount(),
            optional in proptest::array::uniform3(proptest::option::of(any_amount())),
            trades in proptest::option::of(0u64..1 << 40),
            closed in any::<bool>(),
        ) -> Candle {
            prices.sort_by(f64::total_cmp);
            let [low, open, close, high] = prices;
            Candle {
                symbol, source: if live { Source::Live } else { Source::Replay },
                open_time: crate::validate::MIN_OPEN_TIME_MS + minute * 60_000,
                open, high, low, close, volume,
                quote_volume: optional[0], trades, taker_buy_base: optional[1],
                taker_buy_quote: optional[2], closed, produced_at: Some(42),
            }
        }
    }

    /// Bytes that change a JSON number or the message's structure.
    fn mutation_byte() -> impl Strategy<Value = u8> {
        prop_oneof![
            proptest::sample::select(b"0123456789.eE+-\" ,{}[]:nulltrfas\\\t\n\x00\xff".to_vec()),
            any::<u8>(),
        ]
    }

    proptest! {
        /// The 128-bit quotient check rounds like std's parser: random 16- to 19-digit
        /// mantissas, and exact midpoints between two doubles (ties go to even).
        #[test]
        fn exact_quotient_rounds_like_std(
            mantissa in prop_oneof![1u64..10_000_000_000_000_000_000, (1u64 << 53)..(1 << 60)],
            k in 1u32..=22,
            m in (1u64 << 52)..(1 << 53),
            tie_k in 1u32..=4,
            tie_e in 0u32..4,
        ) {
            let std_value = |mantissa: u64, k: u32| format!("{mantissa}e-{k}").parse::<f64>().unwrap();
            if let Some(v) = as_encoded::exact_quotient(mantissa, k) {
                prop_assert!(k <= 19);
                prop_assert_eq!(v.to_bits(), std_value(mantissa, k).to_bits(), "{}e-{}", mantissa, k);
            }
            // (2m + 1) * 2^(e - 1) = (2m + 1) * 5^k * 2^(k + e - 1) / 10^k with e = 1 - k + tie_e
            let tie = (u128::from(2 * m + 1) * 5u128.pow(tie_k)) << tie_e;
            if let Ok(tie) = u64::try_from(tie) {
                if tie < 10_000_000_000_000_000_000 {
                    let v = as_encoded::exact_quotient(tie, tie_k);
                    // values from 2^55 up (e > 2) are left to std
                    prop_assert!(v.is_some() || tie_e + 1 > tie_k + 2);
                    if let Some(v) = v {
                        prop_assert_eq!(v.to_bits(), std_value(tie, tie_k).to_bits(), "{}e-{}", tie, tie_k);
                    }
                }
            }
        }
    }

    proptest! {
        #[test]
        fn leading_digits_match_a_byte_loop(mut bytes in any::<[u8; 8]>(), digits in any::<u64>(), n in 0usize..=8) {
            for (i, b) in bytes.iter_mut().take(n).enumerate() {
                *b = b'0' + (digits >> (4 * i)) as u8 % 10;
            }
            let count = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
            let value = bytes[..count].iter().fold(0u64, |v, b| v * 10 + u64::from(b - b'0'));
            prop_assert_eq!(as_encoded::leading_digits(u64::from_le_bytes(bytes)), (value, count));
        }
    }

    #[test]
    fn leading_digits_of_a_word() {
        for text in [
            b"00000000",
            b"12345678",
            b"99999999",
            b"90000001",
            b"1234567.",
            b"/1234567",
            b"1234:678",
            b"a2345678",
            b"1234567\xff",
            b"1,\"high\"",
            b"0}\x00\x00\x00\x00\x00\x00",
            b"\xb9\xb9\xb9\xb9\xb9\xb9\xb9\xb9",
            b"5\xff\xff\xff\xff\xff\xff\xff",
        ] {
            let n = text.iter().take_while(|b| b.is_ascii_digit()).count();
            let value = std::str::from_utf8(&text[..n])
                .unwrap()
                .parse::<u64>()
                .unwrap_or(0);
            let word = u64::from_le_bytes(*text);
            assert_eq!(as_encoded::leading_digits(word), (value, n), "{text:?}");
        }
    }

    #[test]
    fn number_spellings_read_as_serde_reads_them() {
        for number in [
            "0",
            "0.0",
            "00",
            "0.",
            ".5",
            "1e5",
            "1E+05",
            "1e-05",
            "2.5e",
            "1e400",
            "1e-400",
            "4.9e-324",
            "2.2250738585072011e-308",
            "1.7976931348623157e308",
            "1.7976931348623159e308",
            "9007199254740993",
            "9007199254740993.0",
            "123456789012345678901234567890",
            "0.30000000000000004",
            "0.1e1",
            "45134.11",
            "1e22",
            "1e23",
            "123456789e-30",
            "473.51973619984733",
            "2251799813685248.25",
            "2251799813685248.75",
            "0.1000000000000000055511151231257827",
            "-0",
            "-1.5",
            "1.5.5",
            "1e5e5",
            "+1",
            "0x10",
            "Infinity",
            "NaN",
            "1_0",
        ] {
            let msg = EXAMPLE
                .replace("\n", "")
                .replace(" ", "")
                .replace("123.4", number);
            let fast = as_encoded::decode(msg.as_bytes());
            let general = decode_general(msg.as_bytes());
            if let Some(fast) = &fast {
                assert_eq!(Some(fast), general.as_ref().ok(), "{number}");
                assert_eq!(
                    fast.volume.to_bits(),
                    general.as_ref().unwrap().volume.to_bits()
                );
            }
            match (
                decode(msg.as_bytes()),
                general.and_then(|c| {
                    validate(&c)?;
                    Ok(c)
                }),
            ) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{number}"),
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{number}"),
                (a, b) => panic!("{number}: {a:?} vs {b:?}"),
            }
        }
        // the documented example, once its line breaks are gone, takes the fast path
        let compact = EXAMPLE.replace("\n", "").replace(" ", "");
        assert_eq!(
            as_encoded::decode(compact.as_bytes()),
            Some(decode(EXAMPLE.as_bytes()).unwrap())
        );
    }
}
