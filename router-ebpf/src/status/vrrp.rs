//! One VRRP instance as its task last published it.
use std::{collections::BTreeMap, net::IpAddr};

use serde::{Deserialize, Serialize};

/// What `pgrouter status` shows for one instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub name: String,
    pub interface: String,
    pub virtual_router_id: u8,
    pub version: u8,
    pub state: VrrpState,
    pub configured_priority: u8,
    pub effective_priority: u8,
    /// Current master as last heard (our own primary address when we are master).
    pub master: Option<IpAddr>,
    pub primary_ip: IpAddr,
    /// Virtual addresses with their prefix length, e.g. `198.18.0.100/24`.
    pub vips: Vec<String>,
    pub last_transition_unix_ms: Option<u64>,
    pub last_transition_reason: Option<String>,
    pub counters: VrrpCounters,
}

/// RFC 5798 §6.4 states plus keepalived's FAULT (the wire form of `vrrp::fsm::State`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VrrpState {
    Initialize,
    Backup,
    Master,
    Fault,
}

impl VrrpState {
    /// As the JSON names it.
    pub fn as_str(self) -> &'static str {
        match self {
            VrrpState::Initialize => "Initialize",
            VrrpState::Backup => "Backup",
            VrrpState::Master => "Master",
            VrrpState::Fault => "Fault",
        }
    }
}

/// An instance's counters since start: the only copy, kept by the instance task in its
/// published status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VrrpCounters {
    /// State changes (from the state machine's own count).
    pub transitions: u64,
    /// This instance, as master, heard a master of equal or higher priority.
    pub two_masters_seen: u64,
    pub adverts_sent: u64,
    pub adverts_received: u64,
    pub send_errors: u64,
    /// Adverts rejected, by reason (every reason present from the start, at 0).
    pub adverts_rejected: BTreeMap<String, u64>,
}
