//! `cargo xtask bench` (GC section): the controller's garbage collector with a million flows in
//! the table. Not a test: an ignored benchmark that prints one `BENCH k=v …` line.
//!
//! The real object is loaded with private maps (no pins, no interface), `PGR_CONNTRACK` is
//! filled from userspace with `PGR_BENCH_GC_FLOWS` flows (default 1,000,000 = 2,000,000 entries,
//! forward and reply), most fresh and some expired, then:
//! - baseline: one full walk the old way (`HashMap::iter`, a syscall or two per key), timed;
//! - the GC executor ticks for `PGR_BENCH_GC_SECS` (30) s; measured: the thread's CPU time
//!   (getrusage) over the wall time, entries walked per second, time per full cycle.
use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use pgrouter::dataplane::{
    Applied, Datapath, LoadOptions, Maps,
    gc::{self, Gc, Kernel},
    host,
};
use router_ebpf::{
    BACKEND_ACTIVE, Backend, DEFAULT_HS_ENTRIES, FLOW_F_CLIENT_FIN_SEEN, FLOW_F_CLOSED, Flow,
    FlowKey, Timeouts,
};
use tests::flows::Tuple;

/// The table holds two entries per flow; 2^21 leaves room for 1,000,000 flows.
const CT_ENTRIES: u32 = 2_097_152;

