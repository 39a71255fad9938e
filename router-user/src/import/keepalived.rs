//! keepalived.conf, read as keepalived does: statements of words, `{ … }` blocks, `#` and `!`
//! comments. Then the `vrrp_script` and `vrrp_instance` blocks pgrouter can translate.
//!
//! Pure: text in, model out.

/// A statement (`priority 101`) or a block (`authentication { … }`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// 1-based line of the first word.
    pub line: usize,
    pub words: Vec<String>,
    /// `Some` for a block.
    pub block: Option<Vec<Item>>,
}

impl Item {
    pub fn key(&self) -> &str {
        self.words.first().map_or("", String::as_str)
    }
    pub fn arg(&self, i: usize) -> Option<&str> {
        self.words.get(i).map(String::as_str)
    }
    /// Every word after the key.
    pub fn args(&self) -> &[String] {
        self.words.get(1..).unwrap_or_default()
    }
}

/// The parsed file plus problems found on the way (line, message).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct File {
    pub items: Vec<Item>,
    pub errors: Vec<(usize, String)>,
}

enum Tok {
    Word(String),
    Open,
    Close,
    Newline,
}

fn tokenize(text: &str) -> Vec<(usize, Tok)> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let mut cur = String::new();
        let mut chars = raw.chars().peekable();
        let flush = |cur: &mut String, out: &mut Vec<(usize, Tok)>| {
            if !cur.is_empty() {
                out.push((line, Tok::Word(std::mem::take(cur))));
            }
        };
        while let Some(c) = chars.next() {
            match c {
                '#' | '!' => break,
                '{' => {
                    flush(&mut cur, &mut out);
                    out.push((line, Tok::Open));
                }
                '}' => {
                    flush(&mut cur, &mut out);
                    out.push((line, Tok::Close));
                }
                '"' => {
                    // Quoted string (keepalived keeps quotes for `script "…"`); no escapes.
                    for n in chars.by_ref() {
                        if n == '"' {
                            break;
                        }
                        cur.push(n);
                    }
                }
                c if c.is_whitespace() => flush(&mut cur, &mut out),
                c => cur.push(c),
            }
        }
        flush(&mut cur, &mut out);
        out.push((line, Tok::Newline));
    }
    out
}

/// Parses keepalived.conf into nested items.
pub fn parse(text: &str) -> File {
    let toks = tokenize(text);
    let mut errors = Vec::new();
    // Stack of open blocks: (header item, children).
    let mut stack: Vec<(Item, Vec<Item>)> = Vec::new();
    let mut top: Vec<Item> = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut first_line = 0;
    // A `{` alone on a line belongs to the statement of the line before.
    let mut pending: Option<Item> = None;
    for (line, tok) in toks {
        let children =
            |stack: &mut Vec<(Item, Vec<Item>)>, top: &mut Vec<Item>, item: Item| match stack
                .last_mut()
            {
                Some((_, c)) => c.push(item),
                None => top.push(item),
            };
        match tok {
            Tok::Word(w) => {
                if let Some(p) = pending.take() {
                    children(&mut stack, &mut top, p);
                }
                if words.is_empty() {
                    first_line = line;
                }
                words.push(w);
            }
            Tok::Newline => {
                if !words.is_empty() {
                    if let Some(p) = pending.take() {
                        children(&mut stack, &mut top, p);
                    }
                    pending = Some(Item {
                        line: first_line,
                        words: std::mem::take(&mut words),
                        block: None,
                    });
                }
            }
            Tok::Open => {
                let header = if words.is_empty() {
                    match pending.take() {
                        Some(p) => p,
                        None => {
                            errors.push((line, "`{` without a keyword before it".to_owned()));
                            Item {
                                line,
                                words: Vec::new(),
                                block: None,
                            }
                        }
                    }
                } else {
                    if let Some(p) = pending.take() {
                        children(&mut stack, &mut top, p);
                    }
                    Item {
                        line: first_line,
                        words: std::mem::take(&mut words),
                        block: None,
                    }
                };
                stack.push((header, Vec::new()));
            }
            Tok::Close => {
                if let Some(p) = pending.take() {
                    children(&mut stack, &mut top, p);
                }
                if !words.is_empty() {
                    let item = Item {
                        line: first_line,
                        words: std::mem::take(&mut words),
                        block: None,
                    };
                    children(&mut stack, &mut top, item);
                }
                match stack.pop() {
                    Some((mut header, kids)) => {
                        header.block = Some(kids);
                        children(&mut stack, &mut top, header);
                    }
                    None => errors.push((line, "`}` without a matching `{`".to_owned())),
                }
            }
        }
    }
    if let Some(p) = pending.take() {
        match stack.last_mut() {
            Some((_, c)) => c.push(p),
            None => top.push(p),
        }
    }
    while let Some((mut header, kids)) = stack.pop() {
        errors.push((
            header.line,
            format!("`{}` block is never closed", header.key()),
        ));
        header.block = Some(kids);
        match stack.last_mut() {
            Some((_, c)) => c.push(header),
            None => top.push(header),
        }
    }
    File { items: top, errors }
}

