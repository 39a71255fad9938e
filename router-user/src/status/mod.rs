//! The operator's view. The types are `router_ebpf::status`'s (the JSON contract shared with the
//! CLI, the tests and xtask), re-exported here; this module gathers them from the daemon's
//! state ([`collect`]) and prints them as tables ([`render`]). Metrics render the same
//! [`Status`] (`crate::metrics`), so the two never disagree.
mod collect;
mod render;

pub use collect::{GcView, collect};
pub use render::render;
pub use router_ebpf::status::*;

use crate::{config, model, vrrp::fsm};

// The wire enums mirror daemon enums; exhaustive matches keep them in step.

impl From<config::Checks> for Checks {
    fn from(c: config::Checks) -> Self {
        match c {
            config::Checks::Patroni => Checks::Patroni,
            config::Checks::Static => Checks::Static,
        }
    }
}

impl From<config::ListenerKind> for ListenerKind {
    fn from(k: config::ListenerKind) -> Self {
        match k {
            config::ListenerKind::Primary => ListenerKind::Primary,
            config::ListenerKind::Replica => ListenerKind::Replica,
            config::ListenerKind::ReadOnly => ListenerKind::ReadOnly,
        }
    }
}

impl From<fsm::State> for VrrpState {
    fn from(s: fsm::State) -> Self {
        match s {
            fsm::State::Initialize => VrrpState::Initialize,
            fsm::State::Backup => VrrpState::Backup,
            fsm::State::Master => VrrpState::Master,
            fsm::State::Fault => VrrpState::Fault,
        }
    }
}

impl From<model::BackendState> for BackendState {
    fn from(s: model::BackendState) -> Self {
        match s {
            model::BackendState::Active => BackendState::Active,
            model::BackendState::Drain => BackendState::Drain,
            model::BackendState::Shutdown => BackendState::Down,
        }
    }
}
