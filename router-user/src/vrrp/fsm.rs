//! The VRRP state machine of RFC 5798 §6 (and RFC 3768 §6 for v2), pure: `step` takes an
//! event and returns the actions the edge (`net.rs`) must perform. No clock, no socket: timers
//! are actions (`StartTimer`/`StopTimer`) and their expiry comes back as events, so every
//! transition and timer formula is unit-tested without waiting.

use std::net::IpAddr;
use std::time::{Duration, Instant};

pub use self::fsm::{Event, State};
use super::packet::Version;

/// Priority of the address owner (RFC 5798 §5.2.4): starts as master at once.
pub const PRIO_OWNER: u8 = 255;
/// Priority a leaving master advertises so backups take over after Skew_Time (§6.4.3).
pub const PRIO_STOP: u8 = 0;

#[expect(
    clippy::module_inception,
    reason = "holo-vrrp's layout: `mod fsm { State, Event }` names the machine's vocabulary"
)]
pub mod fsm {
    use std::net::IpAddr;

    /// RFC 5798 §6.4 states plus keepalived's FAULT (a fatal track is failing).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
    pub enum State {
        Initialize,
        Backup,
        Master,
        /// Not part of the RFC: keepalived's state for "cannot serve" (fatal track down);
        /// holds no VIP and does not advertise.
        Fault,
    }

    /// Inputs of the machine. Timer events come from timers the machine itself started.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum Event {
        Startup,
        Shutdown,
        MasterDownTimer,
        AdverTimer,
        PreemptDelayExpired,
        /// An advertisement that passed every receive check of §7.1.
        AdvertReceived {
            priority: u8,
            max_adver_int_cs: u16,
            src: IpAddr,
        },
        /// Tracks changed the effective priority (already recomputed via
        /// [`super::effective_priority`]).
        PriorityChanged {
            priority: u8,
        },
        FaultSet,
        FaultCleared,
    }
}

/// Timers the machine asks the edge to run; one of each kind at most. Ordered, so the edge's
/// timer map fires them in a fixed order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    MasterDown,
    Adver,
    PreemptDelay,
}

/// What the edge must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    SendAdvert {
        priority: u8,
    },
    AddVips,
    RemoveVips,
    /// Gratuitous ARP / unsolicited NA; the edge repeats them per the garp settings.
    SendGratuitous,
    StartTimer {
        timer: Timer,
        after: Duration,
    },
    StopTimer(Timer),
    /// Run the notify hook for the state just entered.
    Notify(State),
}

/// Static parameters of one virtual router, taken from the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    pub version: Version,
    /// Configured (base) priority, 1..=255.
    pub priority: u8,
    /// Our Advertisement_Interval in centiseconds.
    pub adver_int_cs: u16,
    /// Preempt_Mode (keepalived `nopreempt` clears it).
    pub preempt: bool,
    /// keepalived `preempt_delay`: after entering Backup, behave as if `nopreempt` this long.
    pub preempt_delay: Duration,
    /// Our primary address on the interface: the tie-break of §6.4.3 compares it.
    pub primary_ip: IpAddr,
}

/// The machine's own counters; the edge publishes them in the instance's status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub transitions: u64,
    /// A master heard another master of equal or higher priority (split brain, briefly).
    pub two_masters: u64,
}

/// The machine's variables (RFC 5798 §6.1) and what the status shows.
#[derive(Clone, Debug)]
pub struct Instance {
    pub params: Params,
    pub state: State,
    /// Priority after tracking; what we advertise and compare.
    pub priority: u8,
    /// Master_Adver_Interval: v3 backups adopt the master's (§6.4.2).
    pub master_adver_int_cs: u16,
    /// Address of the current master as last heard (ours when we are master).
    pub master: Option<IpAddr>,
    /// Whether preempt_delay still holds preemption back.
    pub preempt_blocked: bool,
    pub last_change: Option<(Instant, String)>,
    pub counters: Counters,
}

