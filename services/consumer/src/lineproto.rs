//! InfluxDB line protocol: how a [`Point`] becomes one line of text.
//!
//! ```text
//! candle,interval=1m,source=replay,symbol=BTC-USDT open=45134.11,...,trades=1523i 1614556800000
//! └ measurement └ tags, sorted by key ─────────────┘ └ fields ──────────────────┘ └ time (ms)
//! ```
//!
//! The format is text with three delimiters (comma, space, `=`) and no framing other than
//! the newline, so the one thing this module must never do is let a value change the shape
//! of a line: a symbol such as `X Y` or `X,evil=1` or `X\nhack v=1` would otherwise add tags,
//! fields or whole points. Symbols are validated upstream (`A-Z a-z 0-9 . _ -`), but the
//! encoder does not rely on that:
//!
//! * Tag values: `,`, `=` and space are backslash-escaped (InfluxDB's rules). The measurement,
//!   tag keys, field keys, intervals and sources are constants of the schema made only of
//!   bytes that need no escaping (a test checks each), so they are written as they are.
//! * Control characters (newline, carriage return, tab, ...) cannot be carried at all:
//!   InfluxDB splits lines on a raw newline and has no escape for it in keys or tag values.
//!   Such a point is refused with an [`EncodeError`].
//! * A backslash is kept as a literal only where every InfluxDB parser reads it as one: not
//!   at the end of a name, not before another backslash and not before an escaped character.
//!   InfluxDB 1.x rejects `a\` (`invalid tag format`) and keeps `a\\b` as two backslashes
//!   where newer parsers read one; such values are refused rather than silently changed.
//! * Floats are written shortest-round-trip ([`zmij`], the same digits as `ryu` at a
//!   fraction of the cost): the text parses back to the same `f64`, bit for bit. Non-finite
//!   values have no line protocol spelling; that field is left out (never written as `NaN`),
//!   and a point left with no field is not written at all.
//! * `trades` is an integer field (`1523i`); tags are sorted by key, InfluxDB's preferred
//!   order; the timestamp is Unix milliseconds (the sink writes with `precision=ms`).
//!
//! Encoding is the largest share of the consumer's CPU per candle (about 2.3 lines of 10 to
//! 12 floats each, ~780 bytes), and formatting the floats is most of that, so the rest is
//! kept thin: constant names copied without a scan, the symbol checked with one table lookup
//! per byte once per run of a symbol's lines (they share its `Arc<str>`), each line written
//! in place in the batch's text, into a slice with room for the longest line (no capacity
//! check or `memcpy` call per piece, see `encode_into`), `bb_mid`'s text copied from
//! `sma_20` (the same value by definition), a candle price written a few lines earlier
//! copied from the batch's memo rather than formatted again (`FloatMemo`), and the batch's
//! text buffer reserved once at its expected size.
//!
//! `lineproto_parse.rs` (feature `test-support`) holds a small, separate parser of the same
//! grammar (InfluxDB 1.x semantics), written from the spec rather than from the encoder, so
//! that tests and the fuzz target can check that every encoded point reads back as exactly
//! the point that was meant.

use crate::point::{CandlePoint, IndicatorPoint, Point};
use std::ops::Range;

mod digits;
use digits::{copy_short, write_time};

/// Bytes escaped with a backslash in tag values (and in tag and field keys, which are all
/// constants here that contain none).
const TAG_VALUE_SPECIALS: &[u8] = b",= ";

/// Why a point cannot be written as line protocol. The sink reports such a point as rejected
/// (it goes to the dead-letter topic) instead of writing something else than was meant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{part} {value:?} cannot be written as InfluxDB line protocol: {reason}")]
pub struct EncodeError {
    /// Which part of the point: `measurement`, `tag symbol`, `field trades`, ...
    pub part: String,
    /// The offending value, as it was.
    pub value: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Appends `point` as one line (ending in `\n`) to `out`.
///
/// Returns `Ok(false)` and writes nothing when the point has no field with a value (for
/// example an indicator point before any indicator is meaningful, or one whose values are all
/// non-finite). Returns an error, and writes nothing, when a name or value cannot be carried
/// by line protocol without changing its meaning.
pub fn encode(point: &Point, out: &mut Vec<u8>) -> Result<bool, EncodeError> {
    let start = out.len();
    out.resize(start + max_line_bytes(point), 0);
    let written = encode_into(point, &mut out[start..], &mut FloatMemo::default(), false);
    out.truncate(start + *written.as_ref().unwrap_or(&0));
    written.map(|len| len > 0)
}

/// Writes `point`'s line at the start of `buf`, which has room for [`max_line_bytes`], and
/// returns its length: 0 when the point has no field to write. What it leaves in `buf`
/// after an error or past the line is garbage, for the caller to drop.
///
/// Lines are written into a slice the caller made long enough, not appended to a `Vec`:
/// a line is ~25 pieces (names, floats, separators), and appending each one to a `Vec`
/// costs a capacity check per piece and a call to `memcpy` per piece of varying length.
/// In a slice the constant names become a few stores and a float's text two fixed-size
/// copies ([`copy_short`]). [`EncodedPoints::refill`] writes each line in place in the
/// batch's text, into room zero-filled a chunk at a time (what a safe slice needs).
///
/// `memo` remembers the text of recent candle prices (see [`FloatMemo`]); `plain_symbol`
/// says the caller already found the symbol made of [`PLAIN`] bytes only (see
/// [`write_tag_value`]).
fn encode_into(
    point: &Point,
    buf: &mut [u8],
    memo: &mut FloatMemo,
    plain_symbol: bool,
) -> Result<usize, EncodeError> {
    match point {
        Point::Candle(c) => encode_candle(c, buf, memo, plain_symbol),
        Point::Indicator(i) => encode_indicator(i, buf, plain_symbol),
    }
}

/// Room for every tag of a line except the symbol's value: the longest is
/// `indicator,interval=15m,source=replay,symbol=` (44 bytes; a test checks the bound).
const MAX_TAGS_BYTES: usize = 64;

/// The most bytes `point`'s line can take: the tags, the symbol with every byte escaped,
/// and the longest fields.
fn max_line_bytes(point: &Point) -> usize {
    MAX_TAGS_BYTES + 2 * symbol_of(point).len() + MAX_FIELDS_BYTES
}

/// The value of `point`'s `symbol` tag, unescaped.
fn symbol_of(point: &Point) -> &str {
    match point {
        Point::Candle(c) => &c.symbol,
        Point::Indicator(i) => &i.symbol,
    }
}

/// The line protocol text of many points, with where each line came from.
#[derive(Debug, Default, Clone)]
pub struct EncodedPoints {
    /// Every written line, `\n`-terminated, back to back.
    pub text: Vec<u8>,
    /// One entry per line of `text`, in order.
    pub lines: Vec<EncodedLine>,
    /// Points that could not be encoded: (index in the input, why).
    pub unencodable: Vec<(usize, EncodeError)>,
    /// Points with no field to write (nothing was encoded for them).
    pub empty: usize,
}

/// One line of [`EncodedPoints::text`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedLine {
    /// Index of the point in the input slice.
    pub point: usize,
    /// Its measurement (metrics count written points per measurement without the points).
    pub measurement: &'static str,
    /// Byte range of the line in `text`, including its `\n`.
    pub span: Range<usize>,
}

