//! The line protocol property: every point the consumer may write reads back as exactly that
//! point, or is refused as `lineproto`'s docs say, and never changes the shape of a batch.
//!
//! The input is a [`LineInput`], built by `arbitrary` from the fuzzer's bytes: a candle or an
//! indicator point whose symbol is assembled from hostile pieces (every line protocol
//! delimiter, backslashes, control characters, quotes, `#`, multi-byte text) and arbitrary
//! strings, whose floats are any bit pattern or one of the awkward ones (NaN, ±inf, `-0.0`,
//! the smallest subnormal, the extremes), and whose timestamp and trade count are any `i64`
//! and `u64`. The measurement, tag keys and field keys are the schema's constants: the
//! encoder's public API takes no other names, so the symbol is the one free string.
//!
//! What must hold, with the oracle `ParsedLine::expected_for` (built from the point, not
//! from the encoder) and the refusal rules as `lineproto` documents them:
//!
//! * a symbol that is empty, holds an ASCII control character, ends in a backslash or has a
//!   backslash before a backslash, `,`, `=` or space is refused with part `tag symbol`; a
//!   trade count above `i64::MAX` is refused with part `field trades`; nothing else is
//!   refused, and a refusal writes nothing;
//! * a point with no finite field is not written (`Ok(false)`, nothing written);
//! * otherwise exactly one `\n`-terminated line is appended, and `parse_line` reads it back
//!   as the expected measurement, tags, fields (floats bit for bit) and timestamp;
//! * `encode_all` on that one point agrees with `encode`.

use arbitrary::{Arbitrary, Unstructured};
use candlepipe_consumer::lineproto::{self, EncodeError};
use candlepipe_consumer::lineproto_parse::{self, FieldValue, ParsedLine};
use candlepipe_consumer::point::{CandlePoint, IndicatorPoint, Point};
use candlepipe_model::{Interval, Source};
use std::fmt;
use std::sync::Arc;

/// What the output buffer holds before `encode` is called: a refused or empty point must
/// leave it exactly like this.
const EARLIER_LINE: &[u8] = b"earlier,symbol=A v=1 1\n";

/// Checks the line protocol property on the [`LineInput`] that `arbitrary` builds from
/// `bytes` (all of them, as cargo-fuzz's typed targets do); bytes too short to build one are
/// skipped.
pub fn check_lineproto_bytes(bytes: &[u8]) {
    if let Ok(input) = LineInput::arbitrary_take_rest(Unstructured::new(bytes)) {
        check_lineproto(input);
    }
}

/// Checks the line protocol property on one point; panics with the point, the line and the
/// broken promise when it does not hold.
pub fn check_lineproto(input: LineInput) {
    check_encoder(&input.point(), lineproto::encode);
}

/// One point for the line protocol encoder.
#[derive(Clone, Arbitrary)]
pub struct LineInput {
    /// The `symbol` tag value: the one free string of a point.
    pub symbol: Text,
    /// The timestamp (Unix ms).
    pub time: i64,
    /// Which measurement, and its fields.
    pub kind: PointKind,
}

impl fmt::Debug for LineInput {
    /// The point itself: that is what a failure report needs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.point().fmt(f)
    }
}

