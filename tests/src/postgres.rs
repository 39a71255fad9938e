//! A real PostgreSQL 15 server (Debian's `postgresql-15`) in a lab namespace: a fresh cluster
//! initialised in the lab's folder, listening on one address of the lab, trusting the lab's
//! 198.18.0.0/15, fsync off. The server runs as the `postgres` OS user (it refuses root) and
//! is one of the lab's children: Drop stops it with a fast shutdown (so it removes its System V
//! shared memory segment), then kills whatever is left.
//!
//!
//! Its clients: [`Sessions`], held connections each running `SELECT 1` on a period, every
//! connect and query bounded in time, counting successes and the first failure of each; and
//! [`Pgbench`], a `pgbench` run in the background whose output is read into a
//! [`PgbenchResult`].
//!
//! ```text
//! let pg = Postgres::start(&mut lab, &ns, "pg1", "198.18.0.11", &[("max_connections", "150")])?;
//! pg.pgbench_init(&lab, 1)?;
//! let sessions = Sessions::start(&client, VIP, 5000, 50, Duration::from_millis(100));
//! let bench = Pgbench::start(&mut lab, &client, "pgbench", VIP, 5000, 4, 2, 15)?;
//! ```
use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::netns::{Lab, in_netns};

/// Debian 12's PostgreSQL 15 programs (not the `pg_wrapper` scripts in /usr/bin).
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// How long `initdb`, `pgbench -i` and a `psql` command may take.
const COMMAND_TIMEOUT_S: u32 = 60;
/// How long a started server may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// `PG_BIN/name`.
pub fn pg_bin(name: &str) -> String {
    format!("{PG_BIN}/{name}")
}

/// The settings every lab server gets, before the caller's (a later `-c` wins).
const DEFAULT_SETTINGS: &[(&str, &str)] = &[
    ("fsync", "off"),
    ("synchronous_commit", "off"),
    ("full_page_writes", "off"),
    ("max_connections", "150"),
    ("shared_buffers", "32MB"),
    ("huge_pages", "off"),
    ("logging_collector", "off"),
];

/// A running server of a lab.
#[derive(Clone, Debug)]
pub struct Postgres {
    /// The namespace it runs in.
    pub ns: String,
    /// Its name in the lab: log `<lab dir>/<name>.log`, pid file `<name>.pid`, folder
    /// `<lab dir>/<name>/` (data in `data/`, the Unix socket beside it).
    pub name: String,
    /// The one address it listens on.
    pub host: String,
    pub port: u16,
    /// The postmaster's pid (a child of the lab).
    pub pid: u32,
    /// `<lab dir>/<name>`.
    pub dir: PathBuf,
}