impl EncodedPoints {
    /// The text of lines `lines` (a range of indices into [`EncodedPoints::lines`]): one
    /// contiguous slice, ready to be a request body.
    pub fn body(&self, lines: Range<usize>) -> &[u8] {
        if lines.is_empty() {
            return &[];
        }
        &self.text[self.lines[lines.start].span.start..self.lines[lines.end - 1].span.end]
    }

    /// The text of one line without its `\n`, for error reports.
    pub fn line_str(&self, line: usize) -> String {
        let span = &self.lines[line].span;
        String::from_utf8_lossy(&self.text[span.start..span.end - 1]).into_owned()
    }

    /// Replaces the contents with the encoding of `points` (see [`encode_all`]), reusing
    /// the buffers' memory. A batch of 10,000 candles is ~8 MB of text; a caller may keep
    /// one `EncodedPoints` and refill it per batch. (In the hot-path bench glibc already
    /// hands the freed buffer back to the next batch, so this measured no gain over
    /// [`encode_all`] there; what matters is reserving enough up front, as both do, so the
    /// text is never copied to a larger buffer mid-batch.) The consumer's sink refills one
    /// per request-sized chunk of a batch.
    pub fn refill(&mut self, points: &[Point]) {
        self.text.clear();
        self.lines.clear();
        self.unencodable.clear();
        self.empty = 0;
        self.text
            .reserve(points.len() * TYPICAL_LINE_BYTES + ROOM_CHUNK);
        self.lines.reserve(points.len());
        // Each line is written in place, right after the previous one: `text[..end]` is the
        // batch's text so far, and past it `text` keeps zero-filled room (or the garbage of
        // a line not kept) for the next line. The room is zero-filled ROOM_CHUNK bytes at a
        // time, just before lines are written into it (so while it is in cache), which is
        // what a safe slice needs; the text is truncated to its lines at the end. (Lines
        // were once written to a scratch buffer and appended from there: a `memcpy` call
        // per line, ~200 instructions per candle. Zero-filling the whole batch's room up
        // front instead touches all of its memory twice.)
        let mut end = 0;
        let mut memo = FloatMemo::batch();
        // The last symbol found plain. The aggregator emits a symbol's points together, all
        // sharing one `Arc<str>`, so most lines skip the symbol's scan: the same address
        // and length (every point is borrowed for the whole call, so that is the same
        // text) is the same, already checked, symbol. Only non-empty symbols are kept.
        let mut plain: Option<&str> = None;
        for (i, p) in points.iter().enumerate() {
            let room = max_line_bytes(p);
            if self.text.len() < end + room {
                self.text.resize(end + room.max(ROOM_CHUNK), 0);
            }
            let symbol = symbol_of(p);
            let plain_symbol = if plain.is_some_and(|known| std::ptr::eq(known, symbol)) {
                true
            } else if is_plain(symbol) {
                plain = Some(symbol);
                true
            } else {
                false
            };
            match encode_into(p, &mut self.text[end..], &mut memo, plain_symbol) {
                Ok(0) => self.empty += 1,
                Ok(len) => {
                    self.lines.push(EncodedLine {
                        point: i,
                        measurement: p.measurement(),
                        span: end..end + len,
                    });
                    end += len;
                }
                Err(e) => self.unencodable.push((i, e)),
            }
        }
        self.text.truncate(end);
    }
}

/// Bytes of line room zero-filled at a time in [`EncodedPoints::refill`] (at least one
/// line's room): about 6 lines, written while the room is in L1. Kept under glibc's
/// `rep stosb` threshold (2 KiB): larger fills measured ~10 instructions per byte of text
/// under callgrind, which counts each byte `rep stosb` stores as an instruction.
const ROOM_CHUNK: usize = 1024;

/// Bytes reserved per point up front: a full `indicator` line is ~400 bytes, a `candle`
/// line ~300 (with 17-digit prices), and a batch averages ~340. Too small an estimate costs
/// a copy of the whole text when the buffer grows.
const TYPICAL_LINE_BYTES: usize = 384;

