//! Structure-aware `pgrouter import`: haproxy.cfg and keepalived.conf from the grammars the
//! importer reads (`gen_import`), checked like `import`.
#![no_main]
use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(h) = pgrouter_fuzz::gen_import::haproxy(&mut u) else {
        return;
    };
    let k = match u.ratio(1, 2) {
        Ok(true) => pgrouter_fuzz::gen_import::keepalived(&mut u).ok(),
        _ => None,
    };
    if let Err(e) = pgrouter_fuzz::props::import_texts(&h, k.as_deref()) {
        panic!(
            "{e}\n--- haproxy.cfg ---\n{h}\n--- keepalived.conf ---\n{}",
            k.unwrap_or_default()
        );
    }
});
