//! Messages laid out exactly as the producer writes them, with the numbers spelled every
//! way JSON allows: the input of the `decode_numbers` target.
//!
//! The decode property ([`crate::message`]) is the same as for raw bytes; what differs is
//! where the inputs land. Byte mutations of a message mostly break its layout, while the
//! consumer's decoder has a fast path for the encoder's exact layout with its own number
//! reading (digit scanning, correctly rounded decimal-to-binary conversion). Rounding
//! mistakes are not coverage: they hide in particular values (halfway cases, 17+ digit
//! mantissas, exponents at the edge of `f64`), which a coverage-guided mutator reaches
//! slowly. So here every message has the encoder's layout, prices are often equal (so
//! validation passes and the candle is compared field by field with serde_json's reading),
//! and each number is one of:
//!
//! * the encoder's own spelling of any finite non-negative `f64`;
//! * the exact decimal digits of any `f64`, cut to 1..=40 significant digits (near-halfway
//!   and beyond-17-digit cases);
//! * any digit strings in number syntax: integer part, fraction, `e`/`E`, `+`/`-` exponent,
//!   leading zeros included (which JSON forbids, so both readers must refuse).

use crate::message::check_decode;
use arbitrary::{Arbitrary, Unstructured};

/// Checks the decode property on the message that `arbitrary` builds from `bytes`.
pub fn check_decode_numbers_bytes(bytes: &[u8]) {
    if let Ok(input) = NumbersInput::arbitrary_take_rest(Unstructured::new(bytes)) {
        check_decode(&input.message());
    }
}

/// A v1 message in the encoder's layout.
#[derive(Debug, Clone, Arbitrary)]
pub struct NumbersInput {
    /// Symbol characters (mapped onto the allowed charset, with a few others).
    pub symbol: Vec<u8>,
    /// Live (true) or replay.
    pub live: bool,
    /// Minutes after 2000-01-01 (valid up to about 2100).
    pub minute: u32,
    /// `open`, `high`, `low`, `close`.
    pub prices: [Number; 4],
    /// Use `prices[0]` for all four prices (a valid candle whatever the number).
    pub one_price: bool,
    pub volume: Number,
    /// `quote_volume`, `taker_buy_base`, `taker_buy_quote`.
    pub optional: [Option<Number>; 3],
    pub trades: Option<u64>,
    /// `closed` written as `false` (else `true`).
    pub still_open: bool,
    pub produced_at: i64,
}

/// One JSON number, spelled one of several ways (see the module docs).
#[derive(Debug, Clone, Arbitrary)]
pub enum Number {
    /// The encoder's spelling (ryu, shortest round trip) of a finite non-negative `f64`.
    Shortest(u64),
    /// The exact decimal digits of a finite non-negative `f64`, to `digits % 40 + 1`
    /// significant digits, in scientific notation.
    Precise { bits: u64, digits: u8 },
    /// Digit strings (each byte taken modulo 10) in number syntax.
    Spelled {
        int: Vec<u8>,
        fraction: Option<Vec<u8>>,
        exponent: Option<Exponent>,
    },
}

/// The exponent part of a [`Number::Spelled`].
#[derive(Debug, Clone, Arbitrary)]
pub struct Exponent {
    pub capital: bool,
    /// `None`: no sign; `Some(true)`: `+`; `Some(false)`: `-`.
    pub plus: Option<bool>,
    pub digits: Vec<u8>,
}

/// Symbol bytes: the validator's charset, then a few it refuses (a quote and a backslash
/// too, which the fast path must not read as part of a symbol).
const SYMBOL_BYTES: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-\" \\/";

/// A finite non-negative `f64` from any bits.
fn amount(bits: u64) -> f64 {
    f64::from_bits((bits & !(1 << 63)) % f64::INFINITY.to_bits())
}

fn digits(bytes: &[u8]) -> String {
    bytes.iter().map(|b| char::from(b'0' + b % 10)).collect()
}

impl Number {
    /// The JSON text of the number.
    pub fn text(&self) -> String {
        match self {
            Number::Shortest(bits) => ryu::Buffer::new().format_finite(amount(*bits)).to_owned(),
            Number::Precise { bits, digits } => {
                format!("{:.*e}", usize::from(*digits % 40), amount(*bits))
            }
            Number::Spelled {
                int,
                fraction,
                exponent,
            } => {
                let mut text = if int.is_empty() {
                    "0".to_owned()
                } else {
                    digits(int)
                };
                if let Some(fraction) = fraction {
                    text.push('.');
                    text.push_str(&digits(fraction));
                }
                if let Some(e) = exponent {
                    text.push(if e.capital { 'E' } else { 'e' });
                    match e.plus {
                        Some(true) => text.push('+'),
                        Some(false) => text.push('-'),
                        None => {}
                    }
                    text.push_str(&digits(&e.digits));
                }
                text
            }
        }
    }
}

