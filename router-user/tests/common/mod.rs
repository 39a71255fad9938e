//! Helpers shared by the no-root integration tests.
pub mod fake_patroni;

/// The one config builder of the tests (std only), shared with the `tests` crate.
#[path = "../../../tests/src/config.rs"]
#[allow(dead_code, reason = "each test binary uses a different subset")]
pub mod builder;
