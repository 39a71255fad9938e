//! keepalived's `notify_master` / `notify_backup` / `notify_fault`: a command run with `sh -c`
//! on entering the state, never waited for by the protocol.

/// Starts `cmd` and reaps it in the background: a slow hook must not stall the protocol. A
/// failure to start or a non-zero exit is logged with the instance's name.
pub(super) fn run(instance: &str, cmd: &str) {
    let (name, cmd) = (instance.to_owned(), cmd.to_owned());
    match tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&cmd)
        .spawn()
    {
        Ok(mut child) => {
            tokio::spawn(async move {
                match child.wait().await {
                    Ok(s) if !s.success() => {
                        tracing::warn!(instance = %name, "notify command {cmd:?} exited with {s}")
                    }
                    Err(e) => tracing::warn!(instance = %name, "notify command {cmd:?}: {e}"),
                    _ => {}
                }
            });
        }
        Err(e) => tracing::warn!(instance = %name, "notify command {cmd:?}: {e}"),
    }
}