impl Postgres {
    /// `initdb` into `<lab dir>/<name>/data`, then starts the server in `ns` on `host:5432`
    /// with [`DEFAULT_SETTINGS`] and then `settings`, and waits until it accepts connections.
    /// The superuser is `postgres`; every client in 198.18.0.0/15 is trusted.
    pub fn start(
        lab: &mut Lab,
        ns: &str,
        name: &str,
        host: &str,
        settings: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let port = 5432u16;
        let dir = lab.dir.join(name);
        let data = dir.join("data");
        // The postgres user must reach its folder: search rights on the lab's folders (only
        // adds x to what is there).
        for d in [lab.dir.parent(), Some(lab.dir.as_path())]
            .into_iter()
            .flatten()
        {
            let mode = std::fs::metadata(d)?.permissions().mode();
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode | 0o111))?;
        }
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        crate::run("chown", &["postgres:postgres", path_str(&dir)?])?;
        lab.exec(
            ns,
            &format!(
                "cd {dir} && timeout {COMMAND_TIMEOUT_S} setpriv --reuid=postgres --regid=postgres \
                 --init-groups -- {initdb} -D {data} -U postgres --auth=trust --no-sync \
                 --encoding=UTF8 --locale=C.UTF-8 >{dir}/initdb.log 2>&1 \
                 || {{ cat {dir}/initdb.log >&2; exit 1; }}",
                dir = path_str(&dir)?,
                initdb = pg_bin("initdb"),
                data = path_str(&data)?,
            ),
        )
        .context("initdb")?;
        // Appended as root: the file keeps its owner.
        let hba = data.join("pg_hba.conf");
        let mut text = std::fs::read_to_string(&hba)?;
        text.push_str(
            "\n# pgrouter tests: the lab's addresses\nhost all all 198.18.0.0/15 trust\n",
        );
        std::fs::write(&hba, text)?;

        let port_text = port.to_string();
        let mut argv: Vec<String> = [
            "setpriv",
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
            &pg_bin("postgres"),
            "-D",
            path_str(&data)?,
            "-c",
            &format!("listen_addresses={host}"),
            "-c",
            &format!("port={port_text}"),
            "-c",
            &format!("unix_socket_directories={}", path_str(&dir)?),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for (k, v) in DEFAULT_SETTINGS.iter().chain(settings) {
            argv.push("-c".into());
            argv.push(format!("{k}={v}"));
        }
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let pid = lab.spawn(ns, name, &argv)?;
        // SIGINT: fast shutdown (sessions ended, shared memory removed).
        lab.stop_on_drop(pid, libc::SIGINT);
        let pg = Self {
            ns: ns.to_string(),
            name: name.to_string(),
            host: host.to_string(),
            port,
            pid,
            dir,
        };
        pg.wait_ready(lab, READY_TIMEOUT)?;
        Ok(pg)
    }

    /// Polls `pg_isready` in the server's namespace until it answers, failing with the
    /// server's log if it exits or `timeout` passes.
    pub fn wait_ready(&self, lab: &mut Lab, timeout: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if let Some(st) = lab.wait_exit(self.pid, Duration::ZERO) {
                bail!(
                    "{} exited ({st}) before accepting connections:\n{}",
                    self.name,
                    lab.log(&self.name)
                );
            }
            let ready = lab.exec(
                &self.ns,
                &format!(
                    "{} -q -t 1 -h {} -p {}",
                    pg_bin("pg_isready"),
                    self.host,
                    self.port
                ),
            );
            if ready.is_ok() {
                return Ok(());
            }
            if start.elapsed() > timeout {
                bail!(
                    "{} not ready after {timeout:?}:\n{}",
                    self.name,
                    lab.log(&self.name)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `sql` with `psql` (as `postgres`, over TCP, from the server's namespace) and
    /// returns its unaligned, tuples-only output.
    pub fn psql(&self, lab: &Lab, sql: &str) -> anyhow::Result<String> {
        lab.exec(
            &self.ns,
            &format!(
                "timeout {COMMAND_TIMEOUT_S} {} -X -q -At -v ON_ERROR_STOP=1 -h {} -p {} -U postgres \
                 -d postgres -c \"{}\"",
                pg_bin("psql"),
                self.host,
                self.port,
                sql.replace('\\', "\\\\").replace('"', "\\\"").replace('$', "\\$")
            ),
        )
    }

    /// `pgbench -i -s scale` straight against the server (not through a VIP).
    pub fn pgbench_init(&self, lab: &Lab, scale: u32) -> anyhow::Result<()> {
        lab.exec(
            &self.ns,
            &format!(
                "timeout {COMMAND_TIMEOUT_S} {} -i -q -s {scale} -h {} -p {} -U postgres postgres \
                 >{dir}/pgbench-init.log 2>&1 || {{ cat {dir}/pgbench-init.log >&2; exit 1; }}",
                pg_bin("pgbench"),
                self.host,
                self.port,
                dir = path_str(&self.dir)?,
            ),
        )
        .context("pgbench -i")?;
        Ok(())
    }

    /// Fast shutdown now (SIGINT), waiting up to `timeout`; false if it did not exit.
    pub fn stop(&self, lab: &mut Lab, timeout: Duration) -> bool {
        lab.signal_and_wait(self.pid, libc::SIGINT, timeout)
    }
}

fn path_str(p: &Path) -> anyhow::Result<&str> {
    p.to_str()
        .ok_or_else(|| anyhow::anyhow!("non-UTF-8 path {}", p.display()))
}

/// The longest a [`Sessions`] connect or query may take before the session counts as failed.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// One held session's counters, shared with its task.
#[derive(Debug, Default)]
struct SessionStats {
    connected: AtomicBool,
    ok: AtomicU64,
    /// The last success, in µs since the sessions' start (0: none yet).
    last_ok_us: AtomicU64,
    /// The longest time between two successes.
    max_gap_us: AtomicU64,
    /// The first failure: when (since the start) and what.
    failure: Mutex<Option<(Duration, String)>>,
}

impl SessionStats {
    fn fail(&self, at: Duration, what: String) {
        if let Ok(mut f) = self.failure.lock()
            && f.is_none()
        {
            *f = Some((at, what));
        }
    }
}

/// What one held session did so far.
#[derive(Clone, Debug)]
pub struct SessionReport {
    pub connected: bool,
    /// Successful queries.
    pub ok: u64,
    /// The longest time between two successful queries.
    pub max_gap: Duration,
    /// The first failure (a session stops at it): when, since the sessions' start, and what.
    pub failure: Option<(Duration, String)>,
}

/// `n` persistent connections from namespace `ns` to `host:port` (user and database
/// `postgres`), each running `SELECT 1` every `every`, all on one thread of that namespace.
/// A connect or query not answered within [`QUERY_TIMEOUT`], an error, a wrong answer or a
/// closed connection is the session's failure, and it stops there (no reconnect). Dropping
/// it stops the sessions without waiting.
pub struct Sessions {
    stop: Arc<AtomicBool>,
    stats: Arc<Vec<SessionStats>>,
    /// When they started: failures' times are since then.
    pub start: Instant,
    thread: Option<std::thread::JoinHandle<anyhow::Result<anyhow::Result<()>>>>,
}

impl Sessions {
    pub fn start(ns: &str, host: &str, port: u16, n: usize, every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stats: Arc<Vec<SessionStats>> =
            Arc::new((0..n).map(|_| SessionStats::default()).collect());
        let start = Instant::now();
        let (ns, host) = (ns.to_string(), host.to_string());
        let (stop2, stats2) = (stop.clone(), stats.clone());
        let thread = std::thread::spawn(move || {
            in_netns(&ns.clone(), move || -> anyhow::Result<()> {
                // One thread: every socket is opened in the namespace.
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    let mut set = tokio::task::JoinSet::new();
                    for i in 0..n {
                        let (stop, stats, host) = (stop2.clone(), stats2.clone(), host.clone());
                        // Spread over one period.
                        let offset = every * i as u32 / n.max(1) as u32;
                        set.spawn(async move {
                            tokio::time::sleep(offset).await;
                            session(i, &host, port, every, &stop, &stats[i], start).await;
                        });
                    }
                    while set.join_next().await.is_some() {}
                });
                Ok(())
            })
        });
        Self {
            stop,
            stats,
            start,
            thread: Some(thread),
        }
    }

    /// Every session's counters now.
    pub fn reports(&self) -> Vec<SessionReport> {
        self.stats
            .iter()
            .map(|s| SessionReport {
                connected: s.connected.load(Ordering::Relaxed),
                ok: s.ok.load(Ordering::Relaxed),
                max_gap: Duration::from_micros(s.max_gap_us.load(Ordering::Relaxed)),
                failure: s.failure.lock().ok().and_then(|f| f.clone()),
            })
            .collect()
    }

    /// Every session's successful queries now.
    pub fn counts(&self) -> Vec<u64> {
        self.stats
            .iter()
            .map(|s| s.ok.load(Ordering::Relaxed))
            .collect()
    }

    /// The sessions that failed: index, when and what.
    pub fn failures(&self) -> Vec<(usize, Duration, String)> {
        self.reports()
            .into_iter()
            .enumerate()
            .filter_map(|(i, r)| r.failure.map(|(t, w)| (i, t, w)))
            .collect()
    }

    /// Waits until every session has `min` more successful queries than in `since` (counts
    /// from [`Sessions::counts`]; empty: since the start); fails at once when one fails.
    pub fn wait_progress(&self, since: &[u64], min: u64, timeout: Duration) -> anyhow::Result<()> {
        crate::wait_for(
            &format!("every session to make {min} more queries"),
            timeout,
            || {
                let now = self.counts();
                let failed = self.failures();
                (!failed.is_empty()
                    || now
                        .iter()
                        .enumerate()
                        .all(|(i, n)| *n >= since.get(i).copied().unwrap_or(0) + min))
                .then_some(failed)
            },
        )
        .and_then(|failed| match failed.first() {
            None => Ok(()),
            Some((i, t, w)) => bail!(
                "{} session(s) failed, first session {i} at {t:?}: {w}",
                failed.len()
            ),
        })
    }

    /// Stops the sessions and waits (up to `timeout`, which should exceed [`QUERY_TIMEOUT`]:
    /// a query in flight is waited for) for them to end; their final counters.
    pub fn stop(mut self, timeout: Duration) -> anyhow::Result<Vec<SessionReport>> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.thread.take() {
            crate::wait_for("the sessions to end", timeout, || {
                h.is_finished().then_some(())
            })?;
            h.join()
                .map_err(|_| anyhow::anyhow!("the sessions' thread panicked"))???;
        }
        Ok(self.reports())
    }
}