/// Encodes every point of `points` (see [`encode`]), keeping track of which line is which
/// point so that a rejected line can be traced back to its point.
pub fn encode_all(points: &[Point]) -> EncodedPoints {
    let mut enc = EncodedPoints::default();
    enc.refill(points);
    enc
}

/// The beginning of every `candle` line, up to the `interval` tag's value. Names fixed at
/// compile time (measurements, tag keys, field keys, the interval and source spellings) are
/// written as they are: the test `constant_names_need_no_escaping` checks that each one is
/// made of [`PLAIN`] bytes only, so only the symbol is scanned per line.
const CANDLE_PREFIX: &[u8] = b"candle,interval=";
/// The beginning of every `indicator` line, up to the `interval` tag's value; then the
/// `source` tag, or for a point without a source [`SYMBOL_TAG`] directly.
const INDICATOR_PREFIX: &[u8] = b"indicator,interval=";
const SOURCE_TAG: &[u8] = b",source=";
const SYMBOL_TAG: &[u8] = b",symbol=";

/// Copies `bytes` to `buf` at `*len` and moves `*len` past them.
#[inline(always)]
fn put(buf: &mut [u8], len: &mut usize, bytes: &[u8]) {
    buf[*len..*len + bytes.len()].copy_from_slice(bytes);
    *len += bytes.len();
}

fn encode_candle(
    c: &CandlePoint,
    buf: &mut [u8],
    memo: &mut FloatMemo,
    plain_symbol: bool,
) -> Result<usize, EncodeError> {
    // Tags sorted by key: interval, source, symbol.
    let mut len = 0;
    put(buf, &mut len, CANDLE_PREFIX);
    len += copy_short(&mut buf[len..], c.interval.as_str().as_bytes());
    put(buf, &mut len, SOURCE_TAG);
    len += copy_short(&mut buf[len..], c.source.as_str().as_bytes());
    put(buf, &mut len, SYMBOL_TAG);
    len += write_tag_value(&mut buf[len..], "symbol", &c.symbol, plain_symbol)?;
    let mut fields = FieldWriter::begin(buf, len);
    // Prices repeat: a candle usually opens at the previous close, and a window's open,
    // high, low and close are its candles' values, encoded a few lines earlier.
    fields.memo_float(b"open=", c.open, memo);
    fields.memo_float(b"high=", c.high, memo);
    fields.memo_float(b"low=", c.low, memo);
    fields.memo_float(b"close=", c.close, memo);
    fields.float(b"volume=", c.volume);
    fields.opt_float(b"quote_volume=", c.quote_volume);
    if let Some(trades) = c.trades {
        fields.integer("trades", trades)?;
    }
    fields.opt_float(b"taker_buy_base=", c.taker_buy_base);
    fields.opt_float(b"taker_buy_quote=", c.taker_buy_quote);
    fields.opt_float(b"vwap=", c.vwap);
    Ok(fields.finish(c.time))
}

fn encode_indicator(
    p: &IndicatorPoint,
    buf: &mut [u8],
    plain_symbol: bool,
) -> Result<usize, EncodeError> {
    let mut len = 0;
    put(buf, &mut len, INDICATOR_PREFIX);
    len += copy_short(&mut buf[len..], p.interval.as_str().as_bytes());
    if let Some(source) = p.source {
        put(buf, &mut len, SOURCE_TAG);
        len += copy_short(&mut buf[len..], source.as_str().as_bytes());
    }
    put(buf, &mut len, SYMBOL_TAG);
    len += write_tag_value(&mut buf[len..], "symbol", &p.symbol, plain_symbol)?;
    // Schema order, as IndicatorPoint::fields lists them.
    let mut fields = FieldWriter::begin(buf, len);
    let sma_20 = p.sma_20.and_then(|v| fields.float(b"sma_20=", v));
    fields.opt_float(b"ema_12=", p.ema_12);
    fields.opt_float(b"ema_26=", p.ema_26);
    fields.opt_float(b"macd=", p.macd);
    fields.opt_float(b"macd_signal=", p.macd_signal);
    fields.opt_float(b"macd_hist=", p.macd_hist);
    fields.opt_float(b"rsi_14=", p.rsi_14);
    if let Some(bb_mid) = p.bb_mid {
        // bb_mid is sma_20 by definition: copy its text instead of formatting it again.
        fields.float_again(b"bb_mid=", bb_mid, sma_20);
    }
    fields.opt_float(b"bb_upper=", p.bb_upper);
    fields.opt_float(b"bb_lower=", p.bb_lower);
    fields.opt_float(b"log_return=", p.log_return);
    fields.opt_float(b"volatility_20=", p.volatility_20);
    Ok(fields.finish(p.time))
}

/// A float field already written in this line: its bits and where its text is.
type WrittenFloat = (u64, Range<usize>);

/// Room for the fields and timestamp of the longest line: 12 fields of a `,`, a key of at
/// most 16 bytes with its `=` and at most 24 bytes of float, then a space, a 20-byte
/// timestamp and the newline.
const MAX_FIELDS_BYTES: usize = 12 * (1 + 16 + 24) + 1 + 20 + 1;

/// Writes the fields and the timestamp of one line, after its tags, into the line's room
/// (see [`encode_into`]).
///
/// Every field is written with a leading `,` and [`FieldWriter::finish`] turns the first
/// one into the space between tags and fields, so leaving out a non-finite field needs no
/// bookkeeping. Keys are passed with their `=` (`b"open="`), constants that need no escaping.
struct FieldWriter<'a> {
    buf: &'a mut [u8],
    /// Where the first field's separator is (or would be).
    start: usize,
    len: usize,
    floats: zmij::Buffer,
}

