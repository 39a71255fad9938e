//! Patroni's answer judge: any status and body, for each check kind; the verdict is one of the
//! defined ones and consistent with the answer.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use pgrouter::health::verdict::CheckKind;

#[derive(Arbitrary, Debug)]
struct Input {
    kind: u8,
    lag: Option<u64>,
    status: u16,
    body: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let kind = match input.kind % 3 {
        0 => CheckKind::Primary,
        1 => CheckKind::Replica { lag: input.lag },
        _ => CheckKind::ReadOnly { lag: input.lag },
    };
    if let Err(e) = pgrouter_fuzz::props::patroni_answer(&kind, input.status, &input.body) {
        panic!(
            "{e}\n{kind} {} {:?}",
            input.status,
            String::from_utf8_lossy(&input.body)
        );
    }
});
