//! Any point through the line protocol encoder: it reads back exactly or is refused as
//! documented (the property: candlepipe_fuzzcheck::line).
#![no_main]
libfuzzer_sys::fuzz_target!(|bytes: &[u8]| candlepipe_fuzzcheck::check_lineproto_bytes(bytes));