impl Instance {
    pub fn new(params: Params) -> Instance {
        Instance {
            priority: params.priority,
            master_adver_int_cs: params.adver_int_cs,
            params,
            state: State::Initialize,
            master: None,
            preempt_blocked: false,
            last_change: None,
            counters: Counters::default(),
        }
    }

    /// Skew_Time (RFC 5798 §6.1): `((256 - Priority) * Master_Adver_Interval) / 256`; v2 (RFC
    /// 3768 §6.1): `(256 - Priority) / 256` seconds. Computed in microseconds, as keepalived
    /// does, rather than truncating to centiseconds.
    pub fn skew_time(&self) -> Duration {
        let p = 256 - u64::from(self.priority);
        let int_us = match self.params.version {
            Version::V3 => cs_to_us(self.master_adver_int_cs),
            Version::V2 => 1_000_000,
        };
        Duration::from_micros(p * int_us / 256)
    }

    /// Master_Down_Interval (§6.1): `3 * Master_Adver_Interval + Skew_Time`.
    pub fn master_down_interval(&self) -> Duration {
        Duration::from_micros(3 * cs_to_us(self.master_adver_int_cs)) + self.skew_time()
    }

    fn adver_interval(&self) -> Duration {
        Duration::from_micros(cs_to_us(self.params.adver_int_cs))
    }

    fn enter(&mut self, state: State, now: Instant, reason: String, out: &mut Vec<Action>) {
        if state != self.state {
            self.state = state;
            self.counters.transitions += 1;
            self.last_change = Some((now, reason));
            if state != State::Initialize {
                out.push(Action::Notify(state));
            }
        }
    }

    /// Becomes master (§6.4.1 owner start, §6.4.2 Master_Down_Timer fired).
    fn become_master(&mut self, now: Instant, reason: String, out: &mut Vec<Action>) {
        out.push(Action::StopTimer(Timer::MasterDown));
        out.push(Action::StopTimer(Timer::PreemptDelay));
        out.push(Action::SendAdvert {
            priority: self.priority,
        });
        out.push(Action::AddVips);
        out.push(Action::SendGratuitous);
        out.push(Action::StartTimer {
            timer: Timer::Adver,
            after: self.adver_interval(),
        });
        self.master = Some(self.params.primary_ip);
        self.enter(State::Master, now, reason, out);
    }

    /// Becomes backup (§6.4.1 non-owner start; §6.4.3 higher priority heard).
    fn become_backup(&mut self, now: Instant, reason: String, out: &mut Vec<Action>) {
        out.push(Action::StopTimer(Timer::Adver));
        // Startup: an earlier, killed run may have left our VIPs behind; a backup holds none.
        out.push(Action::RemoveVips);
        out.push(Action::StartTimer {
            timer: Timer::MasterDown,
            after: self.master_down_interval(),
        });
        if self.params.preempt && !self.params.preempt_delay.is_zero() {
            self.preempt_blocked = true;
            out.push(Action::StartTimer {
                timer: Timer::PreemptDelay,
                after: self.params.preempt_delay,
            });
        }
        self.enter(State::Backup, now, reason, out);
    }

    /// §6.4.1: Startup (also used when a fault clears, as keepalived does).
    fn start(&mut self, now: Instant, reason: &str, out: &mut Vec<Action>) {
        self.master_adver_int_cs = self.params.adver_int_cs;
        self.master = None;
        if self.priority == PRIO_OWNER {
            self.become_master(now, format!("{reason}: address owner (priority 255)"), out);
        } else {
            self.become_backup(now, reason.to_string(), out);
        }
    }

    fn stop_all(&mut self, out: &mut Vec<Action>) {
        out.push(Action::StopTimer(Timer::Adver));
        out.push(Action::StopTimer(Timer::MasterDown));
        out.push(Action::StopTimer(Timer::PreemptDelay));
    }
}

fn cs_to_us(cs: u16) -> u64 {
    // A zero interval would spin the timers; one centisecond is the field's smallest unit.
    u64::from(cs.max(1)) * 10_000
}