impl Drop for Sessions {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One held session: connect, then `SELECT 1` every `every` until `stop` or a failure.
async fn session(
    i: usize,
    host: &str,
    port: u16,
    every: Duration,
    stop: &AtomicBool,
    stats: &SessionStats,
    start: Instant,
) {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(host)
        .port(port)
        .user("postgres")
        .dbname("postgres")
        .application_name(format!("session{i}"))
        .connect_timeout(QUERY_TIMEOUT);
    let (client, conn) =
        match tokio::time::timeout(QUERY_TIMEOUT, cfg.connect(tokio_postgres::NoTls)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return stats.fail(start.elapsed(), format!("connect: {e}")),
            Err(_) => {
                return stats.fail(
                    start.elapsed(),
                    format!("connect: no answer in {QUERY_TIMEOUT:?}"),
                );
            }
        };
    stats.connected.store(true, Ordering::Relaxed);
    // The connection's own task: its end (closed, reset) is the session's failure unless
    // we are stopping.
    let conn = tokio::spawn(conn);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let what = match tokio::time::timeout(QUERY_TIMEOUT, client.simple_query("SELECT 1")).await
        {
            Ok(Ok(msgs)) => {
                let one = msgs.iter().any(|m| {
                    matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("1"))
                });
                if one {
                    let now = start.elapsed().as_micros() as u64;
                    let last = stats.last_ok_us.swap(now, Ordering::Relaxed);
                    if last > 0 {
                        stats.max_gap_us.fetch_max(now - last, Ordering::Relaxed);
                    }
                    stats.ok.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                format!("SELECT 1 answered {msgs:?}")
            }
            Ok(Err(e)) => format!("SELECT 1: {e}"),
            Err(_) => format!("SELECT 1: no answer in {QUERY_TIMEOUT:?}"),
        };
        stats.fail(start.elapsed(), what);
        return;
    }
    drop(client);
    if let Ok(Ok(Err(e))) = tokio::time::timeout(QUERY_TIMEOUT, conn).await {
        stats.fail(start.elapsed(), format!("connection at the end: {e}"));
    }
}