impl<'a> FieldWriter<'a> {
    /// Fields written into `buf` from `start` on, which leaves room for [`MAX_FIELDS_BYTES`].
    fn begin(buf: &'a mut [u8], start: usize) -> Self {
        FieldWriter {
            buf,
            start,
            len: start,
            floats: zmij::Buffer::new(),
        }
    }

    /// Appends `bytes`; with a constant key inlined, a few stores.
    #[inline(always)]
    fn put(&mut self, bytes: &[u8]) {
        put(self.buf, &mut self.len, bytes);
    }

    /// Appends a short text of varying length (an integer); see [`copy_short`].
    #[inline(always)]
    fn put_short(&mut self, bytes: &[u8]) {
        self.len += copy_short(&mut self.buf[self.len..], bytes);
    }

    /// A float field; a non-finite value is left out. Returns what was written, for
    /// [`FieldWriter::float_again`].
    #[inline(always)]
    fn float(&mut self, key: &[u8], value: f64) -> Option<WrittenFloat> {
        if !value.is_finite() {
            return None;
        }
        self.put(b",");
        self.put(key);
        let start = self.len;
        let text = self.floats.format_finite(value).as_bytes();
        self.len += copy_short(&mut self.buf[start..], text);
        // zmij spells a positive exponent `1e+16`, ryu `1e16`: both are valid line
        // protocol, but the `+` is dropped so the text stays what it was with ryu (stored
        // corpora and fixtures keep matching; a test compares the two). Both use an
        // exponent only from 1e16 up (or below 1e-5, `e-`), and it has at most 3 digits,
        // so a `+` can only be among the last 4 bytes of such a value.
        if value.abs() >= 1e16 {
            let tail = self.len - 4;
            if let Some(i) = self.buf[tail..self.len].iter().position(|&b| b == b'+') {
                self.buf.copy_within(tail + i + 1..self.len, tail + i);
                self.len -= 1;
            }
        }
        Some((value.to_bits(), start..self.len))
    }

    /// [`FieldWriter::float`], taking the text from `memo` when the same value was written
    /// recently, and leaving it there otherwise.
    #[inline(always)]
    fn memo_float(&mut self, key: &[u8], value: f64, memo: &mut FloatMemo) {
        let Some(slot) = memo.slot(value.to_bits()) else {
            self.float(key, value);
            return;
        };
        if slot.bits == value.to_bits() {
            self.put(b",");
            self.put(key);
            self.len += copy_short(&mut self.buf[self.len..], &slot.text[..slot.len]);
        } else if let Some((bits, span)) = self.float(key, value) {
            slot.bits = bits;
            slot.len = copy_short(&mut slot.text, &self.buf[span]);
        }
    }

    #[inline(always)]
    fn opt_float(&mut self, key: &[u8], value: Option<f64>) {
        if let Some(v) = value {
            self.float(key, v);
        }
    }

    /// A float field whose value may be one written before in this line (`earlier`): the
    /// same bits get the same text, copied rather than formatted again.
    #[inline(always)]
    fn float_again(&mut self, key: &[u8], value: f64, earlier: Option<WrittenFloat>) {
        match earlier {
            Some((bits, span)) if bits == value.to_bits() => {
                self.put(b",");
                self.put(key);
                let at = self.len;
                self.len += span.len();
                self.buf.copy_within(span, at);
            }
            _ => {
                self.float(key, value);
            }
        }
    }

    /// An integer field (`123i`). InfluxDB integers are signed 64-bit.
    fn integer(&mut self, key: &str, value: u64) -> Result<(), EncodeError> {
        let Ok(value) = i64::try_from(value) else {
            return Err(EncodeError {
                part: format!("field {key}"),
                value: value.to_string(),
                reason: "larger than InfluxDB's largest integer (2^63 - 1)",
            });
        };
        self.put(b",");
        self.put(key.as_bytes());
        self.put(b"=");
        self.put_short(itoa::Buffer::new().format(value).as_bytes());
        self.put(b"i");
        Ok(())
    }

    /// Ends the line with the timestamp; returns the line's length, or 0 when no field was
    /// written (the caller drops the tags written so far).
    fn finish(mut self, time_ms: i64) -> usize {
        if self.len == self.start {
            return 0;
        }
        self.buf[self.start] = b' ';
        self.put(b" ");
        self.len += write_time(&mut self.buf[self.len..], time_ms);
        self.put(b"\n");
        self.len
    }
}

/// log2 of the slots of the [`FloatMemo`] of a batch: 512 slots, 20 KiB, which hold most
/// prices of the last hour of a symbol's 1m candles (an hour window's open was written ~60
/// candle lines earlier).
const MEMO_BITS: u32 = 9;

/// The line protocol text of recently written float values, by their bits: a direct-mapped
/// cache, so a value's text is the one formatted for the same bits, never another's.
///
/// Why: float formatting is the largest cost of encoding, and candle prices repeat. A 1m
/// candle usually opens at the previous candle's close, and every 5m/15m/1h window's open,
/// high, low and close are values of its 1m candles, encoded a few lines before it (the
/// aggregator flushes a window right after its candles). A lookup costs a multiply and a
/// compare; a hit saves a shortest round-trip formatting. Only candle prices use it:
/// indicator values are computed and rarely repeat.
#[derive(Default)]
struct FloatMemo {
    /// Empty for a single line ([`encode`]): every lookup misses, nothing is kept.
    slots: Vec<MemoSlot>,
}

