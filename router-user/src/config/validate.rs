//! Semantic validation: raw file → typed [`Config`], collecting every error with its position.
//!
//! The context ([`Ctx`]) and the entry points live here; the checks per section in
//! `validate/datapath.rs` (`[datapath]`, `[control]`), `validate/cluster.rs` (`[[cluster]]`)
//! and `config/vrrp.rs` (`[[vrrp]]`, beside its schema).
mod cluster;
mod datapath;

pub use cluster::{MAX_BACKEND_ENTRIES, MAX_LISTENERS, MAX_NODES, MAX_RISE_FALL, MIN_CHECK_PERIOD};

use std::path::Path;

use serde::de::DeserializeOwned;

use super::span::{Seg, Spans, render};
use super::vrrp::{self, RawInstance, VrrpInstance};
use super::{Config, ConfigError, Diagnostic, raw};

/// Collects diagnostics for one file, positioned through its spans.
pub(super) struct Ctx<'a> {
    file: String,
    spans: &'a Spans,
    diags: Vec<Diagnostic>,
}

/// Builds a path from segments: `p!["cluster", 0, "name"]`.
macro_rules! p {
    ($($seg:expr),* $(,)?) => { vec![$(crate::config::span::Seg::from($seg)),*] };
}
pub(super) use p;

impl From<&str> for Seg {
    fn from(s: &str) -> Self {
        Seg::Key(s.to_owned())
    }
}
impl From<usize> for Seg {
    fn from(i: usize) -> Self {
        Seg::Index(i)
    }
}

impl<'a> Ctx<'a> {
    fn new(path: &Path, spans: &'a Spans) -> Self {
        Self {
            file: path.display().to_string(),
            spans,
            diags: Vec::new(),
        }
    }

    pub(super) fn err(&mut self, path: Vec<Seg>, message: impl Into<String>) {
        self.err_near(path, &[], message);
    }

    /// Like `err`, but when `path` is not written in the file (a default), points at the
    /// first of `near` that is: the key whose value makes the default wrong.
    pub(super) fn err_near(
        &mut self,
        path: Vec<Seg>,
        near: &[Vec<Seg>],
        message: impl Into<String>,
    ) {
        let (line, col) = std::iter::once(&path)
            .chain(near)
            .find_map(|p| self.spans.written(p))
            .or_else(|| self.spans.span_of(&path))
            .map_or((1, 1), |s| self.spans.line_col(s.start));
        self.diags.push(Diagnostic {
            file: self.file.clone(),
            line,
            col,
            field: render(&path),
            message: message.into(),
        });
    }

    /// A positive duration at `path`, or `default` when unset; a zero or unparsable one is
    /// reported there (and `default` stands in, so validation goes on).
    pub(super) fn positive_duration(
        &mut self,
        path: Vec<Seg>,
        text: Option<&super::units::DurationText>,
        default: std::time::Duration,
    ) -> std::time::Duration {
        let Some(text) = text else {
            return default;
        };
        match text.parse() {
            Ok(d) if d.is_zero() => {
                self.err(path, format!("{text} must be more than 0"));
                default
            }
            Ok(d) => d,
            Err(e) => {
                self.err(path, e);
                default
            }
        }
    }

    /// `Ok(value)` if nothing was reported, else every diagnostic, sorted by position.
    fn finish<T>(self, value: T) -> Result<T, ConfigError> {
        if self.diags.is_empty() {
            Ok(value)
        } else {
            let mut diagnostics = self.diags;
            diagnostics.sort_by_key(|d| (d.line, d.col));
            Err(ConfigError { diagnostics })
        }
    }
}

/// An interface name the kernel accepts: 1..=15 bytes (IFNAMSIZ is 16 with the NUL), no `/`
/// and no space.
pub(super) fn valid_ifname(name: &str) -> bool {
    !name.is_empty() && name.len() <= 15 && !name.contains(['/', ' '])
}

/// Deserialises the file, or the one serde error positioned at its field (serde stops at the
/// first syntax or type error).
fn deserialize<T: DeserializeOwned>(
    text: &str,
    path: &Path,
    spans: &Spans,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let (line, col, field) = match e.span() {
            Some(s) => {
                let (l, c) = spans.line_col(s.start);
                let field = render(&spans.path_at(s.start));
                (
                    l,
                    c,
                    if field.is_empty() {
                        "(top level)".to_owned()
                    } else {
                        field
                    },
                )
            }
            None => (1, 1, "(top level)".to_owned()),
        };
        ConfigError {
            diagnostics: vec![Diagnostic {
                file: path.display().to_string(),
                line,
                col,
                field,
                message: syntax_message(text, e.message(), e.span().map(|s| s.start)),
            }],
        }
    })
}

/// The TOML parser's message on one line; when it has none (a character no rule accepts, such
/// as a control character in a comment), what is at the error's position.
fn syntax_message(text: &str, message: &str, at: Option<usize>) -> String {
    let message = message.trim().replace('\n', " ");
    if !message.is_empty() {
        return message;
    }
    let at = at.unwrap_or(0);
    if at >= text.len() {
        return "invalid TOML syntax: unexpected end of file".to_owned();
    }
    match text.get(at..).and_then(|rest| rest.chars().next()) {
        Some('\n' | '\r') => "invalid TOML syntax: unexpected end of line".to_owned(),
        Some(c) if c.is_control() => format!(
            "control character U+{:04X} is not allowed here (TOML allows only tab in comments and \
             strings; inside a string write it escaped, \\u{:04X})",
            u32::from(c),
            u32::from(c)
        ),
        Some(c) => format!("invalid TOML syntax at {c:?}"),
        None => "invalid TOML syntax".to_owned(),
    }
}

pub(super) fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let spans = Spans::new(text);
    let file: raw::File = deserialize(text, path, &spans)?;
    let mut ctx = Ctx::new(path, &spans);
    let datapath = datapath::datapath(&mut ctx, file.datapath);
    let control = datapath::control(&mut ctx, file.control);
    let clusters = cluster::clusters(&mut ctx, file.cluster, &datapath);
    let vrrp = vrrp::validate(&mut ctx, file.vrrp, Some(&clusters));
    let sync = super::sync::validate(&mut ctx, file.sync, datapath.snat_ports);
    let cfg = Config {
        path: path.to_owned(),
        datapath,
        control,
        clusters,
        vrrp,
        sync,
    };
    ctx.finish(cfg)
}

/// A file with only `[[vrrp]]` tables (`pgrouter vrrp --config FILE`).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct VrrpOnlyFile {
    #[serde(default)]
    vrrp: Vec<RawInstance>,
}

pub(super) fn parse_vrrp_only(text: &str, path: &Path) -> Result<Vec<VrrpInstance>, ConfigError> {
    let spans = Spans::new(text);
    let file: VrrpOnlyFile = deserialize(text, path, &spans)?;
    let mut ctx = Ctx::new(path, &spans);
    let instances = vrrp::validate(&mut ctx, file.vrrp, None);
    ctx.finish(instances)
}
