//! State-machine conformance: one table row per (state, event) case of RFC 5798 §6.4 with the
//! expected next state and actions, plus the §6.1 timer formulas and tracking arithmetic.
use super::*;
use std::net::Ipv4Addr;

const ME: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
const LOWER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
const HIGHER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 3));

fn params() -> Params {
    Params {
        version: Version::V3,
        priority: 100,
        adver_int_cs: 100,
        preempt: true,
        preempt_delay: Duration::ZERO,
        primary_ip: ME,
    }
}

fn inst(state: State, f: impl FnOnce(&mut Instance)) -> Instance {
    let mut i = Instance::new(params());
    i.state = state;
    f(&mut i);
    i
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
fn us(n: u64) -> Duration {
    Duration::from_micros(n)
}
fn adv(priority: u8, src: IpAddr) -> Event {
    Event::AdvertReceived {
        priority,
        max_adver_int_cs: 100,
        src,
    }
}

use Action::*;
use Timer::*;

/// prio 100, 1 s: Skew = 156/256 s = 609375 µs; MDI = 3 s + Skew.
const MDI_100: u64 = 3_609_375;
const SKEW_100: u64 = 609_375;

struct Case {
    name: &'static str,
    before: Instance,
    event: Event,
    state: State,
    actions: Vec<Action>,
}

fn cases() -> Vec<Case> {
    let master_entry = |p: u8| {
        vec![
            StopTimer(MasterDown),
            StopTimer(PreemptDelay),
            SendAdvert { priority: p },
            AddVips,
            SendGratuitous,
            StartTimer {
                timer: Adver,
                after: ms(1000),
            },
            Notify(State::Master),
        ]
    };
    // §6.4.2's "transition to Backup" from anywhere, at priority 100 and 1 s adverts.
    let backup_entry = || {
        vec![
            StopTimer(Adver),
            RemoveVips,
            StartTimer {
                timer: MasterDown,
                after: us(MDI_100),
            },
            Notify(State::Backup),
        ]
    };
    // A backup's Master_Down_Timer restarted at Master_Down_Interval.
    let reset_master_down = || {
        vec![StartTimer {
            timer: MasterDown,
            after: us(MDI_100),
        }]
    };
    // A master's advert at once, and the advert timer restarted.
    let advertise_now = |p: u8| {
        vec![
            SendAdvert { priority: p },
            StartTimer {
                timer: Adver,
                after: ms(1000),
            },
        ]
    };
    vec![
        Case {
            name: "§6.4.1 startup, not owner: backup, clear stale VIPs, wait Master_Down_Interval",
            before: inst(State::Initialize, |_| {}),
            event: Event::Startup,
            state: State::Backup,
            actions: backup_entry(),
        },
        Case {
            name: "§6.4.1 startup as owner (255): master at once",
            before: inst(State::Initialize, |i| {
                i.params.priority = 255;
                i.priority = 255;
            }),
            event: Event::Startup,
            state: State::Master,
            actions: master_entry(255),
        },
        Case {
            name: "startup with preempt_delay: the delay timer runs alongside",
            before: inst(State::Initialize, |i| i.params.preempt_delay = ms(5000)),
            event: Event::Startup,
            state: State::Backup,
            actions: vec![
                StopTimer(Adver),
                RemoveVips,
                StartTimer {
                    timer: MasterDown,
                    after: us(MDI_100),
                },
                StartTimer {
                    timer: PreemptDelay,
                    after: ms(5000),
                },
                Notify(State::Backup),
            ],
        },
        Case {
            name: "fatal track failing before startup: fault",
            before: inst(State::Initialize, |_| {}),
            event: Event::FaultSet,
            state: State::Fault,
            actions: vec![RemoveVips, Notify(State::Fault)],
        },
        Case {
            name: "§6.4.2 master down timer: become master",
            before: inst(State::Backup, |_| {}),
            event: Event::MasterDownTimer,
            state: State::Master,
            actions: master_entry(100),
        },
        Case {
            name: "§6.4.2 priority 0 heard: master down timer set to Skew_Time",
            before: inst(State::Backup, |_| {}),
            event: adv(0, LOWER_IP),
            state: State::Backup,
            actions: vec![StartTimer {
                timer: MasterDown,
                after: us(SKEW_100),
            }],
        },
        Case {
            name: "§6.4.2 higher priority heard: reset master down timer",
            before: inst(State::Backup, |_| {}),
            event: adv(200, LOWER_IP),
            state: State::Backup,
            actions: reset_master_down(),
        },
        Case {
            name: "§6.4.2 equal priority heard: reset (no tie-break in backup)",
            before: inst(State::Backup, |_| {}),
            event: adv(100, LOWER_IP),
            state: State::Backup,
            actions: reset_master_down(),
        },
        Case {
            name: "§6.4.2 lower priority heard, preempt: discard (timer runs out, we preempt)",
            before: inst(State::Backup, |_| {}),
            event: adv(50, LOWER_IP),
            state: State::Backup,
            actions: vec![],
        },
        Case {
            name: "§6.4.2 lower priority heard, nopreempt: reset, the lower master stays",
            before: inst(State::Backup, |i| i.params.preempt = false),
            event: adv(50, LOWER_IP),
            state: State::Backup,
            actions: reset_master_down(),
        },
        Case {
            name: "preempt_delay running: lower priority master is kept for now",
            before: inst(State::Backup, |i| i.preempt_blocked = true),
            event: adv(50, LOWER_IP),
            state: State::Backup,
            actions: reset_master_down(),
        },
        Case {
            name: "§6.4.3 adver timer: send and re-arm",
            before: inst(State::Master, |_| {}),
            event: Event::AdverTimer,
            state: State::Master,
            actions: advertise_now(100),
        },
        Case {
            name: "§6.4.3 priority 0 heard by master: advertise at once",
            before: inst(State::Master, |_| {}),
            event: adv(0, LOWER_IP),
            state: State::Master,
            actions: advertise_now(100),
        },
        Case {
            name: "§6.4.3 higher priority heard: step down to backup",
            before: inst(State::Master, |_| {}),
            event: adv(150, LOWER_IP),
            state: State::Backup,
            actions: backup_entry(),
        },
        Case {
            name: "§6.4.3 equal priority, sender address higher: step down",
            before: inst(State::Master, |_| {}),
            event: adv(100, HIGHER_IP),
            state: State::Backup,
            actions: backup_entry(),
        },
        Case {
            name: "§6.4.3 equal priority, sender address lower: stay, advertise now (RFC 9568)",
            before: inst(State::Master, |_| {}),
            event: adv(100, LOWER_IP),
            state: State::Master,
            actions: advertise_now(100),
        },
        Case {
            name: "RFC 9568 §6.4.3 lower priority heard by master: advertise immediately",
            before: inst(State::Master, |_| {}),
            event: adv(50, HIGHER_IP),
            state: State::Master,
            actions: advertise_now(100),
        },
        Case {
            name: "§6.4.3 shutdown as master: priority 0, drop VIPs",
            before: inst(State::Master, |_| {}),
            event: Event::Shutdown,
            state: State::Initialize,
            actions: vec![
                StopTimer(Adver),
                StopTimer(MasterDown),
                StopTimer(PreemptDelay),
                SendAdvert { priority: 0 },
                RemoveVips,
            ],
        },
        Case {
            name: "§6.4.2 shutdown as backup: stop timers",
            before: inst(State::Backup, |_| {}),
            event: Event::Shutdown,
            state: State::Initialize,
            actions: vec![
                StopTimer(Adver),
                StopTimer(MasterDown),
                StopTimer(PreemptDelay),
                RemoveVips,
            ],
        },
        Case {
            name: "fault as master: priority 0 so the backup takes over after Skew_Time",
            before: inst(State::Master, |_| {}),
            event: Event::FaultSet,
            state: State::Fault,
            actions: vec![
                StopTimer(Adver),
                StopTimer(MasterDown),
                StopTimer(PreemptDelay),
                SendAdvert { priority: 0 },
                RemoveVips,
                Notify(State::Fault),
            ],
        },
        Case {
            name: "fault as backup",
            before: inst(State::Backup, |_| {}),
            event: Event::FaultSet,
            state: State::Fault,
            actions: vec![
                StopTimer(Adver),
                StopTimer(MasterDown),
                StopTimer(PreemptDelay),
                Notify(State::Fault),
            ],
        },
        Case {
            name: "fault cleared: start over as backup",
            before: inst(State::Fault, |_| {}),
            event: Event::FaultCleared,
            state: State::Backup,
            actions: backup_entry(),
        },
        Case {
            name: "adverts are ignored in fault",
            before: inst(State::Fault, |_| {}),
            event: adv(200, LOWER_IP),
            state: State::Fault,
            actions: vec![],
        },
        Case {
            name: "stale adver timer in backup is ignored",
            before: inst(State::Backup, |_| {}),
            event: Event::AdverTimer,
            state: State::Backup,
            actions: vec![],
        },
        Case {
            name: "stale master down timer in master is ignored",
            before: inst(State::Master, |_| {}),
            event: Event::MasterDownTimer,
            state: State::Master,
            actions: vec![],
        },
        Case {
            name: "priority change as master: advertise the new priority at once",
            before: inst(State::Master, |_| {}),
            event: Event::PriorityChanged { priority: 80 },
            state: State::Master,
            actions: advertise_now(80),
        },
        Case {
            name: "priority change as backup: used at the next timer reset",
            before: inst(State::Backup, |_| {}),
            event: Event::PriorityChanged { priority: 80 },
            state: State::Backup,
            actions: vec![],
        },
    ]
}

/// Every row of the table: next state and exact actions.
#[test]
fn transitions_table() {
    let now = Instant::now();
    for c in cases() {
        let mut i = c.before;
        let got = step(&mut i, c.event, now);
        assert_eq!(i.state, c.state, "{}", c.name);
        assert_eq!(got, c.actions, "{}", c.name);
    }
}

/// §6.1 formulas as a table: (priority, Master_Adver_Interval cs) → (Skew µs, MDI µs).
#[test]
fn timer_formulas() {
    let rows: &[(u8, u16, u64, u64)] = &[
        (100, 100, 609_375, 3_609_375),
        (254, 100, 7_812, 3_007_812),
        (1, 100, 996_093, 3_996_093),
        (100, 10, 60_937, 360_937),
        (150, 10, 41_406, 341_406),
        (200, 10, 21_875, 321_875),
        (100, 4095, 24_953_906, 147_803_906),
    ];
    for &(prio, int, skew, mdi) in rows {
        let mut i = Instance::new(Params {
            priority: prio,
            adver_int_cs: int,
            ..params()
        });
        i.master_adver_int_cs = int;
        assert_eq!(i.skew_time(), us(skew), "skew prio {prio} int {int}");
        assert_eq!(
            i.master_down_interval(),
            us(mdi),
            "mdi prio {prio} int {int}"
        );
    }
    // v2 (RFC 3768 §6.1): skew does not scale with the interval.
    let mut i = Instance::new(Params {
        version: Version::V2,
        adver_int_cs: 200,
        ..params()
    });
    i.master_adver_int_cs = 200;
    assert_eq!(i.skew_time(), us(609_375));
    assert_eq!(i.master_down_interval(), us(6_609_375));
}

/// §6.4.2: a v3 backup adopts the master's advertised interval for its Master_Down_Interval;
/// a v2 backup keeps its own.
#[test]
fn v3_backup_adopts_master_interval() {
    let now = Instant::now();
    let mut i = inst(State::Backup, |_| {});
    let a = step(
        &mut i,
        Event::AdvertReceived {
            priority: 200,
            max_adver_int_cs: 10,
            src: LOWER_IP,
        },
        now,
    );
    assert_eq!(i.master_adver_int_cs, 10);
    assert_eq!(
        a,
        vec![StartTimer {
            timer: MasterDown,
            after: us(360_937)
        }]
    );
    assert_eq!(i.master, Some(LOWER_IP));

    let mut i = inst(State::Backup, |i| i.params.version = Version::V2);
    step(
        &mut i,
        Event::AdvertReceived {
            priority: 200,
            max_adver_int_cs: 300,
            src: LOWER_IP,
        },
        now,
    );
    assert_eq!(i.master_adver_int_cs, 100);
}

/// The takeover a user sees after a master dies: 100 ms adverts, priority 100 backup takes
/// over within Master_Down_Interval ≈ 0.36 s, and a priority-0 handoff within Skew ≈ 61 ms.
#[test]
fn fast_adverts_takeover_budget() {
    let now = Instant::now();
    let mut i = inst(State::Initialize, |i| {
        i.params.adver_int_cs = 10;
    });
    step(&mut i, Event::Startup, now);
    let a = step(
        &mut i,
        Event::AdvertReceived {
            priority: 150,
            max_adver_int_cs: 10,
            src: LOWER_IP,
        },
        now,
    );
    assert_eq!(
        a,
        vec![StartTimer {
            timer: MasterDown,
            after: us(360_937)
        }]
    );
    let a = step(
        &mut i,
        Event::AdvertReceived {
            priority: 0,
            max_adver_int_cs: 10,
            src: LOWER_IP,
        },
        now,
    );
    assert_eq!(
        a,
        vec![StartTimer {
            timer: MasterDown,
            after: us(60_937)
        }]
    );
}

/// preempt_delay: lower-priority master kept while the delay runs, discarded after.
#[test]
fn preempt_delay_then_preempt() {
    let now = Instant::now();
    let mut i = inst(State::Initialize, |i| i.params.preempt_delay = ms(2000));
    step(&mut i, Event::Startup, now);
    assert!(i.preempt_blocked);
    assert_eq!(step(&mut i, adv(50, LOWER_IP), now).len(), 1);
    step(&mut i, Event::PreemptDelayExpired, now);
    assert!(!i.preempt_blocked);
    assert_eq!(step(&mut i, adv(50, LOWER_IP), now), vec![]);
    let a = step(&mut i, Event::MasterDownTimer, now);
    assert!(a.contains(&AddVips));
    assert_eq!(i.state, State::Master);
}

/// Counters: transitions and "two masters seen".
#[test]
fn counters_and_status() {
    let now = Instant::now();
    let mut i = inst(State::Initialize, |_| {});
    step(&mut i, Event::Startup, now);
    step(&mut i, Event::MasterDownTimer, now);
    assert_eq!(i.master, Some(ME));
    step(&mut i, adv(100, LOWER_IP), now);
    assert_eq!(i.counters.two_masters, 1);
    step(&mut i, adv(200, LOWER_IP), now);
    assert_eq!(
        i.counters,
        Counters {
            transitions: 3,
            two_masters: 2
        }
    );
    let (_, why) = i.last_change.clone().expect("transition recorded");
    assert!(why.contains("higher priority master 198.18.0.1"), "{why}");
}

/// Owner's priority is never moved by tracking.
#[test]
fn owner_priority_is_fixed() {
    let now = Instant::now();
    let mut i = inst(State::Master, |i| {
        i.params.priority = 255;
        i.priority = 255;
    });
    assert_eq!(
        step(&mut i, Event::PriorityChanged { priority: 200 }, now),
        vec![]
    );
    assert_eq!(i.priority, 255);
}

/// Tracking arithmetic (keepalived semantics) as a table.
#[test]
fn effective_priority_table() {
    let w = |weight| TrackWeight { weight };
    type Row = (u8, Vec<(TrackWeight, Option<bool>)>, Option<u8>);
    let rows: Vec<Row> = vec![
        (100, vec![], Some(100)),
        (100, vec![(w(-30), Some(true))], Some(100)),
        (100, vec![(w(-30), Some(false))], Some(70)),
        (100, vec![(w(-30), None)], Some(70)),
        (100, vec![(w(20), Some(true))], Some(120)),
        (100, vec![(w(20), Some(false))], Some(100)),
        (100, vec![(w(0), Some(true))], Some(100)),
        (100, vec![(w(0), Some(false))], None),
        (100, vec![(w(0), None)], None),
        (100, vec![(w(-200), Some(false))], Some(1)),
        (250, vec![(w(50), Some(true))], Some(254)),
        (255, vec![(w(-50), Some(false))], Some(255)),
        (255, vec![(w(0), Some(false))], None),
        (
            100,
            vec![
                (w(-10), Some(false)),
                (w(-20), Some(false)),
                (w(5), Some(true)),
            ],
            Some(75),
        ),
    ];
    for (base, tracks, want) in rows {
        assert_eq!(
            effective_priority(base, &tracks),
            want,
            "base {base} tracks {tracks:?}"
        );
    }
}
