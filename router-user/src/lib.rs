//! pgrouter's controller: configuration, Patroni health checks, VRRP, and the writer that
//! turns decisions into BPF map updates. Pure cores (health, vrrp::fsm, dataplane::plan) take
//! events and return actions; sockets, timers, HTTP and BPF syscalls stay at the edges.
//!
//! Nothing outside tests may `unwrap`, `expect`, index or slice (`v[i]`, `&b[a..n]`): input
//! (configs, imported files, VRRP packets, Patroni answers, sync frames, kernel batches) is
//! judged with errors that name what is wrong, and a short buffer or a stale index is one of
//! them, never a panic. Use `get`, slice patterns, `split_first_chunk`, iterators; indexing a
//! fixed-size array with a constant is fine (the compiler checks it). The denies below are
//! checked in CI (`cargo xtask test` runs clippy).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]
pub mod config;
pub mod control;
pub mod controller;
pub mod dataplane;
pub mod health;
pub mod import;
pub mod metrics;
pub mod model;
pub mod sdnotify;
pub mod status;
pub mod sync;
pub mod vrrp;

/// The one config builder of all tests (std only), shared with the `tests` crate and with the
/// integration tests (`tests/common`): unit tests build their TOML with it.
#[cfg(test)]
#[path = "../../tests/src/config.rs"]
#[allow(dead_code, reason = "each test module uses a different subset")]
pub(crate) mod test_config;

/// A flow's two table entries as the data path writes them (std and `router_ebpf` only),
/// shared with the `tests` crate.
#[cfg(test)]
#[path = "../../tests/src/flows.rs"]
#[allow(dead_code, reason = "each test module uses a different subset")]
pub(crate) mod test_flows;
