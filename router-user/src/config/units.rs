//! Value syntaxes: durations, Patroni lag sizes, port ranges.
//!
//! One duration grammar for every duration key of the file (`[cluster.health]`,
//! `[datapath.timeouts]`, `empty_hold`, `[[vrrp]]`): a quoted whole number with a unit.
use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// The units of [`parse_duration`], as listed in its messages.
const UNITS_HINT: &str = "us, ms, s, m, h, d";

/// Parses `"3s"`, `"500ms"`, `"2m"`, `"1m30s"`: HAProxy's units (`us ms s m h d`), but a unit is
/// required, because HAProxy's unit-less milliseconds (and keepalived's unit-less seconds) are
/// an easy mistake to make in TOML.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration; write e.g. \"1s\" or \"200ms\"".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!(
                "invalid duration {s:?}; write e.g. \"1s\" or \"200ms\""
            ));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("duration {s:?} is too large"))?;
        rest = &rest[digits..];
        if rest.starts_with('.') {
            return Err(fraction_error(s));
        }
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "us" => Duration::from_micros(n),
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "d" => Duration::from_secs(n.saturating_mul(86400)),
            "" => {
                return Err(format!(
                    "duration {s:?} needs a unit ({UNITS_HINT}), e.g. \"{n}ms\""
                ));
            }
            other => {
                return Err(format!(
                    "unknown duration unit {other:?} in {s:?}; use {UNITS_HINT}"
                ));
            }
        };
        total = total.saturating_add(part);
    }
    Ok(total)
}

/// The message for `"1.5s"`: whole units only, with the exact equivalent when there is one.
fn fraction_error(s: &str) -> String {
    let t = s.trim();
    let num_len = t
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b'.')
        .count();
    let scale_us = match &t[num_len..] {
        "us" => Some(1.0),
        "ms" => Some(1e3),
        "s" => Some(1e6),
        "m" => Some(60e6),
        "h" => Some(3600e6),
        "d" => Some(86_400e6),
        _ => None,
    };
    let exact = t[..num_len]
        .parse::<f64>()
        .ok()
        .zip(scale_us)
        .map(|(n, scale)| n * scale)
        .filter(|us| us.is_finite() && *us >= 1.0 && us.fract() == 0.0 && *us < 1e18);
    match exact {
        Some(us) => format!(
            "duration {s:?} has a fraction; write whole units: \"{}\"",
            duration_text(Duration::from_micros(us as u64))
        ),
        None => format!("duration {s:?} has a fraction; write whole units, e.g. \"1s500ms\""),
    }
}

/// A duration as written in the file: text in the [`parse_duration`] syntax, or a bare TOML
/// number, kept so that validation reports a number with its field and the fix (serde would
/// stop at the first type error, without saying what to write).
#[derive(Clone, Debug, PartialEq)]
pub enum DurationText {
    Text(String),
    /// A TOML integer or float (`advert_int = 1`): always an error, as it has no unit.
    Number(f64),
}

impl DurationText {
    /// The duration, or a message for the field's diagnostic.
    pub fn parse(&self) -> Result<Duration, String> {
        match self {
            Self::Text(t) => parse_duration(t),
            Self::Number(n) => Err(bare_number_error(*n)),
        }
    }
}

/// The message for `interval = 1`: what to write instead.
fn bare_number_error(n: f64) -> String {
    let fix = if n.is_finite() && n >= 0.0 && n.fract() == 0.0 {
        format!("\"{n}s\" or \"{n}ms\"")
    } else if n.is_finite() && n > 0.0 && n < 1e9 {
        // A fraction is keepalived's seconds (`advert_int 0.1`).
        format!("\"{}\"", duration_text(Duration::from_secs_f64(n)))
    } else {
        "e.g. \"1s\"".to_owned()
    };
    format!("bare number {n} is not a duration; write {fix} (quoted, with a unit: {UNITS_HINT})")
}

/// As written, for messages: `"5ms"` quoted, a number bare.
impl fmt::Display for DurationText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Text(t) => write!(f, "{t:?}"),
            Self::Number(n) => write!(f, "{n}"),
        }
    }
}

impl From<String> for DurationText {
    fn from(s: String) -> Self {
        Self::Text(s)
    }
}

impl From<&str> for DurationText {
    fn from(s: &str) -> Self {
        Self::Text(s.to_owned())
    }
}

impl From<Duration> for DurationText {
    fn from(d: Duration) -> Self {
        Self::Text(duration_text(d))
    }
}