struct MemoSlot {
    /// `u64::MAX` (a NaN, never looked up: only finite values are written) when empty.
    bits: u64,
    len: usize,
    text: [u8; 24],
}

impl FloatMemo {
    /// A memo for the lines of one batch.
    fn batch() -> Self {
        let empty = || MemoSlot {
            bits: u64::MAX,
            len: 0,
            text: [0; 24],
        };
        FloatMemo {
            slots: std::iter::repeat_with(empty).take(1 << MEMO_BITS).collect(),
        }
    }

    /// The slot where the text of `bits` is, or would go; `None` without slots.
    #[inline(always)]
    fn slot(&mut self, bits: u64) -> Option<&mut MemoSlot> {
        if self.slots.is_empty() {
            return None;
        }
        // Fibonacci hashing: the top bits of the product depend on every bit of the value.
        let hash = bits.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - MEMO_BITS);
        self.slots.get_mut(hash as usize)
    }
}

/// Whether a byte can be copied into any name as it is: not a control character, not a
/// backslash, not one of the bytes escaped in measurements, keys or tag values.
const PLAIN: [bool; 256] = {
    let mut plain = [true; 256];
    let mut b = 0;
    while b < 256 {
        let byte = b as u8;
        plain[b] = !(byte.is_ascii_control() || matches!(byte, b'\\' | b',' | b'=' | b' '));
        b += 1;
    }
    plain
};

/// Whether `value` can be written as it is: not empty, and [`PLAIN`] bytes only.
fn is_plain(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| PLAIN[usize::from(b)])
}

