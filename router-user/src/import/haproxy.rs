//! haproxy.cfg, read the way HAProxy reads it: sections, words (quotes, backslash escapes,
//! `#` comments), and the proxies with the directives pgrouter can translate. Everything else
//! is kept as [`Directive`]s so the translation can warn about what it drops.
//!
//! Pure: text in, model out. Nothing here decides what pgrouter does with it.
use std::time::Duration;

/// One line of a section: its words, after unquoting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Directive {
    /// 1-based line in the file.
    pub line: usize,
    pub words: Vec<String>,
}

impl Directive {
    pub fn word(&self, i: usize) -> &str {
        self.words.get(i).map_or("", String::as_str)
    }
    /// The words from `i` on, joined by one space (for messages).
    pub fn rest(&self, i: usize) -> String {
        self.words.get(i..).map(|w| w.join(" ")).unwrap_or_default()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SectionKind {
    Global,
    Defaults,
    Frontend,
    Backend,
    Listen,
    /// userlist, peers, resolvers, mailers, program, cache, ring, http-errors, …
    Other,
}

/// A section header and its directives, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    pub kind: SectionKind,
    /// The keyword as written (`listen`, `peers`, …).
    pub keyword: String,
    pub name: String,
    pub line: usize,
    /// Words after the name on the header line (`listen web 127.0.0.1:42`, `defaults from x`).
    pub header_rest: Vec<String>,
    pub directives: Vec<Directive>,
}

/// A parse problem that makes a line unusable; the translation turns these into warnings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub message: String,
}

/// The whole file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct File {
    pub sections: Vec<Section>,
    pub errors: Vec<LineError>,
}

const SECTION_KEYWORDS: &[&str] = &[
    "global",
    "defaults",
    "frontend",
    "backend",
    "listen",
    "userlist",
    "peers",
    "resolvers",
    "mailers",
    "program",
    "http-errors",
    "ring",
    "cache",
    "fcgi-app",
    "crt-store",
    "traces",
    "log-forward",
];

/// Splits one line into words as HAProxy does: whitespace separates, `#` starts a comment
/// outside quotes, `\` escapes the next character, "…" and '…' group (no escapes inside '…').
pub fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '#' => break,
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(n) => cur.push(n),
                    None => return Err("line ends with a lone backslash".into()),
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(n) => cur.push(n),
                            None => return Err("unterminated double quote".into()),
                        },
                        Some(n) => cur.push(n),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(n) => cur.push(n),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// Parses the file into sections. Lines before the first section and lines that cannot be
/// split are reported in [`File::errors`]; parsing goes on.
pub fn parse(text: &str) -> File {
    let mut file = File::default();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let words = match split_words(raw) {
            Ok(w) => w,
            Err(e) => {
                file.errors.push(LineError {
                    line,
                    message: format!("{e}; line ignored"),
                });
                continue;
            }
        };
        let Some(first) = words.first() else {
            continue;
        };
        if SECTION_KEYWORDS.contains(&first.as_str()) {
            let kind = match first.as_str() {
                "global" => SectionKind::Global,
                "defaults" => SectionKind::Defaults,
                "frontend" => SectionKind::Frontend,
                "backend" => SectionKind::Backend,
                "listen" => SectionKind::Listen,
                _ => SectionKind::Other,
            };
            file.sections.push(Section {
                kind,
                keyword: first.clone(),
                name: words.get(1).cloned().unwrap_or_default(),
                line,
                header_rest: words.get(2..).map(<[String]>::to_vec).unwrap_or_default(),
                directives: Vec::new(),
            });
            continue;
        }
        match file.sections.last_mut() {
            Some(s) => s.directives.push(Directive { line, words }),
            None => file.errors.push(LineError {
                line,
                message: format!("{first:?} outside of any section; ignored"),
            }),
        }
    }
    file
}

/// HAProxy time: a number in milliseconds unless a unit (`us ms s m h d`) follows.
pub fn parse_time(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not an HAProxy time (e.g. 3s, 500ms, 2000)"))?;
    let d = match unit {
        "" | "ms" => Duration::from_millis(n),
        "us" => Duration::from_micros(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        "d" => Duration::from_secs(n.saturating_mul(86_400)),
        _ => return Err(format!("{s:?}: unknown time unit {unit:?}")),
    };
    Ok(d)
}

/// `bind` address: `*:5000`, `:5000`, `0.0.0.0:5000`, `10.0.0.1:5000`, `[::]:5000`,
/// `ipv4@…`, `ipv6@…`, port ranges `5000-5001`. `host` is `None` for a wildcard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindAddr {
    pub host: Option<String>,
    pub ports: (u16, u16),
}

