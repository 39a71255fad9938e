//! `cargo xtask lab …`: a Patroni/etcd/PostgreSQL 15 lab in network
//! namespaces on one bridge (198.18.0.0/24). See docs/lab.md.
//!
//! Every action is also a method on [`Lab`], so scenario tests can either
//! run `cargo xtask lab <action>` or call the API. One module per concern, each an
//! `impl Lab` block where it acts on the lab:
//! - `topology`: bridge, namespaces, addresses, the VIP;
//! - `handle`: the `Lab` type, its paths and timing; `up` and `status`;
//! - `procs`: daemons started with pidfiles and logs, commands in a namespace;
//! - `patroni`: etcd and Patroni (configs, processes, REST API, planned actions);
//! - `psql`: SQL from the client namespace;
//! - `faults`: crashes, replication lag, DCS outage, link down;
//! - `cleanup`: `down`, also run before `up`;
//! - `edge`: pgrouter and HAProxy on the edge hosts (one HAProxy template), bpffs mounts,
//!   shared by `baseline`, the demo and the bench; `peer_xdp`: pgrouter's `xdp_pass` on a
//!   native-mode edge's veth peer;
//! - `baseline`: HAProxy + Keepalived, the setup pgrouter replaces;
//! - `lock`: the session and action locks;
//! - `install`: packages; `util`: commands, namespaces, HTTP, pidfiles.
pub mod baseline;
mod cleanup;
pub mod edge;
mod faults;
mod handle;
pub mod install;
pub mod lock;
pub mod patroni;
pub mod peer_xdp;
mod procs;
mod psql;
pub mod topology;
pub mod util;

use anyhow::Result;
use clap::{Args, Subcommand};
use std::time::Duration;

pub use self::handle::{Lab, Timing};
pub use self::topology::{
    CLIENT_NS, EDGES, HOSTS, Host, PG_BIN, PG_NODES, SUPERUSER, SUPERUSER_PASSWORD, VIP, host,
};

#[derive(Args)]
pub struct LabArgs {
    #[command(subcommand)]
    pub action: Option<Action>,
}

