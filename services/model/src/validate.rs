//! The rules a candle must satisfy before the consumer aggregates it.
//!
//! Validation is separate from decoding: the JSON can be well formed and still describe an
//! impossible candle (high below low, a NaN price, an open time between minutes). Every rule
//! produces an [`InvalidCandle`] that names the field and the value, because that text is
//! what an operator reads in the dead-letter queue's `error` header.

use crate::candle::{Candle, MINUTE_MS};
use thiserror::Error;

/// Longest accepted symbol, in bytes.
pub const MAX_SYMBOL_LEN: usize = 32;
/// Earliest accepted open time: 2000-01-01T00:00Z.
pub const MIN_OPEN_TIME_MS: i64 = 946_684_800_000;
/// First open time no longer accepted: 2100-01-01T00:00Z.
pub const MAX_OPEN_TIME_MS: i64 = 4_102_444_800_000;

/// Largest accepted price or volume. An hour of candles at this bound still sums (volume,
/// quote volume, and the vwap numerator Σ typical price × volume, 60 × 1e200) to a finite
/// number, so no rollup field can overflow to infinity and silently vanish; real markets
/// are hundreds of orders of magnitude below it.
pub const MAX_AMOUNT: f64 = 1e100;
/// Largest accepted trade count, 2^53: exact as a float, and 60 of them sum in a `u64`.
pub const MAX_TRADES: u64 = 1 << 53;

