//! `pgrouter import`: HAProxy + Keepalived configurations → pgrouter config.
//!
//! - [`haproxy`]: haproxy.cfg as HAProxy reads it (sections, words, server options).
//! - [`keepalived`]: keepalived.conf as keepalived reads it (statements and blocks).
//! - [`translate`]: both models → a [`plan::Plan`] in the config's own types
//!   (`config::raw`), with a [`Warning`] for everything that does not carry over exactly (and
//!   for problems in the input, like stale section names); `vrrp_plan` does the keepalived part.
//! - [`plan`]: the plan, and the notes and warnings attached to its items by [`Place`].
//! - `render`: the plan → commented TOML (`toml_edit`) that `config::parse` accepts.
//!
//! All of it is pure; only [`run`] touches files. Every warning goes to stderr *and* into the
//! output as a `# WARNING:` comment next to what it concerns. docs/import.md describes the
//! mapping.
pub mod haproxy;
pub mod keepalived;
pub(crate) mod plan;
mod render;
mod repair;
pub mod translate;
mod vrrp_plan;

use std::fmt;
use std::path::PathBuf;

use anyhow::Context as _;

use plan::Sink;

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// haproxy.cfg to translate.
    #[arg(long)]
    pub haproxy: PathBuf,
    /// keepalived.conf with the VRRP instance(s) to translate.
    #[arg(long)]
    pub keepalived: Option<PathBuf>,
    /// Write the config here instead of stdout.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

/// One input file.
#[derive(Clone, Copy, Debug)]
pub struct Source<'a> {
    /// As shown in messages.
    pub path: &'a str,
    pub text: &'a str,
}

/// Where in the output a warning is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    Top,
    Datapath,
    Cluster(usize),
    Node(usize, usize),
    Listener(usize, usize),
    Vrrp(usize),
}

/// Something that does not carry over exactly, or a problem in the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    pub file: String,
    /// 1-based; 0 when it concerns the whole output.
    pub line: usize,
    pub place: Place,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        }
    }
}

/// The translation: TOML text and every warning (also inside the text).
#[derive(Clone, Debug)]
pub struct Imported {
    pub toml: String,
    pub warnings: Vec<Warning>,
}

/// Rounds of [`repair`]: each leaves out everything the config's checks named, so a few
/// suffice (a cluster left without listeners, then a track naming that cluster, …).
const REPAIR_ROUNDS: usize = 8;

/// Translates the sources. `Err` only when nothing usable comes out (no listener).
///
/// What is written passes `pgrouter check-config`: the config's own checks run on the exact
/// text, and what they refuse is left out (commented out, with a warning naming the reason).
pub fn import(haproxy: &Source<'_>, keepalived: Option<&Source<'_>>) -> Result<Imported, String> {
    let mut sink = Sink::default();
    let mut plan = translate::plan(haproxy, keepalived, &mut sink)?;
    let mut warnings = sink.warnings;
    for _ in 0..REPAIR_ROUNDS {
        if plan.config.cluster.iter().all(|c| c.listener.is_empty()) {
            return Err(no_listener(haproxy, &plan));
        }
        let toml = render::render(&plan, haproxy, keepalived, &warnings)?;
        match crate::config::parse(&toml, "<imported>") {
            Ok(_) => return Ok(Imported { toml, warnings }),
            Err(e) => {
                if !repair::repair(&mut plan, &mut warnings, &e.diagnostics) {
                    break;
                }
            }
        }
    }
    // Not repairable (a bug of the translation): the output says exactly why it fails.
    let toml = render::render(&plan, haproxy, keepalived, &warnings)?;
    if let Err(e) = crate::config::parse(&toml, "<imported>") {
        for d in e.diagnostics {
            warnings.push(Warning {
                file: "<imported>".into(),
                line: 0,
                place: Place::Top,
                message: plan::comment_text(&format!(
                    "the result does not pass `pgrouter check-config`: line {}: {}: {}",
                    d.line, d.field, d.message
                )),
            });
        }
    }
    let toml = render::render(&plan, haproxy, keepalived, &warnings)?;
    Ok(Imported { toml, warnings })
}

/// The error when no listener is left, with the reasons listeners were left out.
fn no_listener(haproxy: &Source<'_>, plan: &plan::Plan) -> String {
    let mut e = format!("{}: no listener could be translated", haproxy.path);
    if !plan.refused.is_empty() {
        e.push_str(": ");
        e.push_str(&plan.refused.join("; "));
    }
    e
}

/// `pgrouter import`: reads the files, prints warnings to stderr and the config to stdout (or
/// `--output`). Fails only when a file cannot be read or nothing can be translated.
pub fn run(args: ImportArgs) -> anyhow::Result<()> {
    let htext = std::fs::read_to_string(&args.haproxy)
        .with_context(|| format!("reading {}", args.haproxy.display()))?;
    let hpath = args.haproxy.display().to_string();
    let ktext = match &args.keepalived {
        Some(p) => {
            Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?)
        }
        None => None,
    };
    let kpath = args
        .keepalived
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let hsrc = Source {
        path: &hpath,
        text: &htext,
    };
    let ksrc = ktext.as_deref().map(|text| Source { path: &kpath, text });
    let out = import(&hsrc, ksrc.as_ref()).map_err(|e| anyhow::anyhow!("{e}"))?;
    for w in &out.warnings {
        eprintln!("warning: {w}");
    }
    match &args.output {
        Some(p) => {
            std::fs::write(p, &out.toml).with_context(|| format!("writing {}", p.display()))?;
            eprintln!(
                "wrote {} ({} warning{}); check it with `pgrouter check-config {}`",
                p.display(),
                out.warnings.len(),
                if out.warnings.len() == 1 { "" } else { "s" },
                p.display()
            );
        }
        None => print!("{}", out.toml),
    }
    Ok(())
}
