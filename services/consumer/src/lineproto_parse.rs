//! The reference parser of InfluxDB line protocol, for tests and the fuzz targets only: it
//! reads back what [`crate::lineproto`] writes, so that every encoded point can be checked to
//! read back as exactly the point that was meant ([`ParsedLine::expected_for`]).
//!
//! It is written from the line protocol spec (InfluxDB 1.x semantics), not from the encoder,
//! so the two cannot share a mistake, and it lives apart from the encoder's hot path: the
//! consumer binary never parses line protocol. It is built for this crate's own tests and,
//! through the cargo feature `test-support`, for the other crates' tests and the fuzz checks
//! (`candlepipe-fuzzcheck`, the e2e dashboard checks).

use crate::point::Point;

/// A field value as line protocol spells it.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// `1.5`, `-2e-7`, `3`
    Float(f64),
    /// `42i`
    Int(i64),
    /// `42u`
    UInt(u64),
    /// `"text"`
    Str(String),
    /// `t`, `true`, `F`, ...
    Bool(bool),
}

/// One parsed line: names unescaped, fields typed.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedLine {
    pub measurement: String,
    /// In the order they appear.
    pub tags: Vec<(String, String)>,
    /// In the order they appear.
    pub fields: Vec<(String, FieldValue)>,
    /// As written (the unit is the request's precision); `None` when absent.
    pub timestamp: Option<i64>,
}

impl ParsedLine {
    /// The line `point` must read back as, built from the point's fields directly rather
    /// than through the encoder: the oracle of round-trip tests and the fuzz target. Tags are
    /// sorted by key; non-finite fields are absent (they are never written).
    pub fn expected_for(point: &Point) -> ParsedLine {
        let float = |k: &str, v: f64| (k.to_owned(), FieldValue::Float(v));
        let tag = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        let (measurement, mut tags, fields, time) = match point {
            Point::Candle(c) => {
                let mut fields = vec![
                    float("open", c.open),
                    float("high", c.high),
                    float("low", c.low),
                    float("close", c.close),
                    float("volume", c.volume),
                ];
                fields.extend(c.quote_volume.map(|v| float("quote_volume", v)));
                fields.extend(
                    c.trades
                        .map(|t| ("trades".to_owned(), FieldValue::Int(t as i64))),
                );
                fields.extend(c.taker_buy_base.map(|v| float("taker_buy_base", v)));
                fields.extend(c.taker_buy_quote.map(|v| float("taker_buy_quote", v)));
                fields.extend(c.vwap.map(|v| float("vwap", v)));
                let tags = vec![
                    tag("symbol", &c.symbol),
                    tag("interval", c.interval.as_str()),
                    tag("source", c.source.as_str()),
                ];
                (crate::point::CANDLE_MEASUREMENT, tags, fields, c.time)
            }
            Point::Indicator(i) => {
                let mut tags = vec![
                    tag("symbol", &i.symbol),
                    tag("interval", i.interval.as_str()),
                ];
                tags.extend(i.source.map(|s| tag("source", s.as_str())));
                let fields = i.fields().map(|(k, v)| float(k, v)).collect();
                (crate::point::INDICATOR_MEASUREMENT, tags, fields, i.time)
            }
        };
        tags.sort();
        let fields = fields
            .into_iter()
            .filter(|(_, v)| !matches!(v, FieldValue::Float(x) if !x.is_finite()))
            .collect();
        ParsedLine {
            measurement: measurement.to_owned(),
            tags,
            fields,
            timestamp: Some(time),
        }
    }
}

/// Why a line does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid line protocol at byte {offset}: {reason}")]
pub struct ParseError {
    /// Byte offset in the line where parsing failed.
    pub offset: usize,
    pub reason: &'static str,
}

