//! What a Binance kline file's name says: the symbol, the interval and the period it covers.
//!
//! data.binance.vision names its files `BTCUSDT-1m-2024-01.zip` (a month) and
//! `BTCUSDT-1m-2024-01-15.zip` (a day), and the CSV inside the same with `.csv`. The name is
//! the only metadata such a file has: the CSV holds no symbol, so the replay's symbol comes
//! from here, and the period bounds the file's rows in time (what parquet statistics give
//! the merge for parquet files).
//!
//! Binance writes symbols without a separator (`BTCUSDT`), while the replay's symbols are
//! `BASE-QUOTE` like the Kaggle file stems (`BTC-USDT`). [`replay_symbol`] splits off the
//! longest quote asset from [`QUOTE_ASSETS`] that ends the name; a name that ends with no
//! listed quote (or already contains a `-`) is kept as it is.

use super::error::KlineError;
use crate::source::file_error::FileError;
use candlepipe_model::candle::MINUTE_MS;
use candlepipe_model::time::parse_instant_ms;
use candlepipe_model::validate::validate_symbol;
use std::fmt;

/// The quote assets split off Binance symbols (`BTCUSDT` -> `BTC-USDT`), longest match
/// first: stablecoins, the crypto quotes and the fiat currencies Binance spot has quoted
/// pairs in. Deliberately absent, because they end real pairs of a shorter quote: `AEUR`
/// (`ADAEUR` is ADA/EUR), `IDR` (`BIDR` pairs), `USD` (`BTCBUSD` is BTC/BUSD).
/// dataset/README.md lists the same assets.
pub const QUOTE_ASSETS: &[&str] = &[
    // stablecoins
    "USDT", "USDC", "FDUSD", "BUSD", "TUSD", "USDP", "USDS", "USD1", "DAI", "PAX", "UST", "VAI",
    "EURI", // crypto
    "BTC", "ETH", "BNB", "XRP", "TRX", "DOGE", // fiat and fiat tokens
    "EUR", "GBP", "AUD", "BRL", "TRY", "RUB", "UAH", "NGN", "ZAR", "PLN", "RON", "ARS", "MXN",
    "COP", "CZK", "JPY", "IDRT", "BIDR", "BKRW", "BVND", "GYEN",
];

/// The replay symbol for a Binance symbol: `BASE-QUOTE` with the longest [`QUOTE_ASSETS`]
/// entry that ends `raw` (and leaves a base), else `raw` unchanged.
pub fn replay_symbol(raw: &str) -> String {
    if raw.contains('-') {
        return raw.to_owned();
    }
    QUOTE_ASSETS
        .iter()
        .filter(|q| raw.len() > q.len() && raw.ends_with(**q))
        .max_by_key(|q| q.len())
        .map_or_else(
            || raw.to_owned(),
            |q| format!("{}-{q}", &raw[..raw.len() - q.len()]),
        )
}

/// The time a file covers, from its name: `[start_ms, end_ms)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    pub start_ms: i64,
    pub end_ms: i64,
    /// As written in the name: `2024-01` or `2024-01-15`.
    pub label: String,
}

impl Period {
    /// Whole minutes in the period: the most rows the file can hold.
    pub fn minutes(&self) -> u64 {
        ((self.end_ms - self.start_ms) / MINUTE_MS) as u64
    }

    pub fn contains(&self, open_time: i64) -> bool {
        (self.start_ms..self.end_ms).contains(&open_time)
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label)
    }
}

/// A parsed kline file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KlineName {
    /// The replay symbol (see [`replay_symbol`]), checked like a parquet file stem.
    pub symbol: String,
    pub period: Period,
}

impl KlineName {
    /// Parses `SYMBOL-1m-YYYY-MM.ext` or `SYMBOL-1m-YYYY-MM-DD.ext` (`ext` is anything:
    /// the caller picked the file by its extension).
    pub fn parse(file_name: &str) -> Result<Self, FileError> {
        let stem = file_name
            .rsplit_once('.')
            .map_or(file_name, |(stem, _)| stem);
        let parts: Vec<&str> = stem.split('-').collect();
        let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
        let n = parts.len();
        let (head, date) = if n >= 5
            && digits(parts[n - 3], 4)
            && digits(parts[n - 2], 2)
            && digits(parts[n - 1], 2)
        {
            (&parts[..n - 3], parts[n - 3..].join("-"))
        } else if n >= 4 && digits(parts[n - 2], 4) && digits(parts[n - 1], 2) {
            (&parts[..n - 2], parts[n - 2..].join("-"))
        } else {
            return Err(KlineError::Name.into());
        };
        let (interval, raw_symbol) = head.split_last().ok_or(KlineError::Name)?;
        if raw_symbol.is_empty() {
            return Err(KlineError::Name.into());
        }
        if *interval != "1m" {
            return Err(KlineError::Interval((*interval).to_owned()).into());
        }
        let period = period(&date).ok_or(KlineError::Name)?;
        let symbol = replay_symbol(&raw_symbol.join("-"));
        validate_symbol(&symbol).map_err(FileError::BadSymbol)?;
        Ok(KlineName { symbol, period })
    }
}