impl LineInput {
    /// The point this input describes.
    pub fn point(&self) -> Point {
        let symbol: Arc<str> = Arc::from(self.symbol.to_string().as_str());
        match &self.kind {
            PointKind::Candle {
                source,
                interval,
                ohlcv: [open, high, low, close, volume],
                quote_volume,
                trades,
                taker_buy_base,
                taker_buy_quote,
                vwap,
            } => Point::Candle(CandlePoint {
                symbol,
                source: source.source(),
                interval: interval.interval(),
                time: self.time,
                open: open.value(),
                high: high.value(),
                low: low.value(),
                close: close.value(),
                volume: volume.value(),
                quote_volume: quote_volume.map(Float::value),
                trades: *trades,
                taker_buy_base: taker_buy_base.map(Float::value),
                taker_buy_quote: taker_buy_quote.map(Float::value),
                vwap: vwap.map(Float::value),
            }),
            PointKind::Indicator {
                source,
                interval,
                values,
                bb_mid_is_sma_20,
            } => {
                let v = |i: usize| match (i, bb_mid_is_sma_20) {
                    (7, true) => values[0].map(Float::value),
                    _ => values[i].map(Float::value),
                };
                Point::Indicator(IndicatorPoint {
                    symbol,
                    source: source.map(PointSource::source),
                    interval: interval.interval(),
                    time: self.time,
                    sma_20: v(0),
                    ema_12: v(1),
                    ema_26: v(2),
                    macd: v(3),
                    macd_signal: v(4),
                    macd_hist: v(5),
                    rsi_14: v(6),
                    bb_mid: v(7),
                    bb_upper: v(8),
                    bb_lower: v(9),
                    log_return: v(10),
                    volatility_20: v(11),
                })
            }
        }
    }
}

/// The measurement of a [`LineInput`] and its fields.
#[derive(Debug, Clone, Arbitrary)]
pub enum PointKind {
    /// A `candle` point (1m or a rollup).
    Candle {
        source: PointSource,
        interval: PointInterval,
        ohlcv: [Float; 5],
        quote_volume: Option<Float>,
        trades: Option<u64>,
        taker_buy_base: Option<Float>,
        taker_buy_quote: Option<Float>,
        vwap: Option<Float>,
    },
    /// An `indicator` point (over 1m or a rollup's closes): its twelve fields in schema order.
    Indicator {
        source: Option<PointSource>,
        interval: PointInterval,
        values: [Option<Float>; 12],
        /// In real points `bb_mid` is `sma_20` by definition (the Bollinger middle band is
        /// the 20-period mean): when set, `bb_mid` takes `sma_20`'s value, bit for bit.
        bb_mid_is_sma_20: bool,
    },
}

/// `Source`, for `arbitrary` (the model's type does not derive it).
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum PointSource {
    Replay,
    Live,
}

impl PointSource {
    fn source(self) -> Source {
        match self {
            PointSource::Replay => Source::Replay,
            PointSource::Live => Source::Live,
        }
    }
}

/// `Interval`, for `arbitrary`.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum PointInterval {
    M1,
    M5,
    M15,
    H1,
}

impl PointInterval {
    fn interval(self) -> Interval {
        match self {
            PointInterval::M1 => Interval::M1,
            PointInterval::M5 => Interval::M5,
            PointInterval::M15 => Interval::M15,
            PointInterval::H1 => Interval::H1,
        }
    }
}

/// A field value: any bit pattern, or one of the values that break naive float formatting
/// (named so the fuzzer reaches them without guessing 64 bits).
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Float {
    Bits(u64),
    Nan,
    Infinity,
    NegInfinity,
    NegZero,
    SmallestSubnormal,
    Max,
    Min,
}

impl Float {
    fn value(self) -> f64 {
        match self {
            Float::Bits(b) => f64::from_bits(b),
            Float::Nan => f64::NAN,
            Float::Infinity => f64::INFINITY,
            Float::NegInfinity => f64::NEG_INFINITY,
            Float::NegZero => -0.0,
            Float::SmallestSubnormal => f64::from_bits(1),
            Float::Max => f64::MAX,
            Float::Min => f64::MIN,
        }
    }
}

/// A string assembled from pieces, so that delimiters and escapes meet each other often.
#[derive(Debug, Clone, Arbitrary)]
pub struct Text(pub Vec<Piece>);

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|piece| piece.fmt(f))
    }
}

/// One piece of a [`Text`].
#[derive(Debug, Clone, Arbitrary)]
pub enum Piece {
    /// Any text.
    Any(String),
    /// Any character.
    Char(char),
    /// A character line protocol, JSON or a shell treats specially.
    Special(Special),
}

