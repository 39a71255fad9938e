//! The lab's two flock(2) locks, one implementation:
//! - the session lock (`/run/pgrouter-lab-session.lock`), held by a whole demo, scenario run
//!   or bench section: the lab is a singleton shared between people and tools;
//! - the action lock (`/run/pgrouter-lab.lock`), held by one mutating `cargo xtask lab` action,
//!   so two actions never interleave (e.g. parallel tests).
use anyhow::{Context, Result, bail};
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

pub const SESSION_LOCK: &str = "/run/pgrouter-lab-session.lock";
pub const ACTION_LOCK: &str = "/run/pgrouter-lab.lock";
/// How long a session waits for another one: a full bench section fits.
const SESSION_WAIT: Duration = Duration::from_secs(2400);

/// Holds the lab session lock until dropped (`None`: held already, by this process or by
/// the caller's `flock`).
pub struct SessionLock(#[expect(dead_code, reason = "held for its drop")] Option<File>);

/// Takes the lab session lock, waiting up to 40 minutes. With `PGRLAB_SESSION_LOCKED=1` the
/// caller already holds it (e.g. `flock … cargo xtask scenarios` in a script); a lock this
/// process holds already (e.g. `cargo xtask bench` holding it for pgbench and calling the
/// failover bench) is not taken twice, so nesting cannot deadlock.
pub fn session_lock() -> Result<SessionLock> {
    if std::env::var("PGRLAB_SESSION_LOCKED").is_ok_and(|v| v == "1") {
        return Ok(SessionLock(None));
    }
    let f = open(SESSION_LOCK)?;
    if held_by_this_process(&f) {
        return Ok(SessionLock(None));
    }
    let t = Instant::now();
    let f = wait_exclusive(
        f,
        SESSION_LOCK,
        SESSION_WAIT,
        Duration::from_secs(1),
        "the lab is in use",
    )?;
    if t.elapsed() > Duration::from_secs(1) {
        println!("lab: got the lab session lock after {:.0?}", t.elapsed());
    }
    Ok(SessionLock(Some(f)))
}

/// Takes the action lock for lab action `what`; held until the returned file is dropped.
pub fn action_lock(what: &str, timeout: Duration) -> Result<File> {
    wait_exclusive(
        open(ACTION_LOCK)?,
        ACTION_LOCK,
        timeout,
        Duration::from_millis(200),
        &format!("{what}: waiting for another lab action to finish"),
    )
}

fn open(path: &str) -> Result<File> {
    fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("open {path}"))
}

/// Polls for an exclusive flock on `f` every `every` for up to `timeout`; says once why it
/// waits. Bounded, so a stuck holder turns into an error that names the lock file.
fn wait_exclusive(
    f: File,
    path: &str,
    timeout: Duration,
    every: Duration,
    why: &str,
) -> Result<File> {
    let start = Instant::now();
    let mut said = false;
    loop {
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(f);
        }
        if !said {
            println!("lab: {why} ({path})");
            said = true;
        }
        if start.elapsed() > timeout {
            bail!("lab: {path} still locked after {timeout:?}");
        }
        std::thread::sleep(every);
    }
}

/// True if this process already holds an exclusive flock on `f`'s file (another open file
/// description of it; /proc/locks names the holder's PID and the inode).
fn held_by_this_process(f: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(ino) = f.metadata().map(|m| m.ino()) else {
        return false;
    };
    let pid = std::process::id().to_string();
    fs::read_to_string("/proc/locks").is_ok_and(|locks| {
        locks.lines().any(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.len() > 5
                && w[1] == "FLOCK"
                && w[3] == "WRITE"
                && w[4] == pid
                && w[5].rsplit(':').next() == Some(ino.to_string().as_str())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_this_process_holds_is_recognised() {
        let path = std::env::temp_dir().join(format!("pgr-demo-lock-{}", std::process::id()));
        let a = File::create(&path).unwrap();
        let b = File::open(&path).unwrap();
        assert!(!held_by_this_process(&b));
        // SAFETY: flock on an fd we own.
        assert_eq!(unsafe { libc::flock(a.as_raw_fd(), libc::LOCK_EX) }, 0);
        assert!(held_by_this_process(&b));
        drop(a);
        assert!(!held_by_this_process(&b));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_held_lock_times_out_naming_the_file() {
        let path = std::env::temp_dir().join(format!("pgr-lock-wait-{}", std::process::id()));
        let a = File::create(&path).unwrap();
        // SAFETY: flock on an fd we own.
        assert_eq!(unsafe { libc::flock(a.as_raw_fd(), libc::LOCK_EX) }, 0);
        let p = path.to_string_lossy().into_owned();
        let b = File::open(&path).unwrap();
        let e = wait_exclusive(b, &p, Duration::ZERO, Duration::ZERO, "test")
            .err()
            .unwrap();
        assert!(e.to_string().contains(&p), "{e}");
        drop(a);
        let b = File::open(&path).unwrap();
        assert!(wait_exclusive(b, &p, Duration::ZERO, Duration::ZERO, "test").is_ok());
        let _ = std::fs::remove_file(&path);
    }
}
