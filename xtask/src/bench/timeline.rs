//! A failover timeline, the input of the SVG pictures (`svg.rs`):
//! `target/bench/failover-<scenario>.json` as written by the failover scenarios:
//!
//! ```json
//! {"scenario": "switchover", "t0_unix_ms": 1764100000000,
//!  "events": [{"t_ms": 2000, "label": "switchover requested"}],
//!  "rows": [{"label": "HAProxy :5000", "probes": [{"t_ms": 100, "ok": true, "node": "pg1"}]}]}
//! ```
use anyhow::{Context as _, bail};
use serde_json::Value;

#[derive(Clone, Debug, PartialEq)]
pub struct Probe {
    pub t_ms: u64,
    pub ok: bool,
    pub node: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub label: String,
    pub probes: Vec<Probe>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub t_ms: u64,
    pub label: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Timeline {
    pub scenario: String,
    pub t0_unix_ms: u64,
    pub events: Vec<Event>,
    pub rows: Vec<Row>,
}

fn str_field(v: &Value, k: &str, what: &str) -> anyhow::Result<String> {
    v[k].as_str()
        .map(str::to_owned)
        .with_context(|| format!("{what}: `{k}` must be a string"))
}

fn u64_field(v: &Value, k: &str, what: &str) -> anyhow::Result<u64> {
    v[k].as_u64()
        .with_context(|| format!("{what}: `{k}` must be an unsigned integer"))
}

fn array<'a>(v: &'a Value, k: &str, what: &str) -> anyhow::Result<&'a Vec<Value>> {
    v[k].as_array()
        .with_context(|| format!("{what}: `{k}` must be an array"))
}

impl Timeline {
    /// Parses the JSON schema above; every error names the offending element.
    pub fn parse(json: &str) -> anyhow::Result<Self> {
        let v: Value = serde_json::from_str(json).context("not JSON")?;
        let mut events = Vec::new();
        for (i, e) in array(&v, "events", "timeline")?.iter().enumerate() {
            let what = format!("events[{i}]");
            events.push(Event {
                t_ms: u64_field(e, "t_ms", &what)?,
                label: str_field(e, "label", &what)?,
            });
        }
        let mut rows = Vec::new();
        for (i, r) in array(&v, "rows", "timeline")?.iter().enumerate() {
            let what = format!("rows[{i}]");
            let mut probes = Vec::new();
            for (j, p) in array(r, "probes", &what)?.iter().enumerate() {
                let what = format!("rows[{i}].probes[{j}]");
                let node = match &p["node"] {
                    Value::Null => None,
                    Value::String(s) => Some(s.clone()),
                    _ => bail!("{what}: `node` must be a string or null"),
                };
                probes.push(Probe {
                    t_ms: u64_field(p, "t_ms", &what)?,
                    ok: p["ok"]
                        .as_bool()
                        .with_context(|| format!("{what}: `ok` must be a boolean"))?,
                    node,
                });
            }
            rows.push(Row {
                label: str_field(r, "label", &what)?,
                probes,
            });
        }
        Ok(Timeline {
            scenario: str_field(&v, "scenario", "timeline")?,
            t0_unix_ms: v["t0_unix_ms"].as_u64().unwrap_or(0),
            events,
            rows,
        })
    }
}

/// `t0_unix_ms` as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_unix_ms() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_764_112_334_567), "2025-11-25 23:12:14 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
    }
}