impl fmt::Display for Piece {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Piece::Any(s) => f.write_str(s),
            Piece::Char(c) => write!(f, "{c}"),
            Piece::Special(s) => write!(f, "{}", s.char()),
        }
    }
}

/// Characters with a meaning somewhere between a candle and InfluxDB.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Special {
    Comma,
    Equals,
    Space,
    Backslash,
    Newline,
    CarriageReturn,
    Tab,
    Nul,
    Delete,
    DoubleQuote,
    Hash,
    /// U+0085, a line break to Unicode but not to InfluxDB.
    NextLine,
    /// U+2028.
    LineSeparator,
    /// A two-byte UTF-8 character, to meet a backslash mid-sequence.
    EAcute,
}

impl Special {
    fn char(self) -> char {
        match self {
            Special::Comma => ',',
            Special::Equals => '=',
            Special::Space => ' ',
            Special::Backslash => '\\',
            Special::Newline => '\n',
            Special::CarriageReturn => '\r',
            Special::Tab => '\t',
            Special::Nul => '\0',
            Special::Delete => '\x7f',
            Special::DoubleQuote => '"',
            Special::Hash => '#',
            Special::NextLine => '\u{85}',
            Special::LineSeparator => '\u{2028}',
            Special::EAcute => 'é',
        }
    }
}

/// Whether `lineproto` documents `symbol` as impossible to carry in a tag value (from its
/// module docs: empty, a control character, a backslash at the end or before a backslash or
/// one of `,= `).
fn symbol_is_unrepresentable(symbol: &str) -> bool {
    let b = symbol.as_bytes();
    b.is_empty()
        || b.iter().any(u8::is_ascii_control)
        || b.iter().enumerate().any(|(i, &c)| {
            c == b'\\' && matches!(b.get(i + 1), None | Some(b'\\' | b',' | b'=' | b' '))
        })
}

/// Every documented refusal that applies to `point`, as (part, value) of its `EncodeError`.
/// The docs do not say which one wins when several apply, so any of them will do.
fn documented_refusals(point: &Point) -> Vec<(String, String)> {
    let (symbol, trades) = match point {
        Point::Candle(c) => (&c.symbol, c.trades),
        Point::Indicator(i) => (&i.symbol, None),
    };
    let mut refusals = Vec::new();
    if symbol_is_unrepresentable(symbol) {
        refusals.push(("tag symbol".to_owned(), symbol.to_string()));
    }
    if let Some(t) = trades.filter(|&t| i64::try_from(t).is_err()) {
        refusals.push(("field trades".to_owned(), t.to_string()));
    }
    refusals
}

/// The property against any encoder with `lineproto::encode`'s contract (the tests hand it
/// deliberately broken ones to show each promise is really checked).
pub(crate) fn check_encoder(
    point: &Point,
    encode: impl Fn(&Point, &mut Vec<u8>) -> Result<bool, EncodeError>,
) {
    let refusals = documented_refusals(point);
    let want = ParsedLine::expected_for(point);
    let mut out = EARLIER_LINE.to_vec();
    let result = encode(point, &mut out);
    let written = String::from_utf8_lossy(&out[EARLIER_LINE.len().min(out.len())..]);
    let context = || format!("point {point:?}\nwritten {written:?}");
    assert!(
        out.starts_with(EARLIER_LINE),
        "encode changed what was already in the buffer\n{}",
        context()
    );
    match &result {
        Err(e) => {
            assert!(
                refusals.contains(&(e.part.clone(), e.value.clone())),
                "refused ({e}) but the documented refusals are {refusals:?}\n{}",
                context()
            );
            assert!(
                out == EARLIER_LINE,
                "refused, yet left bytes behind\n{}",
                context()
            );
        }
        Ok(false) => {
            assert!(
                refusals.is_empty(),
                "not refused, but must be: {refusals:?}\n{}",
                context()
            );
            assert!(
                want.fields.is_empty(),
                "not written, but it has fields {:?}\n{}",
                want.fields,
                context()
            );
            assert!(
                out == EARLIER_LINE,
                "not written, yet left bytes behind\n{}",
                context()
            );
        }
        Ok(true) => {
            assert!(
                refusals.is_empty(),
                "written, but must be refused: {refusals:?}\n{}",
                context()
            );
            check_line(&out[EARLIER_LINE.len()..], point, &want, &context);
        }
    }

    let all = lineproto::encode_all(std::slice::from_ref(point));
    let agrees = match &result {
        Ok(true) => all.text == out[EARLIER_LINE.len()..] && all.lines.len() == 1,
        Ok(false) => all.text.is_empty() && all.empty == 1,
        Err(e) => all.text.is_empty() && all.unencodable == [(0, e.clone())],
    };
    assert!(
        agrees,
        "encode_all disagrees with encode ({result:?}): {all:?}\n{}",
        context()
    );
}

