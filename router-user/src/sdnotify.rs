//! systemd readiness (`sd_notify(3)`) without a crate: one datagram to `$NOTIFY_SOCKET`.
//!
//! The unit (dist/pgrouter.service) is `Type=notify`, so `systemctl start pgrouter` returns
//! only once [`notify_ready`] was sent — after the XDP program is attached, the control socket
//! listens and the metrics endpoint is up — and units ordered `After=pgrouter.service` start
//! against a working data path. Outside systemd (`$NOTIFY_SOCKET` unset) every call is a no-op.
use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Sends `READY=1`. Call once the daemon serves (data path attached, control socket bound).
pub fn notify_ready() {
    notify_or_log("READY=1");
}

/// Sends `RELOADING=1` plus the monotonic timestamp systemd ≥ 253 wants; call before a reload
/// and [`notify_ready`] after it. Harmless with `Type=notify` on older systemd.
pub fn notify_reloading() {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    let usec = if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } == 0 {
        (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
    } else {
        0
    };
    notify_or_log(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
}

/// Sends `STOPPING=1`: the daemon is shutting down (VRRP leaving, data path stays pinned).
pub fn notify_stopping() {
    notify_or_log("STOPPING=1");
}

fn notify_or_log(state: &str) {
    if let Err(e) = notify(state) {
        tracing::warn!("sd_notify {:?}: {e}", state.lines().next().unwrap_or(""));
    }
}

/// Sends `state` to `$NOTIFY_SOCKET`. `Ok(false)` when not started by systemd (no socket).
/// A leading `@` names an abstract socket, as in sd_notify(3).
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let path = path.to_string_lossy().into_owned();
    send(&path, state)?;
    Ok(true)
}

fn send(path: &str, state: &str) -> io::Result<()> {
    let addr = match path.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt as _;
            SocketAddr::from_abstract_name(name.as_bytes())?
        }
        None if path.starts_with('/') => SocketAddr::from_pathname(path)?,
        None => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("NOTIFY_SOCKET={path:?} is neither absolute nor abstract (@…)"),
            ));
        }
    };
    let sock = UnixDatagram::unbound()?;
    let n = sock.send_to_addr(state.as_bytes(), &addr)?;
    if n != state.len() {
        return Err(io::Error::other("short write to NOTIFY_SOCKET"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The datagram arrives on a path socket exactly as written.
    #[test]
    fn sends_to_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("pgr-sdnotify-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let p = dir.join("notify.sock");
        let _ = std::fs::remove_file(&p);
        let rx = UnixDatagram::bind(&p).unwrap_or_else(|e| panic!("bind: {e}"));
        send(&p.to_string_lossy(), "READY=1").unwrap_or_else(|e| panic!("send: {e}"));
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap_or_else(|e| panic!("recv: {e}"));
        assert_eq!(&buf[..n], b"READY=1");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// systemd's default is an abstract socket (`@/org/freedesktop/systemd1/notify/…`).
    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("pgr-sdnotify-test-{}", std::process::id());
        let addr =
            SocketAddr::from_abstract_name(name.as_bytes()).unwrap_or_else(|e| panic!("addr: {e}"));
        let rx = UnixDatagram::bind_addr(&addr).unwrap_or_else(|e| panic!("bind: {e}"));
        send(&format!("@{name}"), "STOPPING=1").unwrap_or_else(|e| panic!("send: {e}"));
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap_or_else(|e| panic!("recv: {e}"));
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn relative_paths_are_refused() {
        assert!(send("relative.sock", "READY=1").is_err());
    }
}