pub fn parse_bind_addr(s: &str) -> Result<BindAddr, String> {
    let s = s
        .strip_prefix("ipv4@")
        .or_else(|| s.strip_prefix("ipv6@"))
        .or_else(|| s.strip_prefix("tcp@"))
        .or_else(|| s.strip_prefix("tcp4@"))
        .or_else(|| s.strip_prefix("tcp6@"))
        .unwrap_or(s);
    if s.starts_with('/') || s.contains("@") {
        return Err(format!(
            "{s:?} is not an IP address and port (UNIX sockets and other families are not translated)"
        ));
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest
            .split_once("]:")
            .ok_or_else(|| format!("{s:?}: expected [ADDRESS]:PORT"))?;
        (h, p)
    } else {
        s.rsplit_once(':')
            .ok_or_else(|| format!("{s:?}: expected ADDRESS:PORT"))?
    };
    let parse_port = |p: &str| -> Result<u16, String> {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{s:?}: {p:?} is not a port"))
    };
    let ports = match port.split_once('-') {
        Some((a, b)) => (parse_port(a)?, parse_port(b)?),
        None => {
            let p = parse_port(port)?;
            (p, p)
        }
    };
    let host = match host {
        "" | "*" | "0.0.0.0" | "::" => None,
        h => Some(h.to_owned()),
    };
    Ok(BindAddr { host, ports })
}

/// `server` / `default-server` options pgrouter can use. HAProxy's defaults apply when `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerOpts {
    pub check: Option<bool>,
    /// `port N`: where checks go (Patroni's API).
    pub check_port: Option<u16>,
    pub inter: Option<Duration>,
    pub fastinter: Option<Duration>,
    pub downinter: Option<Duration>,
    pub fall: Option<u32>,
    pub rise: Option<u32>,
    pub maxconn: Option<u32>,
    pub weight: Option<u32>,
    pub backup: bool,
    pub disabled: bool,
    pub on_marked_down: Option<String>,
    pub on_marked_up: Option<String>,
    pub check_ssl: bool,
    pub verify: Option<String>,
    pub ca_file: Option<String>,
    pub crt: Option<String>,
    pub check_sni: Option<String>,
    /// `addr X`: checks go to another address.
    pub check_addr: Option<String>,
    /// Options read but not translated, with their argument (for warnings).
    pub ignored: Vec<String>,
    /// Values that could not be read.
    pub errors: Vec<String>,
}

/// Server keywords that take one argument and that pgrouter ignores.
const IGNORED_WITH_ARG: &[&str] = &[
    "slowstart",
    "maxqueue",
    "minconn",
    "id",
    "cookie",
    "source",
    "resolvers",
    "init-addr",
    "resolve-prefer",
    "agent-port",
    "agent-inter",
    "agent-addr",
    "agent-send",
    "error-limit",
    "observe",
    "on-error",
    "proto",
    "alpn",
    "check-alpn",
    "check-proto",
    "pool-max-conn",
    "pool-purge-delay",
    "pool-low-conn",
    "max-reuse",
    "tfo",
    "usesrc",
    "track",
    "redir",
    "namespace",
    "log-proto",
    "ciphers",
    "ciphersuites",
    "sni",
    "crl-file",
    "verifyhost",
    "ssl-min-ver",
    "ssl-max-ver",
    "ws",
];