/// Checks one written line against the point it was meant to be.
fn check_line(line: &[u8], point: &Point, want: &ParsedLine, context: &dyn Fn() -> String) {
    let text = std::str::from_utf8(line)
        .unwrap_or_else(|e| panic!("the line is not UTF-8 ({e})\n{}", context()));
    let Some(body) = text.strip_suffix('\n') else {
        panic!("the line does not end in a newline\n{}", context());
    };
    assert!(
        !body.bytes().any(|b| b.is_ascii_control()),
        "a control character inside the line could split or corrupt the batch\n{}",
        context()
    );
    let parsed = lineproto_parse::parse_line(body)
        .unwrap_or_else(|e| panic!("the line does not parse: {e}\n{}", context()));

    // Independent of the oracle: the few facts a reader sees first.
    let (measurement, symbol, time) = match point {
        Point::Candle(c) => ("candle", &c.symbol, c.time),
        Point::Indicator(i) => ("indicator", &i.symbol, i.time),
    };
    assert!(
        parsed.measurement == measurement
            && parsed.timestamp == Some(time)
            && parsed
                .tags
                .iter()
                .any(|(k, v)| k == "symbol" && v.as_str() == &**symbol),
        "measurement, symbol or time read back wrong: {parsed:?}\n{}",
        context()
    );
    assert!(
        parsed == *want && field_bits(&parsed) == field_bits(want),
        "the line reads back as another point:\n   got {parsed:?}\n  want {want:?}\n{}",
        context()
    );
}

