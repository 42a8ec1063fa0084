//! # candlepipe-fuzzcheck
//!
//! The guarantees candlepipe's two text formats make, written once as checkable properties:
//!
//! * [`message`]: a Kafka message value. `codec::decode` never panics, whatever the bytes,
//!   and every candle it accepts is valid, reads the same as a plain JSON parser reads it, and
//!   re-encodes and decodes to the identical candle (floats bit for bit).
//!   [`numbers`] feeds the same property messages in the encoder's exact layout with numbers
//!   spelled every way JSON allows, where a fast decoder's own number reading could round
//!   differently.
//! * [`line`]: an InfluxDB line. Any point, however hostile its symbol and whatever its
//!   floats, either encodes to one line that `lineproto_parse::parse_line` reads back as exactly
//!   the point (measurement, tags, fields bit for bit, timestamp), or is refused with the
//!   error the encoder documents, writing nothing.
//!
//! Each property is a function that panics when the guarantee is broken. Two callers share
//! them, which is why they live in a library rather than in the fuzz targets:
//!
//! * `fuzz/fuzz_targets/*.rs` (cargo-fuzz, nightly flags): three-line wrappers that hand
//!   libFuzzer's bytes to [`TARGETS`]' function of the same name, for minutes or hours.
//! * `tests/corpus.rs` (plain `cargo test`, stable): replays every file under
//!   `fuzz/corpus/<target>/` through the same function, so the committed seeds (including
//!   any input that once crashed) keep guarding the code in CI without a fuzzer.
//!
//! Both callers take raw bytes; the structured targets turn them into a [`LineInput`] or a
//! [`NumbersInput`] here, with `arbitrary`, so a corpus file means the same input to both.

pub mod line;
pub mod message;
pub mod numbers;

pub use line::{check_lineproto, check_lineproto_bytes, LineInput};
pub use message::check_decode;
pub use numbers::{check_decode_numbers_bytes, NumbersInput};

/// A fuzz target's property over raw input bytes; it panics when the property is broken.
pub type Property = fn(&[u8]);

/// Every fuzz target, by the name of its file in `fuzz/fuzz_targets/` and of its corpus
/// directory in `fuzz/corpus/`: the one table that ties a corpus to its property.
pub const TARGETS: &[(&str, Property)] = &[
    ("decode", check_decode),
    ("decode_numbers", check_decode_numbers_bytes),
    ("lineproto", check_lineproto_bytes),
];

/// The property of the fuzz target `name`, if there is one.
pub fn property(name: &str) -> Option<Property> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|&(_, p)| p)
}
