//! pgrouter's controller: configuration, Patroni health checks, VRRP, and the writer that
//! turns decisions into BPF map updates. Pure cores (health, vrrp::fsm, dataplane::plan) take
//! events and return actions; sockets, timers, HTTP and BPF syscalls stay at the edges.
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
pub mod vrrp;
