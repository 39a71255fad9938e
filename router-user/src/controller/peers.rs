//! The event loop's flow-state sync steps: events and peer messages into `crate::sync`, the
//! grace window from the VRRP states, the refresh tick. `crate::sync` owns the decisions.
use super::Daemon;
use crate::{dataplane, sync::SyncEvent};

impl Daemon {
    /// Whether each VRRP instance is master now (for the takeover grace window).
    pub(super) fn masters(&self) -> Vec<bool> {
        self.vrrp
            .iter()
            .map(|h| h.status().state == crate::status::VrrpState::Master)
            .collect()
    }

    pub(super) fn sync_grace(&mut self) {
        let masters = self.masters();
        if let Some(s) = self.sync.as_mut() {
            s.grace(&masters, dataplane::host::monotonic_ns());
        }
    }

    pub(super) fn sync_tick(&mut self) {
        if let Some(s) = self.sync.as_mut() {
            s.tick(&mut self.maps, dataplane::host::monotonic_ns());
        }
    }

    pub(super) fn on_sync(&mut self, ev: SyncEvent) {
        let Some(s) = self.sync.as_mut() else {
            return;
        };
        let now = dataplane::host::monotonic_ns();
        let was_ready = s.ready();
        match ev {
            SyncEvent::Flows(evs) => s.on_flows(&evs, now),
            SyncEvent::Inbound(m) => {
                let prog = self.dp.gc_program_fd().ok();
                s.on_inbound(m, &mut self.maps, prog, &self.applied, now);
            }
        }
        if s.ready() != was_ready {
            // Preemption may wait on the `sync` track: tell VRRP at once.
            self.update_tracks();
        }
    }
}
