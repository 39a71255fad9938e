//! Source positions for config diagnostics.
//!
//! The typed config is plain data (no `Spanned<T>` in every field, which would leak into every
//! consumer). Instead the text is parsed a second time with `toml_edit`, which keeps the byte
//! span of every key and value, and diagnostics look positions up by field path.
use std::ops::Range;

use toml_edit::{ImDocument, Item, Table, Value};

/// One step of a field path: a key, or an index into an array (of tables).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// Renders a path the way diagnostics show it: `cluster[0].listener[1].lag`.
pub(crate) fn render(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    out
}

/// The spanned document, or `None` when the text is not valid TOML (then toml's own error
/// carries the position).
pub(crate) struct Spans {
    doc: Option<ImDocument<String>>,
    /// Byte offset of the start of each line.
    line_starts: Vec<usize>,
    text: String,
}

impl Spans {
    pub(crate) fn new(text: &str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self {
            doc: ImDocument::parse(text.to_owned()).ok(),
            line_starts,
            text: text.to_owned(),
        }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub(crate) fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset).max(1);
        let start = self.line_starts.get(line - 1).copied().unwrap_or(0);
        let col = self
            .text
            .get(start..offset)
            .map_or(0, |s| s.chars().count())
            + 1;
        (line, col)
    }

    /// Span of the value at `path`; falling back to the nearest ancestor that exists (so a
    /// missing key points at its table's header).
    pub(crate) fn span_of(&self, path: &[Seg]) -> Option<Range<usize>> {
        self.walk(path).map(|(span, _)| span)
    }

    /// Span of the value at `path` only if the file writes it (no ancestor fallback).
    pub(crate) fn written(&self, path: &[Seg]) -> Option<Range<usize>> {
        self.walk(path)
            .and_then(|(span, complete)| complete.then_some(span))
    }

    /// The best span along `path` and whether the walk reached its end.
    fn walk(&self, path: &[Seg]) -> Option<(Range<usize>, bool)> {
        let doc = self.doc.as_ref()?;
        let mut depth = 0;
        let mut best = None;
        let mut cur = Node::Item(doc.as_item());
        for seg in path {
            let next = match (cur, seg) {
                (Node::Item(item), Seg::Key(k)) => item_key(item, k),
                (Node::Item(item), Seg::Index(i)) => item_index(item, *i),
                (Node::Value(v), Seg::Key(k)) => v
                    .as_inline_table()
                    .and_then(|t| t.get_key_value(k))
                    .and_then(|(key, it)| it.as_value().map(|v| (key.span(), Node::Value(v)))),
                (Node::Value(v), Seg::Index(i)) => v
                    .as_array()
                    .and_then(|a| a.get(*i))
                    .map(|v| (v.span(), Node::Value(v))),
                (Node::Table(t), Seg::Key(k)) => table_key(t, k),
                (Node::Table(_), Seg::Index(_)) => None,
            };
            let Some((key_span, node)) = next else { break };
            depth += 1;
            let span = node.span().or(key_span);
            if span.is_some() {
                best = span;
            }
            cur = node;
        }
        best.map(|b| (b, depth == path.len()))
    }

    /// Path of the innermost key or value whose span contains `offset` (used to name the field
    /// of a serde error, which only carries a span).
    pub(crate) fn path_at(&self, offset: usize) -> Vec<Seg> {
        let mut path = Vec::new();
        if let Some(doc) = &self.doc {
            walk_table(doc.as_table(), offset, &mut path);
        }
        path
    }
}

#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a Item),
    Table(&'a Table),
    Value(&'a Value),
}

impl Node<'_> {
    fn span(&self) -> Option<Range<usize>> {
        match self {
            Node::Item(i) => i.span(),
            Node::Table(t) => t.span(),
            Node::Value(v) => v.span(),
        }
    }
}

type Step<'a> = Option<(Option<Range<usize>>, Node<'a>)>;

fn table_key<'a>(t: &'a Table, k: &str) -> Step<'a> {
    t.get_key_value(k)
        .map(|(key, item)| (key.span(), Node::Item(item)))
}

fn item_key<'a>(item: &'a Item, k: &str) -> Step<'a> {
    match item {
        Item::Table(t) => table_key(t, k),
        Item::Value(v) => v
            .as_inline_table()
            .and_then(|t| t.get_key_value(k))
            .and_then(|(key, it)| it.as_value().map(|v| (key.span(), Node::Value(v)))),
        _ => None,
    }
}

fn item_index(item: &Item, i: usize) -> Step<'_> {
    match item {
        Item::ArrayOfTables(a) => a.get(i).map(|t| (t.span(), Node::Table(t))),
        Item::Value(v) => v
            .as_array()
            .and_then(|a| a.get(i))
            .map(|v| (v.span(), Node::Value(v))),
        _ => None,
    }
}

fn contains(span: Option<Range<usize>>, offset: usize) -> bool {
    span.is_some_and(|s| s.start <= offset && offset < s.end.max(s.start + 1))
}

fn walk_table(t: &Table, offset: usize, path: &mut Vec<Seg>) -> bool {
    for (k, item) in t.iter() {
        let key_span = t.key(k).and_then(|key| key.span());
        match item {
            Item::Table(sub) => {
                path.push(Seg::Key(k.to_owned()));
                if walk_table(sub, offset, path) || contains(sub.span(), offset) {
                    return true;
                }
                path.pop();
            }
            Item::ArrayOfTables(arr) => {
                for (i, sub) in arr.iter().enumerate() {
                    path.push(Seg::Key(k.to_owned()));
                    path.push(Seg::Index(i));
                    if walk_table(sub, offset, path) || contains(sub.span(), offset) {
                        return true;
                    }
                    path.pop();
                    path.pop();
                }
            }
            Item::Value(v) => {
                if contains(key_span.clone(), offset) || contains(v.span(), offset) {
                    path.push(Seg::Key(k.to_owned()));
                    walk_value(v, offset, path);
                    return true;
                }
            }
            Item::None => {}
        }
    }
    false
}

fn walk_value(v: &Value, offset: usize, path: &mut Vec<Seg>) {
    if let Some(a) = v.as_array() {
        for (i, e) in a.iter().enumerate() {
            if contains(e.span(), offset) {
                path.push(Seg::Index(i));
                walk_value(e, offset, path);
                return;
            }
        }
    } else if let Some(t) = v.as_inline_table() {
        for (k, e) in t.iter() {
            let ks = t.key(k).and_then(|key| key.span());
            if contains(ks, offset) || contains(e.span(), offset) {
                path.push(Seg::Key(k.to_owned()));
                walk_value(e, offset, path);
                return;
            }
        }
    }
}
