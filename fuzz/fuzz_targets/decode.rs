//! Any bytes as a Kafka message value: `codec::decode` never panics, and what it accepts
//! round-trips exactly (the property: candlepipe_fuzzcheck::message).
#![no_main]
libfuzzer_sys::fuzz_target!(|bytes: &[u8]| candlepipe_fuzzcheck::check_decode(bytes));