/// Advances the machine by one event.
pub fn step(inst: &mut Instance, ev: Event, now: Instant) -> Vec<Action> {
    let mut out = Vec::new();
    match (inst.state, ev) {
        // §6.4.1: Startup in Initialize.
        (State::Initialize, Event::Startup) => inst.start(now, "startup", &mut out),
        // keepalived: a fatal track failing before or at startup keeps us in FAULT.
        // Stale VIPs of an earlier, killed run go here too: FAULT holds none.
        (State::Initialize, Event::FaultSet) => {
            out.push(Action::RemoveVips);
            inst.enter(State::Fault, now, "fault before startup".into(), &mut out);
        }

        // §6.4.2 / §6.4.3: Shutdown. A master advertises priority 0 so backups take over after
        // Skew_Time instead of Master_Down_Interval, and gives the VIPs up.
        (State::Master, Event::Shutdown) => {
            inst.stop_all(&mut out);
            out.push(Action::SendAdvert {
                priority: PRIO_STOP,
            });
            out.push(Action::RemoveVips);
            inst.master = None;
            inst.enter(State::Initialize, now, "shutdown".into(), &mut out);
        }
        (_, Event::Shutdown) => {
            inst.stop_all(&mut out);
            out.push(Action::RemoveVips);
            inst.master = None;
            inst.enter(State::Initialize, now, "shutdown".into(), &mut out);
        }

        // §6.4.2: Master_Down_Timer fires in Backup.
        (State::Backup, Event::MasterDownTimer) => {
            let why = match inst.master {
                Some(m) => format!("master down timer expired (last master {m})"),
                None => "master down timer expired (no master heard)".to_string(),
            };
            inst.become_master(now, why, &mut out);
        }
        // keepalived preempt_delay: once it has run out, lower-priority adverts are discarded
        // again (§6.4.2), so Master_Down_Timer runs out and we preempt.
        (State::Backup, Event::PreemptDelayExpired) => inst.preempt_blocked = false,

        // §6.4.2: ADVERTISEMENT received in Backup.
        (
            State::Backup,
            Event::AdvertReceived {
                priority,
                max_adver_int_cs,
                src,
            },
        ) => {
            if priority == PRIO_STOP {
                // "Set the Master_Down_Timer to Skew_Time".
                out.push(Action::StartTimer {
                    timer: Timer::MasterDown,
                    after: inst.skew_time(),
                });
            } else if !inst.params.preempt || inst.preempt_blocked || priority >= inst.priority {
                // v3: "Set Master_Adver_Interval to Adver Interval contained in the
                // ADVERTISEMENT"; v2 intervals must match already (RFC 3768 §7.1).
                if inst.params.version == Version::V3 {
                    inst.master_adver_int_cs = max_adver_int_cs.max(1);
                }
                inst.master = Some(src);
                out.push(Action::StartTimer {
                    timer: Timer::MasterDown,
                    after: inst.master_down_interval(),
                });
            }
            // else: preempting a lower-priority master: "discard the ADVERTISEMENT" and let
            // Master_Down_Timer run out.
        }

        // §6.4.3: Adver_Timer fires in Master.
        (State::Master, Event::AdverTimer) => {
            out.push(Action::SendAdvert {
                priority: inst.priority,
            });
            out.push(Action::StartTimer {
                timer: Timer::Adver,
                after: inst.adver_interval(),
            });
        }

        // §6.4.3: ADVERTISEMENT received in Master.
        (
            State::Master,
            Event::AdvertReceived {
                priority,
                max_adver_int_cs,
                src,
            },
        ) => {
            let higher = priority > inst.priority
                || (priority == inst.priority && ip_greater(src, inst.params.primary_ip));
            if priority == PRIO_STOP {
                // "Send an ADVERTISEMENT; Reset the Adver_Timer to Advertisement_Interval".
                out.push(Action::SendAdvert {
                    priority: inst.priority,
                });
                out.push(Action::StartTimer {
                    timer: Timer::Adver,
                    after: inst.adver_interval(),
                });
            } else if higher {
                inst.counters.two_masters += 1;
                if inst.params.version == Version::V3 {
                    inst.master_adver_int_cs = max_adver_int_cs.max(1);
                }
                inst.master = Some(src);
                out.push(Action::StopTimer(Timer::Adver));
                out.push(Action::RemoveVips);
                out.push(Action::StartTimer {
                    timer: Timer::MasterDown,
                    after: inst.master_down_interval(),
                });
                let why = format!("higher priority master {src} (priority {priority})");
                inst.enter(State::Backup, now, why, &mut out);
            } else {
                if priority == inst.priority {
                    inst.counters.two_masters += 1;
                }
                // RFC 9568 §6.4.3: a lower-priority advertisement means the sender believes it
                // is master; advertise now so it steps down without waiting an interval.
                out.push(Action::SendAdvert {
                    priority: inst.priority,
                });
                out.push(Action::StartTimer {
                    timer: Timer::Adver,
                    after: inst.adver_interval(),
                });
            }
        }

        // Tracking changed our priority. A master tells the others at once (the RFC would wait
        // for the next Adver_Timer); a backup uses it at the next timer reset.
        (state, Event::PriorityChanged { priority }) => {
            let priority = if inst.params.priority == PRIO_OWNER {
                PRIO_OWNER
            } else {
                priority
            };
            if priority != inst.priority {
                inst.priority = priority;
                if state == State::Master {
                    out.push(Action::SendAdvert { priority });
                    out.push(Action::StartTimer {
                        timer: Timer::Adver,
                        after: inst.adver_interval(),
                    });
                }
            }
        }

        // keepalived FAULT: a fatal track failed. A master advertises priority 0 on its way out,
        // as keepalived does, so the backup need not wait Master_Down_Interval.
        (State::Master, Event::FaultSet) => {
            inst.stop_all(&mut out);
            out.push(Action::SendAdvert {
                priority: PRIO_STOP,
            });
            out.push(Action::RemoveVips);
            inst.master = None;
            inst.enter(State::Fault, now, "fatal track failed".into(), &mut out);
        }
        (State::Backup, Event::FaultSet) => {
            inst.stop_all(&mut out);
            inst.enter(State::Fault, now, "fatal track failed".into(), &mut out);
        }
        (State::Fault, Event::FaultCleared) => inst.start(now, "fault cleared", &mut out),

        // Everything else is not meaningful in that state (e.g. a stale timer racing a
        // transition, or adverts heard while in Fault) and is ignored.
        _ => {}
    }
    out
}

