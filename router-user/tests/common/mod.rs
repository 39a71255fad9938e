//! Helpers shared by the no-root integration tests.
pub mod fake_patroni;
