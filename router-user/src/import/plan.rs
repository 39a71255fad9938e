//! What the translation produces: the configuration as pgrouter's own types
//! ([`crate::config::raw`], the structs `config::parse` reads), and the comments and warnings
//! that explain it, each attached to a [`Place`]. `render` writes both as TOML.
use crate::config::raw;

use super::{Place, Warning};

/// The translation, ready to render.
#[derive(Debug, Default)]
pub struct Plan {
    /// The config pgrouter will read, `[[vrrp]]` from keepalived's `vrrp_instance`s included.
    pub config: raw::File,
    /// Comments about what was written (where it came from, why it has this value).
    pub notes: Notes,
    /// Directives that have no meaning for an L4 NAT, listed once (not warnings).
    pub dropped: Vec<String>,
}

/// Comments the translation attaches to what it wrote. A key is a dotted path inside the
/// place's table (`"health.timeout"` in a cluster, `"timeouts.handshake"` in the datapath).
#[derive(Clone, Debug, Default)]
pub struct Notes {
    above: Vec<(Place, String)>,
    after: Vec<(Place, &'static str, String)>,
    suggested: Vec<(Place, &'static str, String)>,
}

impl Notes {
    /// A comment line above the item at `place` (e.g. the HAProxy lines it comes from).
    pub fn above(&mut self, place: Place, text: impl Into<String>) {
        self.above.push((place, text.into()));
    }

    /// A comment after `key`'s value (e.g. the directive it was translated from).
    pub fn after(&mut self, place: Place, key: &'static str, text: impl Into<String>) {
        self.after.push((place, key, text.into()));
    }

    /// A key the translation left out but the reader should consider, written as a
    /// commented-out line (`line` without the `# `) where `key` would be.
    pub fn suggest(&mut self, place: Place, key: &'static str, line: impl Into<String>) {
        self.suggested.push((place, key, line.into()));
    }

    pub fn above_at<'a>(&'a self, place: &'a Place) -> impl Iterator<Item = &'a str> + 'a {
        self.above
            .iter()
            .filter(move |(p, _)| p == place)
            .map(|(_, t)| t.as_str())
    }

    pub fn after_at(&self, place: &Place, key: &str) -> Option<&str> {
        self.after
            .iter()
            .find(|(p, k, _)| p == place && *k == key)
            .map(|(_, _, t)| t.as_str())
    }

    pub fn suggested_at(&self, place: &Place, key: &str) -> Option<&str> {
        self.suggested
            .iter()
            .find(|(p, k, _)| p == place && *k == key)
            .map(|(_, _, t)| t.as_str())
    }
}

/// Collects warnings and notes with their file and place.
#[derive(Debug, Default)]
pub struct Sink {
    pub warnings: Vec<Warning>,
    pub notes: Notes,
}

impl Sink {
    /// Records a warning, once: the same message at the same place (e.g. for each server of
    /// a pool) adds nothing but noise; the first line it applies to is kept.
    pub fn warn(&mut self, file: &str, line: usize, place: Place, message: impl Into<String>) {
        let message = message.into();
        if self
            .warnings
            .iter()
            .any(|w| w.place == place && w.message == message && w.file == file)
        {
            return;
        }
        self.warnings.push(Warning {
            file: file.to_owned(),
            line,
            place,
            message,
        });
    }
}
