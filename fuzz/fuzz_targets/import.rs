//! `pgrouter import` on bytes (seeded with the import fixtures): haproxy.cfg, then after a NUL
//! byte keepalived.conf. The output passes check-config and applies.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (h, k) = pgrouter_fuzz::props::split_import_input(data);
    if let Err(e) = pgrouter_fuzz::props::import_texts(&h, k.as_deref()) {
        panic!(
            "{e}\n--- haproxy.cfg ---\n{h}\n--- keepalived.conf ---\n{}",
            k.unwrap_or_default()
        );
    }
});