/// `YYYY-MM` (a month) or `YYYY-MM-DD` (a day) as a period; `None` for an impossible date.
fn period(label: &str) -> Option<Period> {
    let instant = |date: &str| parse_instant_ms(date).ok();
    let (start_ms, end_ms) = if label.len() == 10 {
        let start = instant(label)?;
        (start, start + 24 * 60 * MINUTE_MS)
    } else {
        let year: i32 = label[..4].parse().ok()?;
        let month: u32 = label[5..].parse().ok()?;
        if !(1..=12).contains(&month) {
            return None;
        }
        let (next_year, next_month) = if month == 12 {
            (year + 1, 1)
        } else {
            (year, month + 1)
        };
        (
            instant(&format!("{label}-01"))?,
            instant(&format!("{next_year:04}-{next_month:02}-01"))?,
        )
    };
    Some(Period {
        start_ms,
        end_ms,
        label: label.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binance_symbols_split_at_the_longest_listed_quote() {
        for (raw, want) in [
            ("BTCUSDT", "BTC-USDT"),
            ("ETHBTC", "ETH-BTC"),
            ("XRPETH", "XRP-ETH"),
            ("BNBFDUSD", "BNB-FDUSD"),
            ("BTCTUSD", "BTC-TUSD"),
            ("USDCUSDT", "USDC-USDT"),
            ("USDTTRY", "USDT-TRY"),
            ("ADAEUR", "ADA-EUR"),
            ("WBTCBTC", "WBTC-BTC"),
            ("1000SATSUSDT", "1000SATS-USDT"),
            ("BTCBUSD", "BTC-BUSD"),
            ("UNITTESTBTC", "UNITTEST-BTC"),
            // no listed quote ends it, or nothing would be left as base: kept as is
            ("BTCUSD_PERP", "BTCUSD_PERP"),
            ("BTCXYZ", "BTCXYZ"),
            ("USDT", "USDT"),
            // already separated
            ("BTC-USDT", "BTC-USDT"),
        ] {
            assert_eq!(replay_symbol(raw), want, "{raw}");
        }
    }

    #[test]
    fn every_listed_quote_splits_and_none_ends_another() {
        for q in QUOTE_ASSETS {
            assert_eq!(replay_symbol(&format!("ABC{q}")), format!("ABC-{q}"));
            assert_eq!(
                q.to_ascii_uppercase(),
                *q,
                "upper case like Binance symbols"
            );
            // So the longest match never has to choose between two listed quotes (the
            // trap `AEUR` would set for `ADAEUR`).
            for other in QUOTE_ASSETS.iter().filter(|o| *o != q) {
                assert!(!other.ends_with(q), "{other} ends with {q}");
            }
        }
    }

    #[test]
    fn monthly_and_daily_names_give_symbol_and_period() {
        let m = KlineName::parse("BTCUSDT-1m-2024-01.zip").unwrap();
        assert_eq!(m.symbol, "BTC-USDT");
        assert_eq!(m.period.start_ms, parse_instant_ms("2024-01-01").unwrap());
        assert_eq!(m.period.end_ms, parse_instant_ms("2024-02-01").unwrap());
        assert_eq!(m.period.minutes(), 31 * 1440);
        assert_eq!(m.period.to_string(), "2024-01");

        let d = KlineName::parse("ETHBTC-1m-2024-02-29.csv").unwrap();
        assert_eq!(d.symbol, "ETH-BTC");
        assert_eq!(d.period.start_ms, parse_instant_ms("2024-02-29").unwrap());
        assert_eq!(d.period.minutes(), 1440);
        assert!(d.period.contains(d.period.start_ms));
        assert!(!d.period.contains(d.period.end_ms));

        let dec = KlineName::parse("BNBBTC-1m-2023-12.csv").unwrap();
        assert_eq!(dec.period.end_ms, parse_instant_ms("2024-01-01").unwrap());

        let dashed = KlineName::parse("BTC-USDT-1m-2024-01.csv").unwrap();
        assert_eq!(dashed.symbol, "BTC-USDT");
    }

    #[test]
    fn other_names_are_file_errors_that_say_why() {
        for (name, why) in [
            ("notes.csv", "file name is not"),
            ("BTCUSDT.zip", "file name is not"),
            ("BTCUSDT-2024-01.zip", "file name is not"),
            ("1m-2024-01.csv", "file name is not"),
            ("BTCUSDT-1m-2024-13.zip", "file name is not"),
            ("BTCUSDT-1m-2023-02-29.zip", "file name is not"),
            ("BTCUSDT-1h-2024-01.zip", "holds 1h klines"),
            ("BTC USDT-1m-2024-01.csv", "not a usable symbol"),
        ] {
            let err = KlineName::parse(name).unwrap_err().to_string();
            assert!(err.contains(why), "{name}: {err}");
        }
    }
}
