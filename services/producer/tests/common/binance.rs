//! Candles written as Binance public-data kline files, for the tests and the replay
//! bench (each includes this file with `#[path]`): lines formatted as data.binance.vision
//! writes them, in `.csv` files or in `.zip` files holding one deflated CSV.
#![allow(dead_code)] // each includer uses a part

use candlepipe_model::candle::MINUTE_MS;
use candlepipe_model::Candle;
use std::io::Write;
use std::path::{Path, PathBuf};
use zip::write::SimpleFileOptions;
use zip::CompressionMethod;

/// Writes `text` as a `.csv`, or as the one deflated CSV inside a `.zip`, by `name`.
pub fn write_kline_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    if name.ends_with(".zip") {
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
        let options = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
        zip.start_file(name.replace(".zip", ".csv"), options)
            .unwrap();
        zip.write_all(text.as_bytes()).unwrap();
        zip.finish().unwrap();
    } else {
        std::fs::write(&path, text).unwrap();
    }
    path
}

/// The unit a Binance file stamps times in.
#[derive(Debug, Clone, Copy)]
pub enum Unit {
    Millis,
    Micros,
}

/// How a kline file writes its decimals.
#[derive(Debug, Clone, Copy)]
pub enum Digits {
    /// As Binance does: 8 places (`0.07451000`).
    Eight,
    /// The shortest decimal that reads back as the same f64 (`0.0016200000000000001`).
    Shortest,
}

impl Digits {
    pub fn format(self, v: f64) -> String {
        match self {
            Digits::Eight => format!("{v:.8}"),
            Digits::Shortest => format!("{v}"),
        }
    }

    /// The value `v` reads back as once written.
    pub fn typed(self, v: f64) -> f64 {
        self.format(v).parse().unwrap()
    }
}

/// A candle as a Binance kline line, formatted as data.binance.vision writes it: integer
/// times (`close_time` = the minute's last ms or µs), decimals with 8 places (unless
/// `digits` says otherwise). The candle's missing extras are made up: quote volume =
/// volume × close, taker halves, a trade count from the minute.
pub fn binance_line(c: &Candle, unit: Unit, digits: Digits) -> String {
    let scale = match unit {
        Unit::Millis => 1,
        Unit::Micros => 1_000,
    };
    let open_time = c.open_time * scale;
    let quote = c.quote_volume.unwrap_or(c.volume * c.close);
    let d = |v: f64| digits.format(v);
    format!(
        "{open_time},{},{},{},{},{},{},{},{},{},{},0",
        d(c.open),
        d(c.high),
        d(c.low),
        d(c.close),
        d(c.volume),
        open_time + MINUTE_MS * scale - 1,
        d(quote),
        c.trades.unwrap_or((c.open_time / MINUTE_MS % 977) as u64),
        d(c.taker_buy_base.unwrap_or(c.volume / 2.0)),
        d(c.taker_buy_quote.unwrap_or(quote / 2.0)),
    )
}
