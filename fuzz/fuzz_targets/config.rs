//! Config text as bytes (seeded with every TOML config in the repository): rejected files name
//! line, column and field; accepted files plan into data-path maps.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = pgrouter_fuzz::props::config_text(text) {
        panic!("{e}\n--- input ---\n{text}");
    }
});