/// A `vrrp_script` (only what the translation reports).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Script {
    pub name: String,
    pub line: usize,
    pub script: Option<String>,
    pub weight: Option<i32>,
}

/// Collects `vrrp_script` blocks.
pub fn scripts(file: &File) -> Vec<Script> {
    file.items
        .iter()
        .filter(|i| i.key() == "vrrp_script")
        .map(|i| {
            let mut s = Script {
                name: i.arg(1).unwrap_or_default().to_owned(),
                line: i.line,
                script: None,
                weight: None,
            };
            for c in i.block.iter().flatten() {
                match c.key() {
                    "script" => s.script = Some(c.args().join(" ")),
                    "weight" => s.weight = c.arg(1).and_then(|w| w.parse().ok()),
                    _ => {}
                }
            }
            s
        })
        .collect()
}

/// `global_defs { vrrp_version N }`, keepalived's default VRRP version (2 when absent).
pub fn global_vrrp_version(file: &File) -> Option<(usize, u8)> {
    file.items
        .iter()
        .filter(|i| i.key() == "global_defs")
        .flat_map(|i| i.block.iter().flatten())
        .find(|c| c.key() == "vrrp_version")
        .and_then(|c| Some((c.line, c.arg(1)?.parse().ok()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks nest, `{` may sit on its own line or share one with values, comments vanish.
    #[test]
    fn nesting() {
        let f = parse(
            "! comment\nvrrp_instance VI_1 {\n  priority 101 # trailing\n  authentication\n  {\n \
             auth_type PASS\n  }\n  virtual_ipaddress { 10.0.0.1/24 dev eth0 }\n}\n",
        );
        assert!(f.errors.is_empty(), "{:?}", f.errors);
        assert_eq!(f.items.len(), 1);
        let vi = &f.items[0];
        assert_eq!(vi.words, vec!["vrrp_instance", "VI_1"]);
        let kids = vi.block.as_deref().unwrap_or_default();
        assert_eq!(kids.len(), 3);
        assert_eq!(kids[0].words, vec!["priority", "101"]);
        assert_eq!(kids[1].key(), "authentication");
        assert_eq!(
            kids[1].block.as_ref().map(|b| b[0].words.clone()),
            Some(vec!["auth_type".to_owned(), "PASS".to_owned()])
        );
        assert_eq!(
            kids[2].block.as_ref().map(|b| b[0].words.clone()),
            Some(vec!["10.0.0.1/24".into(), "dev".into(), "eth0".into()])
        );
    }

    #[test]
    fn unbalanced_braces_are_reported() {
        assert_eq!(parse("vrrp_instance A {\n priority 1\n").errors.len(), 1);
        assert_eq!(parse("}\n").errors.len(), 1);
    }

    #[test]
    fn script_and_version() {
        let f = parse(
            "global_defs {\n vrrp_version 3\n}\nvrrp_script chk {\n script \"killall -0 haproxy\"\n \
             weight -20\n}\n",
        );
        assert_eq!(global_vrrp_version(&f), Some((2, 3)));
        let s = scripts(&f);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].script.as_deref(), Some("killall -0 haproxy"));
        assert_eq!(s[0].weight, Some(-20));
    }
}