/// A `pgbench` run in the background (a child of the lab, log `<lab dir>/<name>.log`):
/// `-c clients -j threads -T secs -n -P 1`, persistent connections, the built-in TPC-B-like
/// script on what [`Postgres::pgbench_init`] made.
pub struct Pgbench {
    pub name: String,
    pub pid: u32,
    pub secs: u32,
    pub start: Instant,
    /// Its exit status, once seen.
    exit: Option<std::process::ExitStatus>,
}

impl Pgbench {
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        lab: &mut Lab,
        ns: &str,
        name: &str,
        host: &str,
        port: u16,
        clients: u32,
        threads: u32,
        secs: u32,
    ) -> anyhow::Result<Self> {
        let args: Vec<String> = [
            "env".to_string(),
            // A connect bounded like the sessions' (libpq waits forever by default).
            format!("PGCONNECT_TIMEOUT={}", QUERY_TIMEOUT.as_secs()),
            pg_bin("pgbench"),
            "-h".into(),
            host.into(),
            "-p".into(),
            port.to_string(),
            "-U".into(),
            "postgres".into(),
            "-c".into(),
            clients.to_string(),
            "-j".into(),
            threads.to_string(),
            "-T".into(),
            secs.to_string(),
            "-n".into(),
            "-P".into(),
            "1".into(),
            "postgres".into(),
        ]
        .into();
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let pid = lab.spawn(ns, name, &argv)?;
        Ok(Self {
            name: name.to_string(),
            pid,
            secs,
            start: Instant::now(),
            exit: None,
        })
    }

    /// Still running?
    pub fn running(&mut self, lab: &mut Lab) -> bool {
        if self.exit.is_none() {
            self.exit = lab.wait_exit(self.pid, Duration::ZERO);
        }
        self.exit.is_none()
    }

    /// Waits for the run to end, at most `grace` past its `-T`; a run still going then hangs
    /// (a connection that gets no answer), is killed, and counts as failed.
    pub fn wait(self, lab: &mut Lab, grace: Duration) -> PgbenchResult {
        let deadline = Duration::from_secs(self.secs.into()) + grace;
        let left = deadline.saturating_sub(self.start.elapsed());
        let exit = self.exit.or_else(|| lab.wait_exit(self.pid, left));
        if exit.is_none() {
            lab.kill(self.pid);
        }
        let mut r = PgbenchResult::parse(&lab.log(&self.name));
        r.exit = exit;
        r.hung = exit.is_none();
        r
    }
}

/// What a `pgbench` run printed, read.
#[derive(Clone, Debug, Default)]
pub struct PgbenchResult {
    /// `None`: it was still running at its deadline and was killed.
    pub exit: Option<std::process::ExitStatus>,
    pub hung: bool,
    /// `number of transactions actually processed`.
    pub processed: Option<u64>,
    /// `number of failed transactions`.
    pub failed: Option<u64>,
    /// Lines saying a client aborted (or the run was).
    pub aborted: Vec<String>,
    /// `tps = … (without initial connection time)`.
    pub tps: Option<f64>,
    /// The `-P 1` progress lines' tps, one a second.
    pub progress_tps: Vec<f64>,
    /// The whole output.
    pub log: String,
}