/// Parses one line of line protocol (without its trailing newline), with InfluxDB 1.x's
/// rules: a backslash makes the next byte part of the name, and `\,` `\ ` (and `\=` in
/// keys and tag values) unescape to the character; any other backslash stays as it is.
pub fn parse_line(line: &str) -> Result<ParsedLine, ParseError> {
    let mut p = LineParser {
        s: line.as_bytes(),
        i: 0,
    };
    let measurement = p.name(&MEASUREMENT_NAME)?;
    let mut tags = Vec::new();
    while p.peek() == Some(b',') {
        p.i += 1;
        let key = p.name(&TAG_KEY)?;
        p.expect(b'=', "expected = after a tag key")?;
        let value = p.name(&TAG_VALUE)?;
        tags.push((key, value));
    }
    p.expect(b' ', "expected a space before the fields")?;
    let mut fields = Vec::new();
    loop {
        let key = p.name(&FIELD_KEY)?;
        p.expect(b'=', "expected = after a field key")?;
        let value = p.field_value()?;
        fields.push((key, value));
        if p.peek() != Some(b',') {
            break;
        }
        p.i += 1;
    }
    let timestamp = match p.peek() {
        None => None,
        Some(b' ') => {
            p.i += 1;
            let start = p.i;
            let text = p.token();
            Some(
                text.parse::<i64>()
                    .ok()
                    .filter(|_| !text.starts_with('+'))
                    .ok_or(ParseError {
                        offset: start,
                        reason: "timestamp is not a 64-bit integer",
                    })?,
            )
        }
        Some(_) => return p.fail("unexpected byte after the fields"),
    };
    if p.i != p.s.len() {
        return p.fail("unexpected text after the timestamp");
    }
    Ok(ParsedLine {
        measurement,
        tags,
        fields,
        timestamp,
    })
}

/// How one kind of name is delimited and unescaped (InfluxDB 1.x `models` package rules).
struct NameRule {
    /// Unescaped bytes that end the name.
    ends_at: &'static [u8],
    /// Unescaped bytes that make the line invalid.
    forbidden: &'static [u8],
    forbidden_why: &'static str,
    /// Bytes whose backslash escape is removed.
    unescapes: &'static [u8],
    empty_why: &'static str,
}

const MEASUREMENT_NAME: NameRule = NameRule {
    ends_at: b", ",
    forbidden: b"",
    forbidden_why: "",
    unescapes: b", ",
    empty_why: "empty measurement",
};
const TAG_KEY: NameRule = NameRule {
    ends_at: b"=",
    forbidden: b", ",
    forbidden_why: "tag key without a value",
    unescapes: b",= ",
    empty_why: "empty tag key",
};
const TAG_VALUE: NameRule = NameRule {
    ends_at: b", ",
    forbidden: b"=",
    forbidden_why: "unescaped = in a tag value",
    unescapes: b",= ",
    empty_why: "empty tag value",
};
const FIELD_KEY: NameRule = NameRule {
    ends_at: b"=",
    forbidden: b", ",
    forbidden_why: "field key without a value",
    unescapes: b",= ",
    empty_why: "empty field key",
};

struct LineParser<'a> {
    s: &'a [u8],
    i: usize,
}