fn env_u64(k: &str, d: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

/// This thread's user + system CPU time.
fn thread_cpu() -> Duration {
    // SAFETY: rusage is plain data; RUSAGE_THREAD fills it for the calling thread.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Flow `i`: client 198.18.(i / 50,000 spread).x:port → VIP 198.18.0.100:5000, backend node
/// 198.18.0.11–13:5432, SNAT address 198.19.(i / 60,000).1 port 1024 + i % 60,000 (unique
/// reply keys). Returns (forward key, forward entry, reply key, reply entry).
fn flow(i: u32, now: u64, uptime_ns: u64) -> (FlowKey, Flow, FlowKey, Flow) {
    let client = u32::from_be_bytes([198, 18, 0, 0]) + 256 + i / 50_000;
    let cport = (10_000 + i % 50_000) as u16;
    let node = u32::from_be_bytes([198, 18, 0, 11]) + i % 3;
    let snat = u32::from_be_bytes([198, 19, 0, 1]) + ((i / 60_000) << 8);
    let sport = (1024 + i % 60_000) as u16;
    // 90 % established and fresh (seen within the last 5 s), 5 % closed 20 s ago (expired:
    // closed timeout 10 s), 5 % closing and idle past the closing timeout (2 min) when the
    // machine has been up long enough, else fresh.
    let (flags, age) = match i % 20 {
        0 => (FLOW_F_CLOSED, 20_000_000_000),
        1 if uptime_ns > 200_000_000_000 => (FLOW_F_CLIENT_FIN_SEEN, 190_000_000_000),
        _ => (0, u64::from(i % 5000) * 1_000_000),
    };
    let last_seen = now.saturating_sub(age);
    let tuple = Tuple {
        client: (Ipv4Addr::from(client), cport),
        vip: (Ipv4Addr::new(198, 18, 0, 100), 5000),
        snat: (Ipv4Addr::from(snat), sport),
        node: (Ipv4Addr::from(node), 5432),
    };
    let [(fk, fwd), (rk, rep)] = tuple.entries(i % 3, flags, last_seen, last_seen);
    (fk, fwd, rk, rep)
}

#[test]
#[ignore = "benchmark: run by `cargo xtask bench` (root, ~1 GB of kernel memory)"]
fn bench_gc_million_flows() {
    let flows = env_u64("PGR_BENCH_GC_FLOWS", 1_000_000).min(u64::from(CT_ENTRIES / 2)) as u32;
    let secs = env_u64("PGR_BENCH_GC_SECS", 30).clamp(1, 600);
    let mut dp = Datapath::load(&LoadOptions {
        pin_path: None,
        conntrack_entries: CT_ENTRIES,
        handshake_entries: DEFAULT_HS_ENTRIES,
    })
    .expect("load the XDP object");
    let mut maps = Maps::take(&mut dp.ebpf).expect("maps");

    // Fill: one insert (syscall) per entry.
    let now = host::monotonic_ns();
    let t = Instant::now();
    let mut open = [0u32; 3];
    let mut expired = 0u64;
    for i in 0..flows {
        let (fk, fwd, rk, rep) = flow(i, now, now);
        maps.conntrack.insert(fk, fwd, 0).expect("insert forward");
        maps.conntrack.insert(rk, rep, 0).expect("insert reply");
        if fwd.flags & FLOW_F_CLOSED == 0 {
            open[fwd.backend_id as usize] += 1;
        }
        if fwd.flags != 0 {
            expired += 1;
        }
    }
    // The slot counts the flows hold, as the kernel would have them: no drift to correct.
    for (b, n) in open.iter().enumerate() {
        maps.conns.set(b as u32, n, 0).expect("backend count");
    }
    let fill_s = t.elapsed().as_secs_f64();
    eprintln!(
        "bench_gc: {flows} flows ({} entries) in {fill_s:.1} s",
        2 * flows
    );

    // Baseline: one full walk the old way (what `status` did every call).
    let (t, c) = (Instant::now(), thread_cpu());
    let walked = maps.conntrack.iter().filter(|r| r.is_ok()).count();
    let walk_wall = t.elapsed().as_secs_f64();
    let walk_cpu = (thread_cpu() - c).as_secs_f64();
    assert_eq!(
        walked as u64,
        2 * u64::from(flows),
        "the walk saw every entry"
    );

    let gc = gc_run(&dp, &mut maps, Duration::from_secs(secs));

    println!(
        "BENCH flows={flows} entries={} expired_flows={expired} fill_s={fill_s:.2} \
         walk_s={walk_wall:.3} walk_cpu_s={walk_cpu:.3} walk_entries_per_s={:.0} {gc}",
        2 * flows,
        walked as f64 / walk_wall,
    );
}

/// The controller's GC executor on the filled table: two full cycles back to back (what the
/// controller does at start; the first reaps the expired flows), then one tick a second (its
/// cadence) for `cadence`. Returns the `gc_*` BENCH fields.
fn gc_run(dp: &Datapath, maps: &mut Maps, cadence: Duration) -> String {
    let prog = Some(dp.gc_program_fd().expect("pgrouter_gc loaded"));
    let mut applied = Applied::default();
    for id in 0..3 {
        applied.backends.insert(
            id,
            Backend {
                state: BACKEND_ACTIVE,
                ..Backend::default()
            },
        );
    }
    let t = Timeouts::default();
    let mut g = Gc::default();
    let mut k = Kernel { maps, prog };
    let mut f = String::new();
    let mut ticks_per_cycle = 0u32;
    for c in 1..=2 {
        let (w, cpu0, walked0) = (Instant::now(), thread_cpu(), g.counters.entries_walked);
        let mut ticks = 1u32;
        while !g.tick(&mut k, &applied, &t, host::monotonic_ns()) {
            ticks += 1;
            assert!(ticks < 100_000, "a full cycle never ended");
        }
        let (wall, cpu) = (
            w.elapsed().as_secs_f64(),
            (thread_cpu() - cpu0).as_secs_f64(),
        );
        ticks_per_cycle = ticks;
        f += &format!(
            " gc_cycle{c}_s={wall:.3} gc_cycle{c}_cpu_s={cpu:.3} gc_cycle{c}_ticks={ticks} gc_cycle{c}_walked={} gc_cycle{c}_reaped={}",
            g.counters.entries_walked - walked0,
            g.counters.reaped,
        );
    }
    let (reaped0, walked0, cycles0) = (
        g.counters.reaped,
        g.counters.entries_walked,
        g.counters.full_cycles,
    );
    // The controller's cadence: one tick a second.
    let (w, cpu0) = (Instant::now(), thread_cpu());
    let mut next = Instant::now();
    while w.elapsed() < cadence {
        g.tick(&mut k, &applied, &t, host::monotonic_ns());
        next += Duration::from_secs(1);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let (wall, cpu) = (
        w.elapsed().as_secs_f64(),
        (thread_cpu() - cpu0).as_secs_f64(),
    );
    let walked = g.counters.entries_walked - walked0;
    f += &format!(
        " gc_secs={wall:.1} gc_cpu_s={cpu:.3} gc_cpu_pct={:.2} gc_walked={walked} gc_walked_per_s={:.0}          gc_cycles={} gc_ticks_per_cycle={ticks_per_cycle} gc_cycle_s={} gc_reaped={reaped0}          gc_reaped_cadence={} gc_kept={} gc_orphans={} gc_drift_corrections={} gc_errors={} gc_per_tick={}",
        100.0 * cpu / wall,
        walked as f64 / wall,
        g.counters.full_cycles - cycles0,
        g.last
            .as_ref()
            .filter(|_| g.counters.full_cycles > cycles0)
            .map(|l| format!("{:.1}", l.duration_ns as f64 / 1e9))
            .unwrap_or_else(|| format!("{ticks_per_cycle}")),
        g.counters.reaped - reaped0,
        g.counters.kept,
        g.counters.orphans,
        g.counters.drift_corrections,
        g.counters.errors,
        gc::ENTRIES_PER_TICK,
    );
    f
}