impl PgbenchResult {
    pub fn parse(log: &str) -> Self {
        let number = |line: &str, key: &str| -> Option<String> {
            let rest = line.strip_prefix(key)?.trim();
            Some(rest.split_whitespace().next()?.to_string())
        };
        let mut r = Self {
            log: log.to_string(),
            ..Self::default()
        };
        for line in log.lines() {
            let line = line.trim();
            if let Some(n) = number(line, "number of transactions actually processed:") {
                // "12345" or, with -t, "12345/20000".
                r.processed = n.split('/').next().and_then(|n| n.parse().ok());
            } else if let Some(n) = number(line, "number of failed transactions:") {
                r.failed = n.parse().ok();
            } else if let Some(n) = number(line, "tps =") {
                r.tps = n.parse().ok();
            } else if let Some(p) = line.strip_prefix("progress:") {
                // "progress: 1.0 s, 850.9 tps, lat 4.683 ms stddev 2.156, 0 failed"
                if let Some(t) = p
                    .split(',')
                    .find_map(|f| f.trim().strip_suffix(" tps"))
                    .and_then(|t| t.trim().parse().ok())
                {
                    r.progress_tps.push(t);
                }
            }
            if line.contains("aborted") {
                r.aborted.push(line.to_string());
            }
        }
        r
    }

    /// Ran to its end with transactions, none failed, no client aborted.
    pub fn ok(&self) -> bool {
        self.exit.is_some_and(|e| e.success())
            && !self.hung
            && self.processed.is_some_and(|n| n > 0)
            && self.failed == Some(0)
            && self.aborted.is_empty()
    }

    /// Clients that aborted (`client N aborted …`).
    pub fn aborted_clients(&self) -> usize {
        self.aborted
            .iter()
            .filter(|l| l.contains("client "))
            .count()
    }

    /// The slowest second of the run (`-P 1`).
    pub fn slowest_second_tps(&self) -> Option<f64> {
        self.progress_tps.iter().copied().reduce(f64::min)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PostgreSQL 15.18's pgbench: a client ended by its server aborts, yet "failed
    /// transactions" stays 0 (it counts serialization and deadlock failures only); the exit
    /// status (2) and the "aborted" lines say it.
    #[test]
    fn an_aborted_client_is_not_ok_though_no_transaction_failed() {
        let log = "pgbench (15.18 (Debian 15.18-0+deb12u1))
progress: 1.0 s, 2046.0 tps, lat 1.925 ms stddev 1.173, 0 failed
pgbench: error: client 2 script 0 aborted in command 5 query 0: FATAL:  terminating connection due to administrator command
progress: 2.0 s, 1720.5 tps, lat 2.064 ms stddev 1.645, 0 failed
progress: 3.0 s, 2234.2 tps, lat 1.339 ms stddev 0.767, 0 failed
transaction type: <builtin: TPC-B (sort of)>
scaling factor: 1
query mode: simple
number of clients: 4
number of threads: 2
maximum number of tries: 1
duration: 3 s
number of transactions actually processed: 6004
number of failed transactions: 0 (0.000%)
latency average = 1.748 ms
latency stddev = 1.252 ms
initial connection time = 10.601 ms
tps = 2005.382200 (without initial connection time)
pgbench: error: Run was aborted; the above results are incomplete.
";
        let r = PgbenchResult::parse(log);
        assert_eq!(r.processed, Some(6004));
        assert_eq!(r.failed, Some(0));
        assert_eq!(r.tps, Some(2005.3822));
        assert_eq!(r.progress_tps, vec![2046.0, 1720.5, 2234.2]);
        assert_eq!(r.slowest_second_tps(), Some(1720.5));
        assert_eq!(r.aborted.len(), 2);
        assert_eq!(r.aborted_clients(), 1);
        // Even with a clean exit status it would not be ok.
        assert!(!r.ok());
        let clean: String = log
            .lines()
            .filter(|l| !l.contains("aborted"))
            .map(|l| format!("{l}\n"))
            .collect();
        let mut r = PgbenchResult::parse(&clean);
        assert!(r.aborted.is_empty());
        use std::os::unix::process::ExitStatusExt as _;
        r.exit = Some(std::process::ExitStatus::from_raw(0));
        assert!(r.ok());
        r.exit = Some(std::process::ExitStatus::from_raw(2 << 8));
        assert!(!r.ok());
    }
}
