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
    /// Why listeners were left out; the error names them when no listener is left.
    pub refused: Vec<String>,
}

/// Comments the translation attaches to what it wrote. A key is a dotted path inside the
/// place's table (`"health.timeout"` in a cluster, `"timeouts.handshake"` in the datapath).
/// Every text is made fit for a TOML comment ([`comment_text`]).
#[derive(Clone, Debug, Default)]
pub struct Notes {
    above: Vec<(Place, String)>,
    after: Vec<(Place, &'static str, String)>,
    suggested: Vec<(Place, &'static str, String)>,
    /// Items left out because check-config would refuse them, as commented-out TOML (each
    /// line without the `# `); written at the end of the file.
    left_out: Vec<String>,
}

impl Notes {
    /// A comment line above the item at `place` (e.g. the HAProxy lines it comes from).
    pub fn above(&mut self, place: Place, text: impl Into<String>) {
        self.above.push((place, comment_text(&text.into())));
    }

    /// A comment after `key`'s value (e.g. the directive it was translated from).
    pub fn after(&mut self, place: Place, key: &'static str, text: impl Into<String>) {
        self.after.push((place, key, comment_text(&text.into())));
    }

    /// A key the translation left out but the reader should consider, written as a
    /// commented-out line (`line` without the `# `) where `key` would be.
    pub fn suggest(&mut self, place: Place, key: &'static str, line: impl Into<String>) {
        self.suggested
            .push((place, key, comment_text(&line.into())));
    }

    /// An item left out of the config (TOML text, one item), written commented out at the end
    /// of the file so that the reader can fix and restore it.
    pub fn left_out(&mut self, toml: &str) {
        let text: String = toml
            .lines()
            .map(|l| match l {
                "" => "#\n".to_owned(),
                l => format!("# {}\n", comment_text(l)),
            })
            .collect();
        self.left_out.push(text);
    }

    pub fn left_out_items(&self) -> &[String] {
        &self.left_out
    }

    /// Moves every note to the place `f` gives (`None`: the item is gone, its notes with it).
    /// Used when an item is removed and the ones after it move up.
    pub fn remap(&mut self, f: impl Fn(&Place) -> Option<Place>) {
        let keep = |p: &mut Place| match f(p) {
            Some(q) => {
                *p = q;
                true
            }
            None => false,
        };
        self.above.retain_mut(|(p, _)| keep(p));
        self.after.retain_mut(|(p, _, _)| keep(p));
        self.suggested.retain_mut(|(p, _, _)| keep(p));
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
        let message = comment_text(&message.into());
        let file = comment_text(file);
        let file = file.as_str();
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

/// `text` as it can stand in a TOML comment (and on a terminal): every control character but
/// tab written as its escape (`\u{1}`). TOML forbids them in comments, and input files can
/// carry them into warnings and notes.
pub fn comment_text(text: &str) -> String {
    if !text.chars().any(|c| c.is_control() && c != '\t') {
        return text.to_owned();
    }
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\t' {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}
