//! Structure-aware config: TOML from the real sections and keys (`gen_config`), checked like
//! `config`.
#![no_main]
use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(text) = pgrouter_fuzz::gen_config::config(&mut u) else {
        return;
    };
    if let Err(e) = pgrouter_fuzz::props::config_text(&text) {
        panic!("{e}\n--- input ---\n{text}");
    }
});