impl LineParser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn fail<T>(&self, reason: &'static str) -> Result<T, ParseError> {
        Err(ParseError {
            offset: self.i,
            reason,
        })
    }

    fn expect(&mut self, b: u8, reason: &'static str) -> Result<(), ParseError> {
        if self.peek() != Some(b) {
            return self.fail(reason);
        }
        self.i += 1;
        Ok(())
    }

    /// A name read by `rule`: it ends at an unescaped byte of `rule.ends_at`, `\\x` turns
    /// into x for x in `rule.unescapes`, and any other backslash stays.
    fn name(&mut self, rule: &NameRule) -> Result<String, ParseError> {
        let start = self.i;
        let mut out = Vec::new();
        while let Some(b) = self.peek() {
            if rule.ends_at.contains(&b) {
                break;
            }
            if b.is_ascii_control() {
                return self.fail("control character inside a name");
            }
            if rule.forbidden.contains(&b) {
                return self.fail(rule.forbidden_why);
            }
            if b == b'\\' {
                let Some(next) = self.s.get(self.i + 1).copied() else {
                    return self.fail("line ends in a backslash");
                };
                if next.is_ascii_control() {
                    return self.fail("control character inside a name");
                }
                if !rule.unescapes.contains(&next) {
                    out.push(b'\\');
                }
                out.push(next);
                self.i += 2;
                continue;
            }
            out.push(b);
            self.i += 1;
        }
        if self.i == start {
            return self.fail(rule.empty_why);
        }
        String::from_utf8(out).map_err(|_| ParseError {
            offset: start,
            reason: "name is not UTF-8",
        })
    }

    /// Bytes up to (not including) the next space, comma or the end.
    fn token(&mut self) -> &str {
        let start = self.i;
        while let Some(b) = self.peek() {
            if b == b' ' || b == b',' {
                break;
            }
            self.i += 1;
        }
        // The line came from a &str and we split at ASCII bytes, so this is valid UTF-8.
        std::str::from_utf8(&self.s[start..self.i]).unwrap_or("")
    }

    fn field_value(&mut self) -> Result<FieldValue, ParseError> {
        if self.peek() == Some(b'"') {
            return self.string_value();
        }
        let start = self.i;
        let text = self.token();
        let bad = |reason| ParseError {
            offset: start,
            reason,
        };
        if text.is_empty() {
            return Err(bad("empty field value"));
        }
        match text {
            "t" | "T" | "true" | "True" | "TRUE" => return Ok(FieldValue::Bool(true)),
            "f" | "F" | "false" | "False" | "FALSE" => return Ok(FieldValue::Bool(false)),
            _ => {}
        }
        if let Some(int) = text.strip_suffix('i') {
            return int
                .parse::<i64>()
                .ok()
                .filter(|_| !int.starts_with('+'))
                .map(FieldValue::Int)
                .ok_or(bad("integer field is not a 64-bit signed integer"));
        }
        if let Some(uint) = text.strip_suffix('u') {
            return uint
                .parse::<u64>()
                .ok()
                .filter(|_| !uint.starts_with('+'))
                .map(FieldValue::UInt)
                .ok_or(bad("unsigned field is not a 64-bit unsigned integer"));
        }
        // Rust also accepts "inf" and "NaN", which line protocol does not: check the charset.
        let numeric = text
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'));
        let first_ok = text.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '.');
        match text.parse::<f64>() {
            Ok(v) if numeric && first_ok && v.is_finite() => Ok(FieldValue::Float(v)),
            _ => Err(bad("field value is not a number, boolean or string")),
        }
    }

    fn string_value(&mut self) -> Result<FieldValue, ParseError> {
        let start = self.i;
        self.i += 1; // opening quote
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => {
                    return Err(ParseError {
                        offset: start,
                        reason: "unterminated string field",
                    })
                }
                Some(b'"') => {
                    self.i += 1;
                    break;
                }
                Some(b'\\') if matches!(self.s.get(self.i + 1), Some(b'"' | b'\\')) => {
                    out.push(self.s[self.i + 1]);
                    self.i += 2;
                }
                Some(b) => {
                    out.push(b);
                    self.i += 1;
                }
            }
        }
        String::from_utf8(out)
            .map(FieldValue::Str)
            .map_err(|_| ParseError {
                offset: start,
                reason: "string field is not UTF-8",
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parser_reads_influxdb_examples() {
        let p = parse_line(r#"w\ x,t\=k=v\,1 s="a \"q\" \\",b=t,u=7u,i=-3i,f=-1.5e-7 17"#).unwrap();
        assert_eq!(p.measurement, "w x");
        assert_eq!(p.tags, [("t=k".to_owned(), "v,1".to_owned())]);
        assert_eq!(
            p.fields,
            [
                ("s".to_owned(), FieldValue::Str(r#"a "q" \"#.to_owned())),
                ("b".to_owned(), FieldValue::Bool(true)),
                ("u".to_owned(), FieldValue::UInt(7)),
                ("i".to_owned(), FieldValue::Int(-3)),
                ("f".to_owned(), FieldValue::Float(-1.5e-7)),
            ]
        );
        assert_eq!(p.timestamp, Some(17));
        assert_eq!(parse_line("m v=1").unwrap().timestamp, None);
        for bad in [
            "m",
            "m v=",
            "m v=NaN",
            "m v=inf",
            ",t=1 v=1",
            "m,t= v=1",
            "m,t=a=b v=1",
            "m v=1 x",
            "m v=1 1 2",
            "m v=\"open",
        ] {
            assert!(parse_line(bad).is_err(), "{bad:?} parsed");
        }
    }
}