impl Serialize for DurationText {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Text(t) => s.serialize_str(t),
            Self::Number(n) => s.serialize_f64(*n),
        }
    }
}

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = DurationText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration like \"1s\" or \"200ms\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<DurationText, E> {
                Ok(DurationText::Text(s.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<DurationText, E> {
                Ok(DurationText::Number(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<DurationText, E> {
                Ok(DurationText::Number(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<DurationText, E> {
                Ok(DurationText::Number(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// Writes a duration in the syntax [`parse_duration`] reads, largest units first:
/// `"2h4m"`, `"1m30s"`, `"250ms"`, `"0s"`.
pub fn duration_text(d: Duration) -> String {
    const UNITS: [(&str, u128); 6] = [
        ("d", 86_400_000_000),
        ("h", 3_600_000_000),
        ("m", 60_000_000),
        ("s", 1_000_000),
        ("ms", 1_000),
        ("us", 1),
    ];
    let mut us = d.as_micros();
    if us == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in UNITS {
        if us >= size {
            out.push_str(&format!("{}{unit}", us / size));
            us %= size;
        }
    }
    out
}

/// Parses a replication lag limit exactly as Patroni parses `GET /replica?lag=…`
/// (`patroni.utils.parse_int(value, 'B')`): a C-`strtol`-like integer (decimal, `0x` hex,
/// leading-`0` octal) or a float (`1.5MB`, `1e6`), optionally followed by one of the
/// case-sensitive units `B kB MB GB TB` (powers of 1024). Values with a unit above `B` are
/// rounded to a whole number of the next smaller unit, then to whole bytes with Python's
/// round-half-to-even.
///
/// Returns `None` where Patroni's parser returns `None` (Patroni then silently applies *no* lag
/// limit; we reject such values instead, see `validate`).
pub fn patroni_parse_bytes(value: &str) -> Option<i64> {
    let v = value.trim();
    let (mut num, mut unit): (Option<f64>, &str) = match strtol(v) {
        Some((n, rest)) => (Some(n as f64), rest),
        None => (None, v),
    };
    if (num.is_none() && unit.starts_with('.')) || unit.starts_with(['.', 'e', 'E']) {
        let (n, rest) = strtod(v)?;
        num = Some(n);
        unit = rest;
    }
    let val = num?;
    let unit = unit.trim();
    if unit.is_empty() {
        return to_i64(val.round_ties_even());
    }
    // Memory conversion table to the base unit B, and the unit each one rounds to.
    const KB: f64 = 1024.0;
    let (mult, round_to) = match unit {
        "TB" => (KB * KB * KB * KB, Some(KB * KB * KB)),
        "GB" => (KB * KB * KB, Some(KB * KB)),
        "MB" => (KB * KB, Some(KB)),
        "kB" => (KB, Some(1.0)),
        "B" => (1.0, None),
        _ => return None,
    };
    let mut bytes = val * mult;
    if let Some(r) = round_to {
        bytes = (bytes / r).round_ties_even() * r;
    }
    to_i64(bytes.round_ties_even())
}

fn to_i64(f: f64) -> Option<i64> {
    (f.is_finite() && f.abs() < 9.0e18).then_some(f as i64)
}

/// Patroni's `strtol`: tries `^[-+]?0x[0-9a-fA-F]+`, then `^[-+]?0[0-7]*`, then
/// `^[-+]?(0|[1-9][0-9]*)`, and returns the value and the unparsed rest.
fn strtol(v: &str) -> Option<(i64, &str)> {
    let (neg, body, sign_len) = match v.as_bytes().first() {
        Some(b'-') => (true, &v[1..], 1),
        Some(b'+') => (false, &v[1..], 1),
        _ => (false, v, 0),
    };
    let apply = |n: i64| if neg { -n } else { n };
    if let Some(hex) = body.strip_prefix("0x") {
        let len = hex.bytes().take_while(u8::is_ascii_hexdigit).count();
        if len > 0 {
            let n = i64::from_str_radix(&hex[..len], 16).ok()?;
            return Some((apply(n), &v[sign_len + 2 + len..]));
        }
    }
    if let Some(octal) = body.strip_prefix('0') {
        let len = 1 + octal
            .bytes()
            .take_while(|b| (b'0'..=b'7').contains(b))
            .count();
        let n = i64::from_str_radix(&body[..len], 8).ok()?;
        return Some((apply(n), &v[sign_len + len..]));
    }
    let len = body.bytes().take_while(u8::is_ascii_digit).count();
    if len == 0 {
        return None;
    }
    let n: i64 = body[..len].parse().ok()?;
    Some((apply(n), &v[sign_len + len..]))
}

/// Patroni's `strtod`: `^[-+]?[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?`.
fn strtod(v: &str) -> Option<(f64, &str)> {
    let b = v.as_bytes();
    let mut i = 0;
    if matches!(b.first(), Some(b'-' | b'+')) {
        i += 1;
    }
    let int_start = i;
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    let int_end = i;
    // `[0-9]*\.?[0-9]+`: the mantissa must end in a digit.
    if b.get(i) == Some(&b'.') && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
        i += 1;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
    } else if int_end == int_start {
        return None;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(b.get(j), Some(b'-' | b'+')) {
            j += 1;
        }
        let exp_start = j;
        while b.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        if j > exp_start {
            i = j;
        }
    }
    let n: f64 = v[..i].parse().ok()?;
    Some((n, &v[i..]))
}

/// Parses `"40000-59999"` into an inclusive range.
pub fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s.split_once('-').ok_or_else(|| {
        format!("invalid port range {s:?}; write \"FIRST-LAST\", e.g. \"40000-59999\"")
    })?;
    let first: u16 = a
        .trim()
        .parse()
        .map_err(|_| format!("invalid first port {:?} in {s:?}", a.trim()))?;
    let last: u16 = b
        .trim()
        .parse()
        .map_err(|_| format!("invalid last port {:?} in {s:?}", b.trim()))?;
    Ok((first, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert!(parse_duration("3").is_err_and(|e| e.contains("needs a unit")));
        assert!(parse_duration("3 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("1.5s").is_err());
    }

    /// A fraction or a bare number is refused with the text to write instead.
    #[test]
    fn durations_refused_with_the_fix() {
        assert_eq!(
            parse_duration("1.5s"),
            Err("duration \"1.5s\" has a fraction; write whole units: \"1s500ms\"".into())
        );
        assert!(parse_duration("0.1s").is_err_and(|e| e.ends_with("\"100ms\"")));
        assert!(parse_duration("1.5x").is_err_and(|e| e.contains("e.g. \"1s500ms\"")));
        let bare = |n: f64| DurationText::Number(n).parse().unwrap_err();
        assert!(
            bare(1.0).contains("write \"1s\" or \"1ms\""),
            "{}",
            bare(1.0)
        );
        assert!(bare(0.1).contains("write \"100ms\""), "{}", bare(0.1));
        assert!(bare(-1.0).contains("e.g. \"1s\""), "{}", bare(-1.0));
        assert_eq!(
            DurationText::from(Duration::from_millis(1500)).parse(),
            Ok(Duration::from_millis(1500))
        );
    }

    #[test]
    fn duration_text_round_trips() {
        for (d, text) in [
            (Duration::from_secs(7440), "2h4m"),
            (Duration::from_secs(120), "2m"),
            (Duration::from_millis(1500), "1s500ms"),
            (Duration::from_micros(250), "250us"),
            (Duration::from_secs(86_400 + 1), "1d1s"),
            (Duration::ZERO, "0s"),
        ] {
            assert_eq!(duration_text(d), text);
            assert_eq!(parse_duration(text), Ok(d));
        }
    }

    /// Cases taken from Patroni's `parse_int` doctests (with base unit `B`) and its rules.
    #[test]
    fn lag_matches_patroni_parse_int() {
        let mb = 1024 * 1024;
        assert_eq!(patroni_parse_bytes("10MB"), Some(10 * mb));
        assert_eq!(patroni_parse_bytes("10485760"), Some(10 * mb));
        assert_eq!(patroni_parse_bytes(" 1 kB "), Some(1024));
        assert_eq!(patroni_parse_bytes("1GB"), Some(1024 * mb));
        assert_eq!(patroni_parse_bytes("1TB"), Some(1024 * 1024 * mb));
        assert_eq!(patroni_parse_bytes("512B"), Some(512));
        assert_eq!(patroni_parse_bytes("0x400"), Some(1024));
        assert_eq!(patroni_parse_bytes("+0x400MB"), Some(1024 * mb));
        // Leading zero means octal, as in strtol(3) with base 0.
        assert_eq!(patroni_parse_bytes("010MB"), Some(8 * mb));
        assert_eq!(patroni_parse_bytes("08"), None);
        assert_eq!(patroni_parse_bytes("1.5MB"), Some(1536 * 1024));
        assert_eq!(patroni_parse_bytes("0.5kB"), Some(512));
        assert_eq!(patroni_parse_bytes(".5kB"), Some(512));
        assert_eq!(patroni_parse_bytes("1e3"), Some(1000));
        // kB rounds to whole bytes, MB to whole kB.
        assert_eq!(patroni_parse_bytes("4097.4kB"), Some(4097 * 1024 + 410));
        assert_eq!(patroni_parse_bytes("1.0000001MB"), Some(mb));
        assert_eq!(patroni_parse_bytes("2.5"), Some(2)); // round half to even
        assert_eq!(patroni_parse_bytes("-1"), Some(-1));
        // Units are case-sensitive; unknown ones make the whole value invalid.
        assert_eq!(patroni_parse_bytes("10mb"), None);
        assert_eq!(patroni_parse_bytes("10KB"), None);
        assert_eq!(patroni_parse_bytes("10 MiB"), None);
        assert_eq!(patroni_parse_bytes("10s"), None);
        assert_eq!(patroni_parse_bytes("nonsense"), None);
        assert_eq!(patroni_parse_bytes(""), None);
    }

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("40000-59999"), Ok((40000, 59999)));
        assert!(parse_port_range("40000").is_err());
        assert!(parse_port_range("a-b").is_err());
        assert!(parse_port_range("1-70000").is_err());
    }
}
