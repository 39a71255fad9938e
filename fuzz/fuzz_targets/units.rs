//! Duration, size and port-range parsers (pgrouter's and HAProxy's): no panic, and what they
//! read prints back to text they read the same way.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = pgrouter_fuzz::props::units_text(s) {
        panic!("{e}");
    }
});