/// Writes the value of tag `key` at the start of `dst` (room for twice its length),
/// escaping [`TAG_VALUE_SPECIALS`], and returns how many bytes it took; or refuses it.
/// `plain` says the caller already found `value` [`is_plain`].
fn write_tag_value(
    dst: &mut [u8],
    key: &str,
    value: &str,
    plain: bool,
) -> Result<usize, EncodeError> {
    let specials = TAG_VALUE_SPECIALS;
    let bytes = value.as_bytes();
    // The common case (every symbol that passed validation): nothing to escape or refuse.
    if plain || is_plain(value) {
        debug_assert!(is_plain(value));
        if bytes.len() <= 24 {
            return Ok(copy_short(dst, bytes)); // no `memcpy` call for a usual symbol
        }
        dst[..bytes.len()].copy_from_slice(bytes);
        return Ok(bytes.len());
    }
    let refuse = |reason| {
        Err(EncodeError {
            part: format!("tag {key}"),
            value: value.to_owned(),
            reason,
        })
    };
    if bytes.is_empty() {
        return refuse("it is empty");
    }
    let mut plain = true;
    for (i, &b) in bytes.iter().enumerate() {
        if b.is_ascii_control() {
            return refuse("it contains a control character (newline, tab, ...)");
        }
        if b == b'\\' {
            match bytes.get(i + 1) {
                None => return refuse("it ends with a backslash"),
                Some(&next) if next == b'\\' || specials.contains(&next) => {
                    return refuse("a backslash before a backslash, comma, space or = is ambiguous")
                }
                Some(_) => {}
            }
        }
        plain &= !specials.contains(&b);
    }
    if plain {
        dst[..bytes.len()].copy_from_slice(bytes);
        return Ok(bytes.len());
    }
    let mut len = 0;
    for &b in bytes {
        if specials.contains(&b) {
            dst[len] = b'\\';
            len += 1;
        }
        dst[len] = b;
        len += 1;
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::digits::{copy_short, eight_digits};
    use super::*;
    use crate::lineproto_parse::{parse_line, FieldValue, ParsedLine};
    use candlepipe_model::{Interval, Source};
    use proptest::prelude::*;
    use std::sync::Arc;

    /// Every length a short copy handles, into a buffer with bytes before and after.
    #[test]
    fn copy_short_copies_every_length_exactly() {
        let src: Vec<u8> = (b'a'..=b'z').collect();
        for n in 0..=24 {
            let mut dst = [b'#'; 32];
            assert_eq!(copy_short(&mut dst[1..], &src[..n]), n);
            assert_eq!(dst[0], b'#');
            assert_eq!(&dst[1..=n], &src[..n], "{n}");
            assert!(dst[n + 1..].iter().all(|&b| b == b'#'), "{n}");
        }
    }

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
            volume: 123.4,
            quote_volume: Some(5571234.2),
            trades: Some(1523),
            taker_buy_base: Some(60.1),
            taker_buy_quote: None,
            vwap: Some(45148.93),
        }
    }

    fn line_of(point: &Point) -> String {
        let mut out = Vec::new();
        assert_eq!(encode(point, &mut out), Ok(true));
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_candle_encodes_as_the_schema_says() {
        let line = line_of(&Point::Candle(candle("BTC-USDT")));
        assert_eq!(
            line,
            "candle,interval=5m,source=replay,symbol=BTC-USDT open=45134.11,high=45200.0,\
             low=45100.0,close=45150.5,volume=123.4,quote_volume=5571234.2,trades=1523i,\
             taker_buy_base=60.1,vwap=45148.93 1614556800000\n"
        );
    }

    #[test]
    fn delimiters_in_a_symbol_are_escaped_and_read_back() {
        let nasty = r#"A B,c=d"e\f"#;
        let point = Point::Candle(candle(nasty));
        let line = line_of(&point);
        assert!(line.starts_with(r#"candle,interval=5m,source=replay,symbol=A\ B\,c\=d"e\f open="#));
        assert_eq!(
            parse_line(line.trim_end_matches('\n')).unwrap(),
            ParsedLine::expected_for(&point)
        );
    }

    #[test]
    fn unrepresentable_symbols_are_refused_and_nothing_is_written() {
        for bad in [
            "X\nhack v=1 1",
            "X\r",
            "tab\there",
            "",
            "end\\",
            "a\\\\b",
            "a\\,b",
            "a\\ b",
            "a\\=b",
        ] {
            let mut out = b"previous line\n".to_vec();
            let err = encode(&Point::Candle(candle(bad)), &mut out).unwrap_err();
            assert_eq!(err.part, "tag symbol", "{bad:?}");
            assert_eq!(err.value, bad);
            assert_eq!(out, b"previous line\n", "{bad:?} left bytes behind");
        }
    }

    #[test]
    fn non_finite_fields_are_left_out_and_an_empty_point_is_not_written() {
        let mut c = candle("X");
        c.high = f64::NAN;
        c.vwap = Some(f64::INFINITY);
        let line = line_of(&Point::Candle(c.clone()));
        assert!(!line.contains("high=") && !line.contains("vwap="), "{line}");
        assert!(
            !line.to_lowercase().contains("nan") && !line.contains("inf"),
            "{line}"
        );

        let mut out = b"x".to_vec();
        let empty = IndicatorPoint {
            symbol: Arc::from("X"),
            source: Some(Source::Live),
            time: 60_000,
            log_return: Some(f64::NEG_INFINITY),
            ..IndicatorPoint::default()
        };
        assert_eq!(
            encode(&Point::Indicator(empty.clone()), &mut out),
            Ok(false)
        );
        let no_fields = IndicatorPoint {
            log_return: None,
            ..empty
        };
        assert_eq!(encode(&Point::Indicator(no_fields), &mut out), Ok(false));
        assert_eq!(out, b"x");
    }

    #[test]
    fn constant_names_need_no_escaping() {
        let mut names: Vec<String> = vec![
            crate::point::CANDLE_MEASUREMENT.into(),
            crate::point::INDICATOR_MEASUREMENT.into(),
        ];
        names.extend(Interval::ALL.iter().map(|i| i.as_str().to_owned()));
        names.extend([Source::Replay, Source::Live].map(|s| s.as_str().to_owned()));
        // every tag key and field key, as the parser reads them from complete lines
        let full_indicator = IndicatorPoint {
            symbol: Arc::from("X"),
            source: Some(Source::Live),
            interval: Interval::H1,
            time: 0,
            sma_20: Some(1.0),
            ema_12: Some(1.0),
            ema_26: Some(1.0),
            macd: Some(1.0),
            macd_signal: Some(1.0),
            macd_hist: Some(1.0),
            rsi_14: Some(1.0),
            bb_mid: Some(1.0),
            bb_upper: Some(1.0),
            bb_lower: Some(1.0),
            log_return: Some(1.0),
            volatility_20: Some(1.0),
        };
        let mut full_candle = candle("X");
        full_candle.taker_buy_quote = Some(1.0);
        for point in [Point::Candle(full_candle), Point::Indicator(full_indicator)] {
            let parsed = parse_line(line_of(&point).trim_end()).unwrap();
            assert_eq!(parsed, ParsedLine::expected_for(&point));
            names.extend(parsed.tags.into_iter().map(|(k, _)| k));
            names.extend(parsed.fields.into_iter().map(|(k, _)| k));
        }
        assert!(names.len() > 25, "{names:?}");
        for name in names {
            assert!(
                !name.is_empty() && name.bytes().all(|b| PLAIN[usize::from(b)]),
                "{name:?} would need escaping"
            );
        }
        assert_eq!(
            std::str::from_utf8(CANDLE_PREFIX).unwrap(),
            format!("{},interval=", crate::point::CANDLE_MEASUREMENT)
        );
        assert_eq!(
            std::str::from_utf8(INDICATOR_PREFIX).unwrap(),
            format!("{},interval=", crate::point::INDICATOR_MEASUREMENT)
        );
    }

    #[test]
    fn refill_reuses_and_resets() {
        let points = vec![
            Point::Candle(candle("A")),
            Point::Candle(candle("bad\n")),
            Point::Indicator(IndicatorPoint {
                symbol: Arc::from("A"),
                ..IndicatorPoint::default()
            }),
        ];
        let mut enc = encode_all(&points);
        let first = enc.text.clone();
        let mut again = encode_all(&points[..1]);
        again.refill(&points);
        assert_eq!(again.text, first);
        enc.refill(&points[..1]);
        assert_eq!(
            (enc.empty, enc.unencodable.len(), enc.lines.len()),
            (0, 0, 1)
        );
        assert_eq!(enc.body(0..1), line_of(&points[0]).as_bytes());
    }

    #[test]
    fn trades_beyond_i64_are_refused() {
        let mut c = candle("X");
        c.trades = Some(u64::MAX);
        let err = encode(&Point::Candle(c), &mut Vec::new()).unwrap_err();
        assert_eq!(err.part, "field trades");
    }

    #[test]
    fn encode_all_maps_lines_back_to_points() {
        let mut bad = candle("bad\n");
        bad.time = 1;
        let points = vec![
            Point::Candle(candle("A")),
            Point::Indicator(IndicatorPoint {
                symbol: Arc::from("A"),
                ..IndicatorPoint::default()
            }),
            Point::Candle(bad),
            Point::Candle(candle("B")),
        ];
        let enc = encode_all(&points);
        assert_eq!(enc.empty, 1);
        assert_eq!(enc.unencodable.len(), 1);
        assert_eq!(enc.unencodable[0].0, 2);
        assert_eq!(
            enc.lines.iter().map(|l| l.point).collect::<Vec<_>>(),
            [0, 3]
        );
        assert_eq!(enc.body(0..2), enc.text.as_slice());
        assert!(enc.line_str(1).contains("symbol=B "));
        assert_eq!(
            parse_line(&enc.line_str(1)).unwrap(),
            ParsedLine::expected_for(&points[3])
        );
    }

    fn nasty_text() -> impl Strategy<Value = String> {
        // Every delimiter, escape and control character line protocol cares about.
        proptest::string::string_regex(r#"[a-zA-Z0-9 ,="'\\\n\r\t#éß€🚀._-]{0,12}"#).unwrap()
    }

    fn any_float() -> impl Strategy<Value = f64> {
        prop_oneof![
            4 => proptest::num::f64::ANY,
            1 => Just(f64::NAN),
            1 => Just(f64::INFINITY),
            1 => Just(-0.0),
            1 => Just(5e-324),
            1 => Just(f64::MAX),
        ]
    }

    prop_compose! {
        fn any_candle()(symbol in nasty_text(), m5 in any::<bool>(), time in any::<i64>(),
                        ohlcv in proptest::array::uniform5(any_float()),
                        quote_volume in proptest::option::of(any_float()),
                        trades in proptest::option::of(0..=i64::MAX as u64),
                        vwap in proptest::option::of(any_float())) -> Point {
            Point::Candle(CandlePoint {
                symbol: Arc::from(symbol.as_str()),
                source: if m5 { Source::Replay } else { Source::Live },
                interval: if m5 { Interval::M5 } else { Interval::H1 },
                time,
                open: ohlcv[0], high: ohlcv[1], low: ohlcv[2], close: ohlcv[3], volume: ohlcv[4],
                quote_volume, trades, taker_buy_base: quote_volume.map(|q| q / 3.0),
                taker_buy_quote: None, vwap,
            })
        }
    }

    prop_compose! {
        fn any_indicator()(symbol in nasty_text(), source in proptest::option::of(any::<bool>()),
                           time in any::<i64>(),
                           interval in proptest::sample::select(Interval::ALL.to_vec()),
                           values in proptest::collection::vec(proptest::option::of(any_float()), 12))
                           -> Point {
            let v = |i: usize| values[i];
            Point::Indicator(IndicatorPoint {
                symbol: Arc::from(symbol.as_str()),
                source: source.map(|s| if s { Source::Replay } else { Source::Live }),
                interval,
                time,
                sma_20: v(0), ema_12: v(1), ema_26: v(2), macd: v(3), macd_signal: v(4),
                macd_hist: v(5), rsi_14: v(6), bb_mid: v(7), bb_upper: v(8), bb_lower: v(9),
                log_return: v(10), volatility_20: v(11),
            })
        }
    }

    /// Whether `symbol` is one the encoder must refuse, decided from the documented rules.
    fn unrepresentable(symbol: &str) -> bool {
        let b = symbol.as_bytes();
        b.is_empty()
            || b.iter().any(|c| c.is_ascii_control())
            || b.iter().enumerate().any(|(i, &c)| {
                c == b'\\' && matches!(b.get(i + 1), None | Some(b'\\' | b',' | b'=' | b' '))
            })
    }

    proptest! {
        /// The float text is ryu's, character for character (zmij finds the same digits).
        #[test]
        fn floats_are_spelled_as_ryu_spells_them(bits in any::<u64>(), small in -1e30f64..1e30) {
            for v in [f64::from_bits(bits), small, small * 1e-20, small.round()] {
                if v.is_finite() {
                    let mut out = [0; MAX_FIELDS_BYTES];
                    let mut fields = FieldWriter::begin(&mut out, 0);
                    fields.float(b"f=", v);
                    let len = fields.finish(0);
                    let mut ryu = ryu::Buffer::new();
                    let want = format!(" f={} 0\n", ryu.format_finite(v));
                    prop_assert_eq!(std::str::from_utf8(&out[..len]).unwrap(), want);
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn every_point_reads_back_exactly_or_is_refused(point in prop_oneof![any_candle(), any_indicator()]) {
            let symbol = match &point { Point::Candle(c) => c.symbol.clone(), Point::Indicator(i) => i.symbol.clone() };
            let mut out = b"before\n".to_vec();
            match encode(&point, &mut out) {
                Err(e) => {
                    prop_assert!(unrepresentable(&symbol), "refused {symbol:?}: {e}");
                    prop_assert_eq!(&out, b"before\n");
                }
                Ok(false) => {
                    prop_assert!(ParsedLine::expected_for(&point).fields.is_empty());
                    prop_assert_eq!(&out, b"before\n");
                }
                Ok(true) => {
                    prop_assert!(!unrepresentable(&symbol), "accepted {symbol:?}");
                    let text = std::str::from_utf8(&out[7..]).unwrap();
                    // Exactly one line: a value can never start a second point.
                    prop_assert_eq!(text.matches('\n').count(), 1);
                    prop_assert!(text.ends_with('\n'));
                    let parsed = parse_line(text.trim_end_matches('\n')).unwrap();
                    let want = ParsedLine::expected_for(&point);
                    // Floats compare bit for bit (also tells -0.0 from 0.0).
                    let bits = |l: &ParsedLine| l.fields.iter().map(|(k, v)| match v {
                        FieldValue::Float(x) => (k.clone(), x.to_bits()),
                        FieldValue::Int(i) => (k.clone(), *i as u64),
                        other => panic!("unexpected field {other:?}"),
                    }).collect::<Vec<_>>();
                    prop_assert_eq!(bits(&parsed), bits(&want));
                    prop_assert_eq!(parsed, want);
                }
            }
        }
    }

    /// The room `encode_into` is given is enough for the longest line there can be: every
    /// tag spelling, a symbol whose every byte is escaped, and every field at the longest
    /// float text (24 bytes) and the longest timestamp.
    #[test]
    fn the_longest_line_fits_its_room() {
        for interval in Interval::ALL {
            for source in [Source::Replay, Source::Live] {
                for prefix in [CANDLE_PREFIX, INDICATOR_PREFIX] {
                    let tags = prefix.len()
                        + interval.as_str().len()
                        + SOURCE_TAG.len()
                        + source.as_str().len()
                        + SYMBOL_TAG.len();
                    assert!(tags <= MAX_TAGS_BYTES, "{tags} bytes of tags");
                }
            }
        }
        let longest = -2.2250738585072014e-308; // 24 bytes of text
        assert_eq!(zmij::Buffer::new().format_finite(longest).len(), 24);
        let symbol: Arc<str> = Arc::from(",= ".repeat(50).as_str());
        let indicator = Point::Indicator(IndicatorPoint {
            symbol: symbol.clone(),
            source: Some(Source::Replay),
            interval: Interval::M15,
            time: i64::MIN,
            sma_20: Some(longest),
            ema_12: Some(longest),
            ema_26: Some(longest),
            macd: Some(longest),
            macd_signal: Some(longest),
            macd_hist: Some(longest),
            rsi_14: Some(longest),
            bb_mid: Some(-longest),
            bb_upper: Some(longest),
            bb_lower: Some(longest),
            log_return: Some(longest),
            volatility_20: Some(longest),
        });
        let mut candle = candle(&symbol);
        candle.interval = Interval::M15;
        candle.time = i64::MIN;
        candle.trades = Some(i64::MAX as u64);
        for v in [
            &mut candle.open,
            &mut candle.high,
            &mut candle.low,
            &mut candle.close,
            &mut candle.volume,
        ] {
            *v = longest;
        }
        for v in [
            &mut candle.quote_volume,
            &mut candle.taker_buy_base,
            &mut candle.taker_buy_quote,
            &mut candle.vwap,
        ] {
            *v = Some(longest);
        }
        for point in [indicator, Point::Candle(candle)] {
            let mut out = Vec::new();
            assert!(encode(&point, &mut out).unwrap());
            assert!(out.len() <= max_line_bytes(&point), "{}", out.len());
            assert_eq!(
                parse_line(std::str::from_utf8(&out).unwrap().trim_end_matches('\n')).unwrap(),
                ParsedLine::expected_for(&point)
            );
        }
    }

    /// A batch checks a symbol once per run of points sharing its `Arc`: symbols to escape
    /// or refuse, and the empty one, are still escaped or refused on every line, also
    /// right after a plain symbol and when they share an allocation.
    #[test]
    fn shared_symbols_are_escaped_or_refused_on_every_line() {
        let mut batch = Vec::new();
        for symbol in [
            "BTC-USDT",
            "a b,c=d",
            "",
            "bad\nline",
            "BTC-USDT",
            "ETH-USDT",
        ] {
            let point = Point::Candle(candle(symbol));
            batch.extend([point.clone(), point.clone(), point]);
        }
        // the same text in another allocation, right after the first one
        batch.push(Point::Candle(candle("BTC-USDT")));
        let enc = encode_all(&batch);
        assert_eq!(enc.text, one_by_one(&batch));
        let refused: Vec<usize> = enc.unencodable.iter().map(|(i, _)| *i).collect();
        assert_eq!(refused, [6, 7, 8, 9, 10, 11]);
        assert_eq!(enc.lines.len(), batch.len() - 6);
    }

    /// The same lines, `\n`-separated, as encoding each point on its own.
    fn one_by_one(points: &[Point]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in points {
            let _ = encode(p, &mut out);
        }
        out
    }

    proptest! {
        /// A batch's prices come from its float memo or are formatted afresh: the text is
        /// the same either way, also when values collide in the memo (a few thousand
        /// distinct values in 512 slots) and for values written as several fields.
        #[test]
        fn a_batch_encodes_as_its_points_do_one_by_one(
            pool in proptest::collection::vec(any_float(), 1..3000),
            picks in proptest::collection::vec((any::<prop::sample::Index>(), 0usize..4), 1..600),
            points in proptest::collection::vec(prop_oneof![any_candle(), any_indicator()], 1..20),
        ) {
            let mut batch = points;
            for chunk in picks.chunks(4) {
                let mut c = candle("X");
                for (pick, field) in chunk {
                    let v = *pick.get(&pool);
                    *[&mut c.open, &mut c.high, &mut c.low, &mut c.close][*field] = v;
                }
                batch.push(Point::Candle(c));
            }
            prop_assert_eq!(encode_all(&batch).text, one_by_one(&batch));
        }
    }

    proptest! {
        /// Timestamps are spelled as `itoa` spells them, around the 13-digit fast path's
        /// edges and anywhere else.
        #[test]
        fn timestamps_are_spelled_as_itoa_spells_them(
            any in any::<i64>(),
            ms in 999_999_999_000i64..10_000_000_001_000,
            x in 0u32..100_000_000,
        ) {
            for t in [any, ms, i64::MIN, i64::MAX, 0, -1, 999_999_999_999, 1_000_000_000_000,
                      9_999_999_999_999, 10_000_000_000_000, 1_614_556_800_000] {
                let mut dst = [0; 20];
                let len = write_time(&mut dst, t);
                prop_assert_eq!(std::str::from_utf8(&dst[..len]).unwrap(), t.to_string());
            }
            prop_assert_eq!(eight_digits(x).to_vec(), format!("{x:08}").into_bytes());
        }
    }
}