#[derive(Subcommand)]
pub enum Action {
    /// Install what is missing, build network + etcd + 3 Patroni nodes, wait
    /// for a leader and two streaming replicas.
    Up {
        /// Patroni ttl [env PGRLAB_TTL, default 20].
        #[arg(long)]
        ttl: Option<u32>,
        /// Patroni loop_wait [env PGRLAB_LOOP_WAIT, default 1].
        #[arg(long)]
        loop_wait: Option<u32>,
        /// Patroni retry_timeout [env PGRLAB_RETRY_TIMEOUT, default 4].
        #[arg(long)]
        retry_timeout: Option<u32>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 180)]
        timeout: u64,
        /// Keep a lab that is already up and healthy (same timing, no
        /// spawned processes, VIP free) instead of rebuilding it.
        #[arg(long)]
        reuse: bool,
    },
    /// Stop everything, delete namespaces, bridge and data. Idempotent.
    Down,
    /// Namespaces, processes, cluster members, `patronictl list`.
    Status,
    /// Print the current leader: `<name> <address>`.
    Leader,
    /// Wait until there is a leader and N streaming replicas.
    WaitHealthy {
        #[arg(long, default_value_t = 2)]
        replicas: usize,
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
    /// Planned switchover (POST /switchover on the leader).
    Switchover {
        /// Node to promote (1..3 / pgN); default: Patroni picks.
        #[arg(long)]
        candidate: Option<String>,
        /// Return once the new leader runs; don't wait for the old one to stream.
        #[arg(long)]
        no_wait: bool,
    },
    /// SIGKILL Patroni + PostgreSQL of the current leader (a crash).
    KillPrimary {
        /// Also wait until a new leader is elected (prints how long it took).
        #[arg(long)]
        wait: bool,
    },
    /// SIGKILL Patroni + PostgreSQL of node N.
    KillNode { node: String },
    /// Start Patroni on node N (1..3 / pgN) if it is not running.
    StartNode {
        node: String,
        #[arg(long)]
        no_wait: bool,
    },
    /// Stop Patroni (and PostgreSQL) on node N gracefully.
    StopNode { node: String },
    /// Gracefully stop every node except the leader.
    StopReplicas,
    /// Start every stopped node and wait for two streaming replicas.
    StartReplicas {
        #[arg(long)]
        no_wait: bool,
    },
    /// Freeze WAL replay on replica N (SIGSTOP of its startup process) and
    /// write MB megabytes of WAL on the primary; waits for /replica?lag to fail.
    LagReplica {
        node: String,
        #[arg(long, default_value_t = 16)]
        mb: u32,
    },
    /// Thaw WAL replay on node N (default: every frozen replica); waits to catch up.
    Unlag { node: Option<String> },
    /// Start a command detached in a namespace, with pidfile and log:
    /// `spawn edge1 pgrouter1 -- target/release/pgrouter -c …`.
    Spawn {
        ns: String,
        /// Name for the pidfile (`<lab>/run/NAME.pid`) and log (`<lab>/NAME.log`).
        name: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        cmd: Vec<String>,
    },
    /// Signal a process started by `spawn` (default TERM; waits for exit).
    KillProc {
        name: String,
        /// TERM, KILL, INT, HUP, STOP, CONT, USR1, USR2.
        #[arg(long, default_value = "TERM")]
        signal: String,
    },
    /// Take a host's link down/up (bridge side of its veth): `link edge1 down`.
    Link { ns: String, state: String },
    /// Stop etcd: a DCS outage (Patroni demotes the leader within ~6 s).
    StopEtcd,
    /// Start etcd again (same data) and wait for it to be healthy.
    StartEtcd,
    /// Run the setup pgrouter replaces on the edges: HAProxy + Keepalived
    /// (VIP on edge1, 5000 -> primary, 5001 -> replicas / primary fallback).
    BaselineUp,
    /// Stop the baseline HAProxy + Keepalived.
    BaselineDown,
    /// Print which edge(s) hold the VIP (`edge1`, `edge1 edge2`, or `none`).
    Vip,
    /// psql from the client namespace with the lab password; defaults to
    /// `-h 198.18.0.100 -p 5000 -U postgres -d postgres`:
    /// `psql -- -p 5001 -c 'select inet_server_addr()'`.
    Psql {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run a command in a lab namespace: `exec edge1 -- ip addr`.
    Exec {
        /// etcd, pg1..pg3, edge1, edge2, client (or pgrlab-<name>).
        ns: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        cmd: Vec<String>,
    },
}

pub fn run(args: LabArgs) -> Result<()> {
    let lab = Lab::new(Timing::from_env()?);
    let action = args.action.unwrap_or(Action::Status);
    // Read-only actions and `exec` (which may run a long-lived daemon) don't lock.
    let _lock = match action {
        Action::Status
        | Action::Leader
        | Action::Vip
        | Action::WaitHealthy { .. }
        | Action::Psql { .. }
        | Action::Exec { .. } => None,
        _ => Some(lock::action_lock("lab", Duration::from_secs(600))?),
    };
    match action {
        Action::Up {
            ttl,
            loop_wait,
            retry_timeout,
            timeout,
            reuse,
        } => {
            let mut t = lab.timing;
            t.ttl = ttl.unwrap_or(t.ttl);
            t.loop_wait = loop_wait.unwrap_or(t.loop_wait);
            t.retry_timeout = retry_timeout.unwrap_or(t.retry_timeout);
            let lab = Lab::new(t);
            if reuse {
                lab.up_or_reuse(Duration::from_secs(timeout))?;
            } else {
                lab.up(Duration::from_secs(timeout))?;
            }
        }
        Action::Down => lab.down()?,
        Action::Status => lab.status()?,
        Action::Leader => {
            let l = lab.leader()?;
            println!("{} {}", l.name, l.host);
        }
        Action::WaitHealthy { replicas, timeout } => {
            print!(
                "{}",
                lab.wait_healthy(replicas, Duration::from_secs(timeout))?
                    .summary()
            );
        }
        Action::Switchover { candidate, no_wait } => {
            lab.switchover(candidate.as_deref(), !no_wait)?;
        }
        Action::KillPrimary { wait } => {
            lab.kill_primary(wait)?;
        }
        Action::KillNode { node } => {
            lab.kill_node(&node)?;
        }
        Action::StartNode { node, no_wait } => lab.start_node(&node, !no_wait)?,
        Action::StopNode { node } => lab.stop_node(&node)?,
        Action::StopReplicas => {
            lab.stop_replicas()?;
        }
        Action::StartReplicas { no_wait } => {
            lab.start_stopped(!no_wait)?;
        }
        Action::LagReplica { node, mb } => {
            lab.lag_replica(&node, mb)?;
        }
        Action::Unlag { node } => {
            lab.unlag(node.as_deref())?;
        }
        Action::Spawn { ns, name, cmd } => {
            let cmd: Vec<String> = if cmd.first().map(|s| s == "--").unwrap_or(false) {
                cmd[1..].to_vec()
            } else {
                cmd
            };
            lab.spawn(&ns, &name, &cmd)?;
        }
        Action::KillProc { name, signal } => {
            let sig = match signal
                .trim_start_matches("SIG")
                .to_ascii_uppercase()
                .as_str()
            {
                "TERM" => libc::SIGTERM,
                "KILL" => libc::SIGKILL,
                "INT" => libc::SIGINT,
                "HUP" => libc::SIGHUP,
                "STOP" => libc::SIGSTOP,
                "CONT" => libc::SIGCONT,
                "USR1" => libc::SIGUSR1,
                "USR2" => libc::SIGUSR2,
                other => anyhow::bail!("unknown signal {other:?}"),
            };
            lab.kill_proc(&name, sig)?;
        }
        Action::Link { ns, state } => match state.as_str() {
            "up" => lab.link(&ns, true)?,
            "down" => lab.link(&ns, false)?,
            other => anyhow::bail!("link state must be up or down, not {other:?}"),
        },
        Action::BaselineUp => lab.baseline_up()?,
        Action::BaselineDown => lab.baseline_down()?,
        Action::StopEtcd => lab.stop_etcd()?,
        Action::StartEtcd => lab.start_etcd()?,
        Action::Vip => {
            let h = lab.vip_holders();
            println!(
                "{}",
                if h.is_empty() {
                    "none".to_string()
                } else {
                    h.join(" ")
                }
            );
        }
        Action::Psql { args } => {
            let args: Vec<String> = if args.first().map(|s| s == "--").unwrap_or(false) {
                args[1..].to_vec()
            } else {
                args
            };
            std::process::exit(lab.psql_cli(&args)?);
        }
        Action::Exec { ns, cmd } => {
            let cmd: Vec<String> = if cmd.first().map(|s| s == "--").unwrap_or(false) {
                cmd[1..].to_vec()
            } else {
                cmd
            };
            let code = lab.exec(&ns, &cmd)?;
            std::process::exit(code);
        }
    }
    Ok(())
}