/// Reads `server`/`default-server` keywords from `words` (after name and address) into
/// `opts`, overriding what is already there (a server line overrides `default-server`).
pub fn parse_server_opts(words: &[String], opts: &mut ServerOpts) {
    let mut i = 0;
    while let Some(kw) = words.get(i).map(String::as_str) {
        let arg = words.get(i + 1).map(String::as_str);
        let mut takes_arg = true;
        let mut need = |what: &str| -> Option<&str> {
            if arg.is_none() {
                opts.errors.push(format!("`{kw}` needs {what}"));
            }
            arg
        };
        match kw {
            "check" => {
                opts.check = Some(true);
                takes_arg = false;
            }
            "no-check" => {
                opts.check = Some(false);
                takes_arg = false;
            }
            "backup" => {
                opts.backup = true;
                takes_arg = false;
            }
            "no-backup" => {
                opts.backup = false;
                takes_arg = false;
            }
            "disabled" => {
                opts.disabled = true;
                takes_arg = false;
            }
            "enabled" => {
                opts.disabled = false;
                takes_arg = false;
            }
            "check-ssl" => {
                opts.check_ssl = true;
                takes_arg = false;
            }
            "no-check-ssl" => {
                opts.check_ssl = false;
                takes_arg = false;
            }
            "port" => {
                if let Some(a) = need("a port") {
                    match a.parse::<u16>() {
                        Ok(p) if p != 0 => opts.check_port = Some(p),
                        _ => opts.errors.push(format!("`port {a}`: not a port")),
                    }
                }
            }
            "inter" | "fastinter" | "downinter" => {
                if let Some(a) = need("a time") {
                    match parse_time(a) {
                        Ok(d) => {
                            let slot = match kw {
                                "inter" => &mut opts.inter,
                                "fastinter" => &mut opts.fastinter,
                                _ => &mut opts.downinter,
                            };
                            *slot = Some(d);
                        }
                        Err(e) => opts.errors.push(format!("`{kw}`: {e}")),
                    }
                }
            }
            "fall" | "rise" | "maxconn" | "weight" => {
                if let Some(a) = need("a number") {
                    match a.parse::<u32>() {
                        Ok(n) => {
                            let slot = match kw {
                                "fall" => &mut opts.fall,
                                "rise" => &mut opts.rise,
                                "maxconn" => &mut opts.maxconn,
                                _ => &mut opts.weight,
                            };
                            *slot = Some(n);
                        }
                        Err(_) => opts.errors.push(format!("`{kw} {a}`: not a number")),
                    }
                }
            }
            "on-marked-down" => opts.on_marked_down = need("an action").map(str::to_owned),
            "on-marked-up" => opts.on_marked_up = need("an action").map(str::to_owned),
            "verify" => opts.verify = need("none or required").map(str::to_owned),
            "ca-file" => opts.ca_file = need("a file").map(str::to_owned),
            "crt" => opts.crt = need("a file").map(str::to_owned),
            "check-sni" => opts.check_sni = need("a name").map(str::to_owned),
            "addr" => opts.check_addr = need("an address").map(str::to_owned),
            k if IGNORED_WITH_ARG.contains(&k) => {
                opts.ignored
                    .push(format!("{k} {}", arg.unwrap_or_default()).trim_end().into());
            }
            k => {
                opts.ignored.push(k.to_owned());
                takes_arg = false;
            }
        }
        i += if takes_arg { 2 } else { 1 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Words split as HAProxy does: quotes, escapes, comments.
    #[test]
    fn words() {
        let w = split_words(r#"  http-check expect string OK\ :\ master # comment"#);
        assert_eq!(
            w,
            Ok(vec![
                "http-check".into(),
                "expect".into(),
                "string".into(),
                "OK : master".into()
            ])
        );
        let w = split_words(r#"option httpchk "GET /replica?lag=10MB" 'a#b'"#);
        assert_eq!(
            w,
            Ok(vec![
                "option".into(),
                "httpchk".into(),
                "GET /replica?lag=10MB".into(),
                "a#b".into()
            ])
        );
        assert!(split_words("bind \"*:5000").is_err());
    }

    /// HAProxy times default to milliseconds.
    #[test]
    fn times() {
        assert_eq!(parse_time("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_time("2000"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_time("150ms"), Ok(Duration::from_millis(150)));
        assert_eq!(parse_time("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_time("3 s").is_err());
        assert!(parse_time("3x").is_err());
    }

    #[test]
    fn binds() {
        assert_eq!(
            parse_bind_addr("*:5000"),
            Ok(BindAddr {
                host: None,
                ports: (5000, 5000)
            })
        );
        assert_eq!(
            parse_bind_addr("10.0.0.1:5001"),
            Ok(BindAddr {
                host: Some("10.0.0.1".into()),
                ports: (5001, 5001)
            })
        );
        assert_eq!(
            parse_bind_addr("ipv6@[2001:db8::1]:5000-5002"),
            Ok(BindAddr {
                host: Some("2001:db8::1".into()),
                ports: (5000, 5002)
            })
        );
        assert_eq!(parse_bind_addr(":5000").map(|b| b.host), Ok(None));
        assert!(parse_bind_addr("/run/pg.sock").is_err());
        assert!(parse_bind_addr("10.0.0.1").is_err());
        assert!(parse_bind_addr("10.0.0.1:0").is_err());
    }

    /// A server line overrides default-server; unknown options are kept for warnings.
    #[test]
    fn server_options() {
        let mut o = ServerOpts::default();
        let w = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        parse_server_opts(
            &w("inter 3s fall 3 rise 2 on-marked-down shutdown-sessions slowstart 60s"),
            &mut o,
        );
        parse_server_opts(&w("maxconn 100 check port 8008 rise 4 send-proxy"), &mut o);
        assert_eq!(o.inter, Some(Duration::from_secs(3)));
        assert_eq!(o.fall, Some(3));
        assert_eq!(o.rise, Some(4));
        assert_eq!(o.maxconn, Some(100));
        assert_eq!(o.check, Some(true));
        assert_eq!(o.check_port, Some(8008));
        assert_eq!(o.on_marked_down.as_deref(), Some("shutdown-sessions"));
        assert_eq!(o.ignored, vec!["slowstart 60s", "send-proxy"]);
        let mut bad = ServerOpts::default();
        parse_server_opts(&w("port x fall"), &mut bad);
        assert_eq!(bad.errors.len(), 2, "{:?}", bad.errors);
    }

    #[test]
    fn sections() {
        let f = parse(
            "global\n maxconn 100\n\nlisten PG1\n bind *:5000\n server a 10.0.0.1:5432 check\n\
             stray\nbackend b\n",
        );
        assert_eq!(f.sections.len(), 3);
        assert_eq!(f.sections[1].kind, SectionKind::Listen);
        assert_eq!(f.sections[1].name, "PG1");
        assert_eq!(f.sections[1].directives.len(), 3);
        assert_eq!(f.sections[1].directives[1].line, 6);
        let f = parse("bind *:5000\n");
        assert_eq!(f.errors.len(), 1);
    }
}