/// Fields with floats as bits: `==` on `f64` cannot tell `-0.0` from `0.0`.
fn field_bits(line: &ParsedLine) -> Vec<(&str, Option<u64>)> {
    line.fields
        .iter()
        .map(|(k, v)| match v {
            FieldValue::Float(x) => (k.as_str(), Some(x.to_bits())),
            _ => (k.as_str(), None),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candle(symbol: &str) -> CandlePoint {
        CandlePoint {
            symbol: Arc::from(symbol),
            source: Source::Replay,
            interval: Interval::M5,
            time: 1_614_556_800_000,
            open: 45134.11,
            high: 45200.0,
            low: 45100.0,
            close: 45150.5,
            volume: -0.0,
            quote_volume: Some(5571234.2),
            trades: Some(1523),
            taker_buy_base: Some(f64::from_bits(1)),
            taker_buy_quote: None,
            vwap: Some(f64::NAN),
        }
    }

    /// Hand-written edge cases: hostile symbols (accepted and refused), awkward floats,
    /// extreme timestamps and trade counts, an indicator point with nothing to write.
    #[test]
    fn the_real_encoder_holds_on_edge_cases() {
        let symbols = [
            "BTC-USDT",
            r#"A B,c=d"e\f"#,
            "#comment",
            "é\\é",
            "\u{85}\u{2028}",
            "",
            "X\nhack v=1 1",
            "tab\t",
            "\x7f",
            "end\\",
            "a\\\\b",
            "a\\ b",
        ];
        for symbol in symbols {
            for (time, trades) in [(i64::MIN, Some(0)), (i64::MAX, Some(u64::MAX)), (-1, None)] {
                let point = Point::Candle(CandlePoint {
                    time,
                    trades,
                    ..candle(symbol)
                });
                check_encoder(&point, lineproto::encode);
            }
            let indicator = IndicatorPoint {
                symbol: Arc::from(symbol),
                rsi_14: Some(f64::NEG_INFINITY),
                ..IndicatorPoint::default()
            };
            check_encoder(&Point::Indicator(indicator.clone()), lineproto::encode);
            let indicator = IndicatorPoint {
                source: Some(Source::Live),
                macd: Some(f64::MIN),
                ..indicator
            };
            check_encoder(&Point::Indicator(indicator), lineproto::encode);
        }
        // bb_mid next to sma_20: the same bits, equal but different bits, non-finite.
        for (sma_20, bb_mid) in [
            (Some(20.5), Some(20.5)),
            (Some(0.0), Some(-0.0)),
            (Some(-0.0), Some(0.0)),
            (Some(f64::NAN), Some(f64::NAN)),
            (Some(f64::INFINITY), Some(1.0)),
            (None, Some(1.0)),
            (Some(1.0), None),
        ] {
            let point = IndicatorPoint {
                symbol: Arc::from("ETH-USDT"),
                source: Some(Source::Replay),
                time: 1_614_556_800_000,
                sma_20,
                bb_mid,
                ..IndicatorPoint::default()
            };
            check_encoder(&Point::Indicator(point), lineproto::encode);
        }
    }

    #[test]
    fn arbitrary_bytes_of_any_length_are_checked_or_skipped() {
        for len in 0..64 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            check_lineproto_bytes(&bytes);
        }
    }

    #[test]
    fn text_joins_its_pieces() {
        let text = Text(vec![
            Piece::Any("a".into()),
            Piece::Special(Special::Backslash),
            Piece::Char('é'),
            Piece::Special(Special::Comma),
        ]);
        assert_eq!(text.to_string(), "a\\é,");
    }

    /// An encoder that forgets to escape a space in the symbol.
    fn unescaped(point: &Point, out: &mut Vec<u8>) -> Result<bool, EncodeError> {
        let mut line = Vec::new();
        let written = lineproto::encode(point, &mut line)?;
        out.extend_from_slice(
            &String::from_utf8(line)
                .unwrap()
                .replace("\\ ", " ")
                .into_bytes(),
        );
        Ok(written)
    }

    #[test]
    #[should_panic(expected = "does not parse")]
    fn an_encoder_that_does_not_escape_is_caught() {
        check_encoder(&Point::Candle(candle("A B")), unescaped);
    }

    #[test]
    #[should_panic(expected = "reads back as another point")]
    fn an_encoder_that_loses_the_sign_of_zero_is_caught() {
        check_encoder(&Point::Candle(candle("A")), |p, out| {
            let mut line = Vec::new();
            let written = lineproto::encode(p, &mut line)?;
            let text = String::from_utf8(line).unwrap();
            out.extend_from_slice(text.replace("=-0.0", "=0.0").as_bytes());
            Ok(written)
        });
    }

    #[test]
    #[should_panic(expected = "left bytes behind")]
    fn an_encoder_that_leaves_half_a_line_on_refusal_is_caught() {
        check_encoder(&Point::Candle(candle("bad\n")), |p, out| {
            out.extend_from_slice(b"candle,");
            lineproto::encode(p, out)
        });
    }

    #[test]
    #[should_panic(expected = "must be refused")]
    fn an_encoder_that_writes_a_newline_symbol_is_caught() {
        check_encoder(&Point::Candle(candle("a\nb")), |_, out| {
            out.extend_from_slice(b"candle,symbol=a\nb v=1 1\n");
            Ok(true)
        });
    }
}
