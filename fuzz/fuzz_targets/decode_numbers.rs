//! Messages in the encoder's layout with numbers spelled every way JSON allows: the decode
//! property where a fast number reader could round wrong (candlepipe_fuzzcheck::numbers).
#![no_main]
libfuzzer_sys::fuzz_target!(|bytes: &[u8]| candlepipe_fuzzcheck::check_decode_numbers_bytes(bytes));