impl NumbersInput {
    /// The message bytes, keys in the order and spelling `codec::encode` writes them.
    pub fn message(&self) -> Vec<u8> {
        let symbol: String = if self.symbol.is_empty() {
            "BTC-USDT".to_owned()
        } else {
            self.symbol
                .iter()
                .map(|&b| char::from(SYMBOL_BYTES[usize::from(b) % SYMBOL_BYTES.len()]))
                .collect()
        };
        let price = |i: usize| self.prices[if self.one_price { 0 } else { i }].text();
        // validate's bounds: 2000-01-01 up to (not including) 2100-01-01, 52,596,000 minutes.
        let open_time = 946_684_800_000 + i64::from(self.minute % 52_596_000) * 60_000;
        let mut m = format!(
            r#"{{"v":1,"source":"{}","symbol":"{symbol}","interval":"1m","open_time":{open_time},"open":{},"high":{},"low":{},"close":{},"volume":{}"#,
            if self.live { "live" } else { "replay" },
            price(0),
            price(1),
            price(2),
            price(3),
            self.volume.text(),
        );
        let keys = ["quote_volume", "taker_buy_base", "taker_buy_quote"];
        for (i, (key, number)) in keys.iter().zip(&self.optional).enumerate() {
            if let Some(number) = number {
                m.push_str(&format!(r#","{key}":{}"#, number.text()));
            }
            if let (0, Some(trades)) = (i, self.trades) {
                m.push_str(&format!(r#","trades":{trades}"#));
            }
        }
        m.push_str(&format!(
            r#","closed":{},"produced_at":{}}}"#,
            !self.still_open, self.produced_at
        ));
        m.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candlepipe_model::codec;

    #[test]
    fn numbers_are_spelled_as_described() {
        assert_eq!(Number::Shortest(1.5f64.to_bits()).text(), "1.5");
        assert_eq!(Number::Shortest((-2.0f64).to_bits()).text(), "2.0");
        assert_eq!(
            Number::Precise {
                bits: 0.1f64.to_bits(),
                digits: 24
            }
            .text(),
            "1.000000000000000055511151e-1"
        );
        let spelled = Number::Spelled {
            int: vec![10, 3],
            fraction: Some(vec![25]),
            exponent: Some(Exponent {
                capital: true,
                plus: Some(false),
                digits: vec![7],
            }),
        };
        assert_eq!(spelled.text(), "03.5E-7");
    }

    #[test]
    fn a_message_in_the_encoder_layout_is_what_encode_writes() {
        let input = NumbersInput {
            symbol: vec![1, 19, 2], // B T C in SYMBOL_BYTES
            live: false,
            minute: 11_131_200,
            prices: [0, 1, 2, 3].map(|_| Number::Shortest(45134.11f64.to_bits())),
            one_price: true,
            volume: Number::Shortest(123.4f64.to_bits()),
            optional: [Some(Number::Shortest(5571234.2f64.to_bits())), None, None],
            trades: Some(1523),
            still_open: false,
            produced_at: 7,
        };
        let message = input.message();
        let candle = codec::decode(&message).unwrap();
        assert_eq!(candle.open_time, 1_614_556_800_000);
        let mut encoded = Vec::new();
        codec::encode(&candle, 7, &mut encoded).unwrap();
        assert_eq!(
            String::from_utf8(encoded).unwrap(),
            String::from_utf8(message).unwrap()
        );
    }

    /// The generator is only useful if many of its messages are valid candles (only those
    /// are compared with serde's reading field by field, and only they take the fast path).
    #[test]
    fn many_generated_messages_are_accepted() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut built, mut accepted) = (0, 0);
        for _ in 0..1000 {
            let bytes: Vec<u8> = (0..160).map(|_| next() as u8).collect();
            let Ok(input) = NumbersInput::arbitrary_take_rest(Unstructured::new(&bytes)) else {
                continue;
            };
            built += 1;
            accepted += usize::from(codec::decode(&input.message()).is_ok());
        }
        assert!(
            built > 900,
            "only {built} of 1000 byte strings built an input"
        );
        // About a quarter with arbitrary 1.x; a tenth is still plenty.
        assert!(
            accepted * 10 > built,
            "only {accepted} of {built} generated messages decode"
        );
    }

    #[test]
    fn arbitrary_bytes_of_any_length_are_checked_or_skipped() {
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 101 + 7) as u8).collect();
            check_decode_numbers_bytes(&bytes);
        }
    }
}