/// Why a candle was rejected.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum InvalidCandle {
    #[error("symbol is empty")]
    EmptySymbol,
    #[error("symbol {0:?} is longer than {MAX_SYMBOL_LEN} bytes")]
    SymbolTooLong(String),
    #[error("symbol {symbol:?} contains {bad:?}; allowed are A-Z a-z 0-9 . _ -")]
    SymbolCharset { symbol: String, bad: char },
    #[error("field `{field}` is not a finite number ({value})")]
    NotFinite { field: &'static str, value: f64 },
    #[error("field `{field}` is negative ({value})")]
    Negative { field: &'static str, value: f64 },
    #[error("field `{field}` = {value:e} is above the limit {MAX_AMOUNT:e} (rollup sums must stay finite)")]
    AboveLimit { field: &'static str, value: f64 },
    #[error("trades {0} is above the limit {MAX_TRADES} (rollup sums must stay exact)")]
    TooManyTrades(u64),
    #[error("high {high} is below low {low}")]
    HighBelowLow { high: f64, low: f64 },
    #[error("field `{field}` = {value} is outside [low {low}, high {high}]")]
    OutsideRange {
        field: &'static str,
        value: f64,
        low: f64,
        high: f64,
    },
    #[error("open_time {0} is not aligned to a minute")]
    UnalignedOpenTime(i64),
    #[error("open_time {0} is outside 2000-01-01..2100-01-01")]
    OpenTimeOutOfBounds(i64),
}

/// Whether `b` may be in a symbol: `A-Z a-z 0-9 . _ -` (all ASCII). The one statement of
/// the charset, for [`validate_symbol`], the fast check and the codec's symbol scan.
pub(crate) const fn is_symbol_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

/// Checks a symbol: 1 to 32 bytes of `A-Z a-z 0-9 . _ -`. The charset keeps symbols safe as
/// Kafka keys, InfluxDB tag values and Grafana variable values without any escaping games.
pub fn validate_symbol(symbol: &str) -> Result<(), InvalidCandle> {
    if symbol.is_empty() {
        return Err(InvalidCandle::EmptySymbol);
    }
    if symbol.len() > MAX_SYMBOL_LEN {
        return Err(InvalidCandle::SymbolTooLong(symbol.to_owned()));
    }
    // Bytes, not chars: every allowed character is ASCII, and this runs once per message.
    if symbol.bytes().all(is_symbol_byte) {
        return Ok(());
    }
    let bad = symbol
        .chars()
        .find(|&c| !u8::try_from(c).is_ok_and(is_symbol_byte))
        .expect("a byte outside the charset belongs to a char outside it");
    Err(InvalidCandle::SymbolCharset {
        symbol: symbol.to_owned(),
        bad,
    })
}

/// Checks every rule; the first broken one is returned.
pub fn validate(c: &Candle) -> Result<(), InvalidCandle> {
    if passes(c) {
        return Ok(());
    }
    explain(c)
}

/// [`is_symbol_byte`] as a table, one lookup per byte.
const SYMBOL_BYTE: [bool; 256] = {
    let mut ok = [false; 256];
    let mut b = 0;
    while b < 256 {
        ok[b] = is_symbol_byte(b as u8);
        b += 1;
    }
    ok
};

/// Whether `c` satisfies every rule of [`explain`], as one expression without the error
/// bookkeeping: every consumed candle is validated, and nearly all are valid, so this is
/// all most of them cost (~480 instructions per candle went to the rule-by-rule walk; a
/// test checks that both always agree). A candle it refuses is walked by [`explain`] for
/// the first broken rule.
#[inline]
fn passes(c: &Candle) -> bool {
    let symbol = c.symbol.as_bytes();
    // NaN and infinities fail the range; -0.0 passes, as in explain
    let amount = |v: f64| (0.0..=MAX_AMOUNT).contains(&v);
    let optional = |v: Option<f64>| v.is_none_or(amount);
    !symbol.is_empty()
        && symbol.len() <= MAX_SYMBOL_LEN
        && symbol.iter().all(|&b| SYMBOL_BYTE[usize::from(b)])
        && c.open_time % MINUTE_MS == 0
        && (MIN_OPEN_TIME_MS..MAX_OPEN_TIME_MS).contains(&c.open_time)
        && amount(c.open) & amount(c.high) & amount(c.low) & amount(c.close) & amount(c.volume)
        && optional(c.quote_volume) & optional(c.taker_buy_base) & optional(c.taker_buy_quote)
        && c.trades.is_none_or(|t| t <= MAX_TRADES)
        && (c.low <= c.open) & (c.open <= c.high) & (c.low <= c.close) & (c.close <= c.high)
}

/// The rules one by one, in the order their errors are reported: the first broken one.
fn explain(c: &Candle) -> Result<(), InvalidCandle> {
    validate_symbol(&c.symbol)?;
    if c.open_time.rem_euclid(MINUTE_MS) != 0 {
        return Err(InvalidCandle::UnalignedOpenTime(c.open_time));
    }
    if !(MIN_OPEN_TIME_MS..MAX_OPEN_TIME_MS).contains(&c.open_time) {
        return Err(InvalidCandle::OpenTimeOutOfBounds(c.open_time));
    }
    let required = [
        ("open", c.open),
        ("high", c.high),
        ("low", c.low),
        ("close", c.close),
        ("volume", c.volume),
    ];
    let optional = [
        ("quote_volume", c.quote_volume),
        ("taker_buy_base", c.taker_buy_base),
        ("taker_buy_quote", c.taker_buy_quote),
    ];
    let present = required
        .into_iter()
        .chain(optional.into_iter().filter_map(|(f, v)| v.map(|v| (f, v))));
    for (field, value) in present {
        if !value.is_finite() {
            return Err(InvalidCandle::NotFinite { field, value });
        }
        if value < 0.0 {
            return Err(InvalidCandle::Negative { field, value });
        }
        if value > MAX_AMOUNT {
            return Err(InvalidCandle::AboveLimit { field, value });
        }
    }
    if let Some(trades) = c.trades.filter(|t| *t > MAX_TRADES) {
        return Err(InvalidCandle::TooManyTrades(trades));
    }
    if c.high < c.low {
        return Err(InvalidCandle::HighBelowLow {
            high: c.high,
            low: c.low,
        });
    }
    for (field, value) in [("open", c.open), ("close", c.close)] {
        if value < c.low || value > c.high {
            return Err(InvalidCandle::OutsideRange {
                field,
                value,
                low: c.low,
                high: c.high,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::candle::Source;

    fn good() -> Candle {
        Candle::ohlcv(
            "BTC-USDT",
            Source::Replay,
            1_614_556_800_000,
            10.0,
            12.0,
            9.0,
            11.0,
            3.0,
        )
    }

    #[test]
    fn accepts_a_consistent_candle() {
        assert_eq!(validate(&good()), Ok(()));
    }

    /// A change that breaks one rule.
    type Breakage = Box<dyn Fn(&mut Candle)>;

    #[test]
    fn each_rule_names_what_is_wrong() {
        let cases: Vec<(Breakage, &str)> = vec![
            (Box::new(|c| c.symbol = String::new()), "empty"),
            (Box::new(|c| c.symbol = "A".repeat(33)), "longer than 32"),
            (Box::new(|c| c.symbol = "BTC USDT".into()), "' '"),
            (Box::new(|c| c.symbol = "BTC,USDT".into()), "','"),
            (Box::new(|c| c.symbol = "a=b".into()), "'='"),
            (Box::new(|c| c.symbol = "a\nb".into()), "'\\n'"),
            (Box::new(|c| c.open = f64::NAN), "`open` is not a finite"),
            (
                Box::new(|c| c.high = f64::INFINITY),
                "`high` is not a finite",
            ),
            (Box::new(|c| c.volume = -1.0), "`volume` is negative"),
            (
                Box::new(|c| c.quote_volume = Some(-2.0)),
                "`quote_volume` is negative",
            ),
            (
                Box::new(|c| c.volume = 1e308),
                "`volume` = 1e308 is above the limit 1e100",
            ),
            (
                Box::new(|c| c.taker_buy_quote = Some(2e100)),
                "`taker_buy_quote` = 2e100 is above the limit",
            ),
            (
                Box::new(|c| c.trades = Some(u64::MAX)),
                "trades 18446744073709551615 is above the limit",
            ),
            (Box::new(|c| c.low = 13.0), "high 12 is below low 13"),
            (Box::new(|c| c.close = 12.5), "`close` = 12.5 is outside"),
            (Box::new(|c| c.open = 8.0), "`open` = 8 is outside"),
            (Box::new(|c| c.open_time += 1), "not aligned"),
            (Box::new(|c| c.open_time = 0), "outside 2000-01-01"),
            (
                Box::new(|c| c.open_time = MAX_OPEN_TIME_MS),
                "outside 2000-01-01",
            ),
        ];
        for (mutate, expected) in cases {
            let mut c = good();
            mutate(&mut c);
            let err = validate(&c).expect_err(expected).to_string();
            assert!(
                err.contains(expected),
                "{err:?} should mention {expected:?}"
            );
        }
    }

    proptest::proptest! {
        /// The fast check accepts exactly the candles the rule-by-rule walk accepts, values
        /// on and around every bound included.
        #[test]
        fn the_fast_check_agrees_with_the_rules(
            symbol in proptest::sample::select(vec!["BTC-USDT", "", "a.b_c-D9", "BTC USDT",
                "X,Y", "é", "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345", "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456"]),
            open_time in proptest::sample::select(vec![1_614_556_800_000i64, 1_614_556_800_001,
                0, -60_000, MIN_OPEN_TIME_MS, MIN_OPEN_TIME_MS - 60_000, MAX_OPEN_TIME_MS,
                MAX_OPEN_TIME_MS - 60_000]),
            prices in proptest::collection::vec(amount(), 8),
            present in proptest::collection::vec(proptest::bool::ANY, 3),
            trades in proptest::option::of(proptest::sample::select(vec![0u64, 7,
                MAX_TRADES, MAX_TRADES + 1, u64::MAX])),
        ) {
            let mut c = good();
            c.symbol = symbol.to_owned();
            c.open_time = open_time;
            [c.open, c.high, c.low, c.close, c.volume] = [prices[0], prices[1], prices[2], prices[3], prices[4]];
            c.quote_volume = present[0].then_some(prices[5]);
            c.taker_buy_base = present[1].then_some(prices[6]);
            c.taker_buy_quote = present[2].then_some(prices[7]);
            c.trades = trades;
            proptest::prop_assert_eq!(passes(&c), explain(&c).is_ok(), "{:?}", c);
        }
    }

    /// Prices from a few values, so that equal and ordered ones are common, and every edge.
    fn amount() -> impl proptest::strategy::Strategy<Value = f64> {
        proptest::sample::select(vec![
            0.0,
            -0.0,
            1.0,
            9.0,
            10.0,
            11.0,
            12.0,
            13.0,
            -1.0,
            MAX_AMOUNT,
            2e100,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MIN_POSITIVE,
        ])
    }
}
