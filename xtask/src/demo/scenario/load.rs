//! Client load for the scenarios: long-lived sessions through the VIP and pgbench runs.
use super::Env;
use crate::demo::prober;
use crate::lab::{Lab, VIP};
use anyhow::{Context, Result, anyhow, bail};
use std::sync::Mutex;
use std::time::Duration;

/// Long-lived sessions through the VIP (half on 5000, half on 5001), each running a query
/// every 200 ms on a thread in the client namespace.
pub struct Sessions {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<(u64, Vec<String>)>,
}

impl Sessions {
    pub fn open(_clock: prober::Clock, n: usize) -> Result<Sessions> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel::<Result<()>>();
        let s2 = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut clients = vec![];
            let setup = (|| -> Result<()> {
                let path = format!("/run/netns/{}", crate::lab::CLIENT_NS);
                let f = std::fs::File::open(&path)?;
                // SAFETY: plain syscall on a valid fd; affects only this thread.
                if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) }
                    != 0
                {
                    bail!("setns: {}", std::io::Error::last_os_error());
                }
                for i in 0..n {
                    let port = if i % 2 == 0 { 5000 } else { 5001 };
                    clients.push((
                        port,
                        prober::connect(VIP, port, Duration::from_secs(2))
                            .with_context(|| format!("session {i} to {VIP}:{port}"))?,
                    ));
                }
                Ok(())
            })();
            let failed = setup.is_err();
            let _ = tx.send(setup);
            if failed {
                return (0, vec![]);
            }
            let (mut queries, mut errors) = (0u64, vec![]);
            let mut dead = vec![false; clients.len()];
            while !s2.load(Ordering::Relaxed) {
                for (i, (port, c)) in clients.iter_mut().enumerate() {
                    if dead[i] {
                        continue;
                    }
                    match c.simple_query("SELECT 1") {
                        Ok(_) => queries += 1,
                        Err(e) => {
                            errors.push(format!("session {i} (:{port}): {e}"));
                            dead[i] = true;
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            (queries, errors)
        });
        rx.recv_timeout(Duration::from_secs(10))
            .map_err(|_| anyhow!("sessions: no answer"))??;
        Ok(Sessions { stop, handle })
    }

    /// Stops the sessions; returns (queries run, errors).
    pub fn close(self) -> (u64, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.join().unwrap_or((0, vec!["panicked".into()]))
    }
}

const PGBENCH: &str = "/usr/lib/postgresql/15/bin/pgbench";

/// `pgbench -i -s 5` through the VIP unless the tables exist.
pub(super) fn pgbench_init(lab: &Lab) -> Result<()> {
    let have = lab.psql_port(
        VIP,
        5000,
        "SELECT to_regclass('pgbench_accounts') IS NOT NULL",
    )?;
    if have == "t" {
        return Ok(());
    }
    let mut c = crate::lab::util::ns_cmd(
        crate::lab::CLIENT_NS,
        [
            PGBENCH, "-i", "-q", "-s", "5", "-h", VIP, "-p", "5000", "-U", "postgres", "postgres",
        ],
    );
    c.env("PGPASSWORD", crate::lab::SUPERUSER_PASSWORD);
    crate::lab::util::run(&mut c).context("pgbench -i -s 5 through the VIP")?;
    Ok(())
}

/// `pgbench -S -c 4 -j 2 -T 20 -P 1` through VIP:5000 from the client namespace; progress
/// lines are time-stamped on arrival (the prober's clock).
pub(super) struct Pgbench {
    child: std::process::Child,
    lines: std::sync::Arc<Mutex<Vec<(u64, String)>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

pub(super) struct PgbenchResult {
    pub(super) status: i32,
    pub(super) aborted: bool,
    pub(super) processed: u64,
    pub(super) failed: Option<u64>,
    /// (arrival ms, tps) of each `progress:` line.
    pub(super) progress: Vec<(u64, f64)>,
    pub(super) output: String,
}

impl Pgbench {
    pub(super) fn start(env: &Env) -> Result<Pgbench> {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut c = crate::lab::util::ns_cmd(
            crate::lab::CLIENT_NS,
            [
                PGBENCH, "-h", VIP, "-p", "5000", "-U", "postgres", "-S", "-c", "4", "-j", "2",
                "-T", "20", "-P", "1", "postgres",
            ],
        );
        c.env("PGPASSWORD", crate::lab::SUPERUSER_PASSWORD)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().context("starting pgbench")?;
        env.event("pgbench -S -c 4 -j 2 -T 20 -P 1 through the VIP started");
        let lines = std::sync::Arc::new(Mutex::new(vec![]));
        let clock = env.prober.clock;
        let mut readers = vec![];
        let out: Vec<Box<dyn std::io::Read + Send>> = vec![
            Box::new(child.stdout.take().expect("piped")),
            Box::new(child.stderr.take().expect("piped")),
        ];
        for r in out {
            let lines = lines.clone();
            readers.push(std::thread::spawn(move || {
                for l in std::io::BufReader::new(r).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push((clock.ms(), l));
                }
            }));
        }
        Ok(Pgbench {
            child,
            lines,
            readers,
        })
    }

    pub(super) fn wait(mut self) -> Result<PgbenchResult> {
        let st = self.child.wait().context("waiting for pgbench")?;
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let lines = std::mem::take(&mut *self.lines.lock().unwrap());
        let output = lines
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        let num = |prefix: &str| {
            lines.iter().find_map(|(_, l)| {
                l.strip_prefix(prefix)?
                    .split_whitespace()
                    .next()?
                    .split('/')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
        };
        let progress = lines
            .iter()
            .filter_map(|(t, l)| {
                let rest = l.strip_prefix("progress: ")?;
                let tps = rest.split(", ").nth(1)?.strip_suffix(" tps")?;
                Some((*t, tps.parse::<f64>().ok()?))
            })
            .collect();
        Ok(PgbenchResult {
            status: st.code().unwrap_or(-1),
            aborted: output.contains("aborted") || output.contains("Run was aborted"),
            processed: num("number of transactions actually processed: ").unwrap_or(0),
            failed: num("number of failed transactions: "),
            progress,
            output,
        })
    }
}

impl PgbenchResult {
    /// Mean tps of the progress seconds before `stop`, of the 2 s around the replacement
    /// (the second in which it was stopped and the next one, extended to 1 s after `ready`
    /// if it took longer), and after; plus the lowest second around it. Each `-P 1` line
    /// covers the second before its arrival.
    pub(super) fn tps_windows(&self, stop: u64, ready: u64) -> (f64, f64, f64, f64) {
        let end = (stop + 2000).max(ready + 1000);
        let mean = |v: Vec<f64>| {
            if v.is_empty() {
                0.0
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        };
        let pick = |f: &dyn Fn(u64) -> bool| {
            self.progress
                .iter()
                .filter(|(t, _)| f(*t))
                .map(|(_, x)| *x)
                .collect::<Vec<_>>()
        };
        let around = pick(&|t| t > stop && t <= end);
        let min = around.iter().copied().fold(f64::INFINITY, f64::min);
        (
            mean(pick(&|t| t <= stop)),
            mean(around),
            mean(pick(&|t| t > end)),
            if min.is_finite() { min } else { 0.0 },
        )
    }
}