/// §6.4.3 tie-break: "the primary IPvX address of the sender is greater than the local
/// primary IPvX address" — compared as unsigned integers in network order.
fn ip_greater(a: IpAddr, b: IpAddr) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => a.octets() > b.octets(),
        (IpAddr::V6(a), IpAddr::V6(b)) => a.octets() > b.octets(),
        _ => false,
    }
}

/// One tracked input as configured: keepalived's `track_script`/`track_interface` weight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackWeight {
    /// keepalived semantics: `< 0` subtracts `|w|` while failing; `> 0` adds `w` while
    /// succeeding; `0` means fatal, i.e. FAULT while failing.
    pub weight: i32,
}

/// Effective priority from the configured one and the tracks' current results
/// (`None` = not reported yet, treated as failing so we never claim a VIP before the
/// controller has checked). Returns `None` when a fatal (weight 0) track fails.
/// Clamped to 1..=254 unless we are the address owner, whose priority never moves.
pub fn effective_priority(base: u8, tracks: &[(TrackWeight, Option<bool>)]) -> Option<u8> {
    let mut p = i32::from(base);
    for (t, up) in tracks {
        let up = up.unwrap_or(false);
        match t.weight {
            0 if !up => return None,
            w if w < 0 && !up => p += w,
            w if w > 0 && up => p += w,
            _ => {}
        }
    }
    if base == PRIO_OWNER {
        return Some(PRIO_OWNER);
    }
    Some(u8::try_from(p.clamp(1, 254)).unwrap_or(1))
}

#[cfg(test)]
#[path = "fsm_tests.rs"]
mod tests;
