//! `pgrouter`: the command line.
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use pgrouter::config::{self, DEFAULT_SOCKET};
use pgrouter::{control, controller, dataplane, status, vrrp};

#[derive(Parser)]
#[command(
    name = "pgrouter",
    version,
    about = "XDP PostgreSQL router for Patroni clusters: HAProxy + Keepalived in one program"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the controller: attach the data path, check Patroni, run VRRP.
    Run {
        #[arg(short, long, default_value = "/etc/pgrouter/pgrouter.toml")]
        config: PathBuf,
    },
    /// Validate a configuration file; every error names file, line and field.
    CheckConfig { config: PathBuf },
    /// Show the running daemon's view: nodes, checks, sets, flows, VRRP.
    Status {
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Ask the running daemon to reload its configuration (as SIGHUP does); a bad file is
    /// refused and the running configuration stays.
    Reload {
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Remove pgrouter's XDP program from the configured interfaces and delete its pins.
    Detach {
        #[arg(short, long, default_value = "/etc/pgrouter/pgrouter.toml")]
        config: PathBuf,
    },
    /// Turn an haproxy.cfg (and keepalived.conf) into an equivalent pgrouter config.
    Import(pgrouter::import::ImportArgs),
    /// Run only the VRRP instances of a file with `[[vrrp]]` tables (no data path).
    Vrrp {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Write the man pages (pgrouter.8, pgrouter-SUBCOMMAND.8) into DIR, for packaging.
    #[command(hide = true)]
    Manpage { dir: PathBuf },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let code = match run(cli).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("pgrouter: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Run { config } => {
            init_logging();
            controller::run(config).await
        }
        Cmd::CheckConfig { config } => match config::check(&config) {
            Ok(summary) => {
                let summary = summary.to_string();
                print!("{summary}");
                if !summary.ends_with('\n') {
                    println!();
                }
                // The daemon reads the sync key file at start and on reload: so does this.
                if let Ok(cfg) = config::load(&config)
                    && let Some(s) = &cfg.sync
                {
                    let keys = pgrouter::sync::auth::Keys::load(&s.key_file)
                        .map_err(|e| anyhow::anyhow!("sync.key_file: {e}"))?;
                    println!(
                        "sync: listen {}, {} peer(s), {} key(s), this host's SNAT ports {}",
                        s.listen,
                        s.peers.len(),
                        keys.len(),
                        {
                            let r = s.snat_share(cfg.datapath.snat_ports);
                            format!("{}-{}", r.first, r.last)
                        }
                    );
                }
                Ok(())
            }
            Err(e) => {
                eprint!("{e}");
                anyhow::bail!("{} has errors", config.display())
            }
        },
        Cmd::Status { json, socket } => {
            let out = control::request(&socket, "status").await?;
            if json {
                print!("{out}");
            } else {
                let st: status::Status = serde_json::from_str(&out).context(
                    "the daemon's answer is not this pgrouter's status (was it upgraded \
                     without a restart? `--json` prints it as it is)",
                )?;
                print!("{}", status::render(&st));
            }
            Ok(())
        }
        Cmd::Reload { socket } => {
            let out = control::request(&socket, "reload").await?;
            let a: status::Answer = serde_json::from_str(&out).context("daemon answer")?;
            if a.ok {
                println!("{}", a.message);
                Ok(())
            } else {
                anyhow::bail!(
                    "reload refused; the running configuration stays:\n{}",
                    a.message
                )
            }
        }
        Cmd::Detach { config } => {
            let cfg = config::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
            for iface in &cfg.datapath.interfaces {
                if dataplane::loader::detach(&cfg.datapath.pin_path, iface)? {
                    println!("detached from {iface}");
                }
            }
            let dir = dataplane::loader::versioned(&cfg.datapath.pin_path);
            if dir.exists() {
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("removing {}", dir.display()))?;
                println!("removed pins in {}", dir.display());
            }
            Ok(())
        }
        Cmd::Import(args) => pgrouter::import::run(args),
        Cmd::Completions { shell } => {
            use clap::CommandFactory as _;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "pgrouter",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Cmd::Manpage { dir } => {
            use clap::CommandFactory as _;
            let top = Cli::command();
            let mut pages = vec![top.clone()];
            for sub in top.get_subcommands().filter(|c| !c.is_hide_set()) {
                // clap names are `&'static str` without its `string` feature; one-shot command.
                let name: &'static str = format!("pgrouter-{}", sub.get_name()).leak();
                let bin: &'static str = format!("pgrouter {}", sub.get_name()).leak();
                pages.push(sub.clone().name(name).bin_name(bin));
            }
            for page in pages {
                let path = dir.join(format!("{}.8", page.get_name()));
                let mut out = Vec::new();
                clap_mangen::Man::new(page).section("8").render(&mut out)?;
                std::fs::write(&path, out)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(())
        }
        Cmd::Vrrp { config } => {
            init_logging();
            let instances = config::load_vrrp_only(&config)?;
            vrrp::run_standalone(instances).await
        }
    }
}
