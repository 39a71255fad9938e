//! Failover timelines as SVG, drawn by hand (no dependency): one row of probe marks per
//! client (HAProxy rows above pgrouter rows), Patroni events as vertical lines, a time axis
//! in seconds. Input: `target/bench/failover-<scenario>.json` as written by the failover
//! scenarios:
//!
//! ```json
//! {"scenario": "switchover", "t0_unix_ms": 1764100000000,
//!  "events": [{"t_ms": 2000, "label": "switchover requested"}],
//!  "rows": [{"label": "HAProxy :5000", "probes": [{"t_ms": 100, "ok": true, "node": "pg1"}]}]}
//! ```
//!
//! The data model and its JSON are `timeline.rs`.
use std::fmt::Write as _;

use anyhow::Context as _;

use super::timeline::{Event, Row, Timeline};

/// Escapes text for element content and attribute values.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            // Control characters are not allowed in XML 1.0.
            c if (c as u32) < 0x20 && c != '\t' && c != '\n' => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

/// Axis step in ms giving at most ~12 ticks.
fn tick_step(span_ms: u64) -> u64 {
    const STEPS: [u64; 12] = [
        100, 200, 500, 1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000,
    ];
    STEPS
        .iter()
        .copied()
        .find(|s| span_ms / s <= 12)
        .unwrap_or(600_000)
}

/// HAProxy rows first, then the others (pgrouter), each group in input order.
fn ordered_rows(t: &Timeline) -> Vec<&Row> {
    let is_haproxy = |r: &&Row| r.label.to_ascii_lowercase().contains("haproxy");
    let mut v: Vec<&Row> = t.rows.iter().filter(is_haproxy).collect();
    v.extend(t.rows.iter().filter(|r| !is_haproxy(r)));
    v
}

/// Shades of green for the serving nodes (distinct, all clearly "ok"); red for failures.
const OK_SHADES: [&str; 6] = [
    "#2e7d32", "#9ccc65", "#00897b", "#66bb6a", "#1b5e20", "#4db6ac",
];
const OK_UNKNOWN: &str = "#7cb342";
const FAIL: &str = "#d32f2f";

const WIDTH: f64 = 960.0;
const LEFT: f64 = 190.0;
const RIGHT: f64 = 24.0;
const ROW_H: f64 = 30.0;
const MARK_H: f64 = 18.0;
const LANE_H: f64 = 14.0;
const CHAR_W: f64 = 6.2;

/// Draws `t` as a standalone SVG document. Pure: same input, same bytes.
pub fn render(t: &Timeline) -> String {
    let rows = ordered_rows(t);
    let max_t = t
        .rows
        .iter()
        .flat_map(|r| r.probes.iter().map(|p| p.t_ms))
        .chain(t.events.iter().map(|e| e.t_ms))
        .max()
        .unwrap_or(0);
    let step = tick_step(max_t.max(1_000));
    let span = (max_t.div_ceil(step).max(1)) * step;
    let plot_w = WIDTH - LEFT - RIGHT;
    let x = |ms: u64| LEFT + plot_w * ms as f64 / span as f64;

    // Nodes in order of first appearance → shade.
    let mut nodes: Vec<&str> = Vec::new();
    for r in &rows {
        for p in &r.probes {
            if let Some(n) = p.node.as_deref()
                && p.ok
                && !nodes.contains(&n)
            {
                nodes.push(n);
            }
        }
    }
    nodes.sort_unstable();
    // The same node gets the same shade in every picture: `pgN` → shade N-1, other names by
    // their rank here.
    let shade = |n: Option<&str>| {
        n.and_then(|n| {
            n.strip_prefix("pg")
                .and_then(|d| d.parse::<usize>().ok())
                .map(|k| k.saturating_sub(1))
                .or_else(|| nodes.iter().position(|m| *m == n))
        })
        .map(|i| OK_SHADES[i % OK_SHADES.len()])
        .unwrap_or(OK_UNKNOWN)
    };

    // Event labels in lanes above the rows, so close events don't overlap.
    let mut events: Vec<&Event> = t.events.iter().collect();
    events.sort_by_key(|e| e.t_ms);
    // A label starts right of its line, or ends left of it when it would leave the picture.
    let mut lane_end: Vec<f64> = Vec::new();
    let mut placed: Vec<(&Event, usize, bool)> = Vec::new();
    for e in &events {
        let ex = x(e.t_ms);
        let w = CHAR_W * e.label.chars().count() as f64 + 8.0;
        let left = ex + w > WIDTH - 4.0;
        let (x0, x1) = if left { (ex - w, ex) } else { (ex, ex + w) };
        let lane = match lane_end.iter().position(|end| *end < x0) {
            Some(l) => l,
            None => {
                lane_end.push(0.0);
                lane_end.len() - 1
            }
        };
        lane_end[lane] = x1;
        placed.push((e, lane, left));
    }
    let title_h = 34.0;
    let lanes_h = LANE_H * lane_end.len() as f64 + if lane_end.is_empty() { 0.0 } else { 6.0 };
    let rows_top = title_h + lanes_h + 4.0;
    let rows_bottom = rows_top + ROW_H * rows.len().max(1) as f64;
    let axis_y = rows_bottom + 4.0;
    let legend_y = axis_y + 54.0;
    let height = legend_y + 16.0;

    // Probe mark width: about the median probe interval, clamped.
    let mut gaps: Vec<u64> = rows
        .iter()
        .flat_map(|r| {
            r.probes
                .windows(2)
                .map(|w| w[1].t_ms.saturating_sub(w[0].t_ms))
        })
        .filter(|g| *g > 0)
        .collect();
    gaps.sort_unstable();
    let gap = gaps.get(gaps.len() / 2).copied().unwrap_or(100);
    let mark_w = (plot_w * gap as f64 / span as f64 * 0.8).clamp(1.0, 8.0);

    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="11">
<rect x="0" y="0" width="{WIDTH}" height="{height:.0}" fill="#ffffff"/>
<text class="title" x="{LEFT}" y="20" font-size="15" font-weight="bold">Failover timeline: {}</text>"##,
        esc(&t.scenario)
    );

    // Row backgrounds and labels.
    for (i, r) in rows.iter().enumerate() {
        let y = rows_top + ROW_H * i as f64;
        let bg = if i % 2 == 0 { "#f5f5f5" } else { "#ffffff" };
        let _ = writeln!(
            s,
            r#"<rect x="{LEFT}" y="{y:.1}" width="{plot_w:.1}" height="{ROW_H}" fill="{bg}"/>
<text class="row-label" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 8.0,
            y + ROW_H / 2.0 + 4.0,
            esc(&r.label)
        );
    }

    // Time axis with ticks and a light grid.
    let _ = writeln!(
        s,
        r##"<line class="axis" x1="{LEFT}" y1="{axis_y:.1}" x2="{:.1}" y2="{axis_y:.1}" stroke="#333333"/>"##,
        LEFT + plot_w
    );
    let mut tick = 0;
    while tick <= span {
        let tx = x(tick);
        let secs = tick as f64 / 1000.0;
        let label = if step.is_multiple_of(1000) {
            format!("{secs:.0}")
        } else {
            format!("{secs:.1}")
        };
        let _ = writeln!(
            s,
            r##"<line x1="{tx:.1}" y1="{rows_top:.1}" x2="{tx:.1}" y2="{rows_bottom:.1}" stroke="#dddddd" stroke-width="0.5"/>
<line x1="{tx:.1}" y1="{axis_y:.1}" x2="{tx:.1}" y2="{:.1}" stroke="#333333"/>
<text x="{tx:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            axis_y + 4.0,
            axis_y + 16.0
        );
        tick += step;
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">time since start (s)</text>"#,
        LEFT + plot_w / 2.0,
        axis_y + 30.0
    );

    // Probes.
    for (i, r) in rows.iter().enumerate() {
        let y = rows_top + ROW_H * i as f64 + (ROW_H - MARK_H) / 2.0;
        for p in &r.probes {
            let (cls, fill) = if p.ok {
                ("probe ok", shade(p.node.as_deref()))
            } else {
                ("probe failed", FAIL)
            };
            let node = p.node.as_deref().unwrap_or("-");
            let _ = writeln!(
                s,
                r#"<rect class="{cls}" x="{:.2}" y="{y:.1}" width="{mark_w:.2}" height="{MARK_H}" fill="{fill}"><title>{:.3} s {} {}</title></rect>"#,
                x(p.t_ms) - mark_w / 2.0,
                p.t_ms as f64 / 1000.0,
                if p.ok { "ok" } else { "failed" },
                esc(node)
            );
        }
    }

    // Events: a dashed line across the rows, its label in its lane above.
    for (e, lane, left) in &placed {
        let ex = x(e.t_ms);
        let ly = title_h + LANE_H * (*lane as f64 + 1.0);
        let _ = writeln!(
            s,
            r##"<line class="event" x1="{ex:.1}" y1="{:.1}" x2="{ex:.1}" y2="{rows_bottom:.1}" stroke="#1565c0" stroke-width="1.2" stroke-dasharray="4 3"/>
<text class="event-label" x="{:.1}" y="{ly:.1}" fill="#1565c0"{}>{}</text>"##,
            ly - 9.0,
            if *left { ex - 3.0 } else { ex + 3.0 },
            if *left { r#" text-anchor="end""# } else { "" },
            esc(&e.label)
        );
    }

    // Legend.
    let mut lx = LEFT;
    let mut item = |s: &mut String, fill: &str, text: &str| {
        let _ = writeln!(
            s,
            r#"<rect x="{lx:.1}" y="{:.1}" width="10" height="10" fill="{fill}"/>
<text x="{:.1}" y="{legend_y:.1}">{}</text>"#,
            legend_y - 9.0,
            lx + 14.0,
            esc(text)
        );
        lx += 14.0 + CHAR_W * text.chars().count() as f64 + 16.0;
    };
    for n in &nodes {
        item(&mut s, shade(Some(n)), &format!("ok, served by {n}"));
    }
    if rows
        .iter()
        .any(|r| r.probes.iter().any(|p| p.ok && p.node.is_none()))
    {
        item(&mut s, OK_UNKNOWN, "ok");
    }
    item(&mut s, FAIL, "failed");
    let _ = writeln!(
        s,
        r##"<line x1="{lx:.1}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="#1565c0" stroke-dasharray="4 3"/>
<text x="{2:.1}" y="{legend_y:.1}">Patroni event</text>"##,
        legend_y - 4.0,
        lx + 16.0,
        lx + 20.0
    );
    s.push_str("</svg>\n");
    s
}

/// One drawn timeline: (SVG path relative to the workspace root, `t0_unix_ms`), or why not.
pub type Drawn = Result<(String, u64), String>;

/// Draws every `<dir>/failover-*.json` into `<img_dir>/failover-<scenario>.svg`. Returns
/// (scenario, svg path relative to the workspace root and the scenario's start time) in
/// file-name order; files that don't parse are reported as errors instead.
pub fn draw_all(
    dir: &std::path::Path,
    img_dir: &std::path::Path,
) -> anyhow::Result<Vec<(String, Drawn)>> {
    let mut files: Vec<_> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("failover-") && n.ends_with(".json"))
            })
            .collect(),
        Err(_) => return Ok(Vec::new()),
    };
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let stem = f
            .file_stem()
            .and_then(|n| n.to_str())
            .unwrap_or("failover-?")
            .trim_start_matches("failover-")
            .to_string();
        let res = std::fs::read_to_string(&f)
            .map_err(anyhow::Error::from)
            .and_then(|j| Timeline::parse(&j))
            .and_then(|t| {
                // The file name decides the picture's name (safe characters only).
                let name: String = stem
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect();
                std::fs::create_dir_all(img_dir)?;
                let path = img_dir.join(format!("failover-{name}.svg"));
                std::fs::write(&path, render(&t))
                    .with_context(|| format!("writing {}", path.display()))?;
                Ok((format!("docs/img/failover-{name}.svg"), t.t0_unix_ms))
            })
            .map_err(|e| format!("{}: {e:#}", f.display()));
        out.push((stem, res));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::timeline::Probe;

    /// Minimal XML 1.0 well-formedness check (no DTD): one root element, balanced and
    /// properly nested tags, quoted unique attributes, known entities, no stray `<`/`&`.
    /// Returns the element names in document order.
    fn check_xml(doc: &str) -> Result<Vec<String>, String> {
        let mut s = doc;
        if let Some(rest) = s.strip_prefix("<?xml") {
            s = &rest[rest.find("?>").ok_or("unterminated XML declaration")? + 2..];
        }
        let mut stack: Vec<String> = Vec::new();
        let mut names = Vec::new();
        let mut roots = 0;
        let check_text = |t: &str| -> Result<(), String> {
            let mut rest = t;
            while let Some(i) = rest.find('&') {
                let end = rest[i..].find(';').ok_or("bare &")?;
                let ent = &rest[i + 1..i + end];
                let ok = matches!(ent, "amp" | "lt" | "gt" | "quot" | "apos")
                    || (ent.starts_with('#') && ent.len() > 1);
                if !ok {
                    return Err(format!("unknown entity &{ent};"));
                }
                rest = &rest[i + end + 1..];
            }
            Ok(())
        };
        while !s.is_empty() {
            let Some(lt) = s.find('<') else {
                if !s.trim().is_empty() && stack.is_empty() {
                    return Err("text after the root element".into());
                }
                check_text(s)?;
                break;
            };
            let text = &s[..lt];
            if stack.is_empty() && !text.trim().is_empty() {
                return Err(format!("text outside the root: {text:?}"));
            }
            check_text(text)?;
            s = &s[lt..];
            if let Some(rest) = s.strip_prefix("<!--") {
                s = &rest[rest.find("-->").ok_or("unterminated comment")? + 3..];
                continue;
            }
            let gt = s.find('>').ok_or("unterminated tag")?;
            let tag = &s[1..gt];
            s = &s[gt + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                let open = stack.pop().ok_or("close without open")?;
                if open != name.trim() {
                    return Err(format!("</{name}> closes <{open}>"));
                }
                continue;
            }
            let self_closing = tag.ends_with('/');
            let body = tag.trim_end_matches('/');
            let name_end = body.find(|c: char| c.is_whitespace()).unwrap_or(body.len());
            let name = &body[..name_end];
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_:.".contains(c))
            {
                return Err(format!("bad element name {name:?}"));
            }
            // Attributes: name="value" pairs.
            let mut attrs = body[name_end..].trim();
            let mut seen = Vec::new();
            while !attrs.is_empty() {
                let eq = attrs
                    .find('=')
                    .ok_or(format!("attribute without =: {attrs:?}"))?;
                let an = attrs[..eq].trim();
                if an.is_empty() || an.contains(char::is_whitespace) || seen.contains(&an) {
                    return Err(format!("bad or repeated attribute {an:?}"));
                }
                seen.push(an);
                let rest = attrs[eq + 1..].trim_start();
                let q = rest.chars().next().ok_or("attribute without value")?;
                if q != '"' && q != '\'' {
                    return Err(format!("unquoted attribute {an}"));
                }
                let close = rest[1..].find(q).ok_or("unterminated attribute value")?;
                let val = &rest[1..1 + close];
                if val.contains('<') {
                    return Err("< in attribute value".into());
                }
                check_text(val)?;
                attrs = rest[close + 2..].trim_start();
            }
            if stack.is_empty() {
                roots += 1;
            }
            names.push(name.to_string());
            if !self_closing {
                stack.push(name.to_string());
            }
        }
        if !stack.is_empty() {
            return Err(format!("unclosed elements {stack:?}"));
        }
        if roots != 1 {
            return Err(format!("{roots} root elements"));
        }
        Ok(names)
    }

    fn synthetic() -> Timeline {
        let mut rows = Vec::new();
        for (label, down_from, down_to) in [
            ("pgrouter :5000", 2_200u64, 2_600u64),
            ("HAProxy :5000 <seed> & co", 2_100, 9_400),
            ("pgrouter :5001", 0, 0),
        ] {
            let probes = (0..120)
                .map(|i| {
                    let t_ms = i * 100;
                    let ok = !(down_from..down_to).contains(&t_ms);
                    Probe {
                        t_ms,
                        ok,
                        node: ok.then(|| if t_ms < 2_200 { "pg1" } else { "pg2" }.to_string()),
                    }
                })
                .collect();
            rows.push(Row {
                label: label.to_string(),
                probes,
            });
        }
        Timeline {
            scenario: "switchover".into(),
            t0_unix_ms: 1_764_100_000_000,
            events: vec![
                Event {
                    t_ms: 2_000,
                    label: "switchover requested".into(),
                },
                Event {
                    t_ms: 2_300,
                    label: "pg2 is leader".into(),
                },
                Event {
                    t_ms: 8_000,
                    label: "pg1 streaming".into(),
                },
            ],
            rows,
        }
    }

    #[test]
    fn json_round_trip() {
        let json = r#"{"scenario": "kill-primary", "t0_unix_ms": 5,
            "events": [{"t_ms": 10, "label": "kill"}],
            "rows": [{"label": "pgrouter", "probes": [
                {"t_ms": 1, "ok": true, "node": "pg1"}, {"t_ms": 2, "ok": false, "node": null}]}]}"#;
        let t = Timeline::parse(json).unwrap();
        assert_eq!(t.scenario, "kill-primary");
        assert_eq!(t.rows[0].probes[1].node, None);
        assert_eq!(t.rows[0].probes[0].node.as_deref(), Some("pg1"));
        let bad = json.replace(r#""ok": false"#, r#""ok": 0"#);
        let e = Timeline::parse(&bad).unwrap_err().to_string();
        assert!(e.contains("rows[0].probes[1]"), "{e}");
    }

    #[test]
    fn synthetic_timeline_is_well_formed_svg() {
        let t = synthetic();
        let svg = render(&t);
        let names = check_xml(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
        assert_eq!(names[0], "svg");
        // One mark per probe, failures red.
        let probes: usize = t.rows.iter().map(|r| r.probes.len()).sum();
        assert_eq!(svg.matches(r#"class="probe "#).count(), probes);
        let failed: usize = t
            .rows
            .iter()
            .map(|r| r.probes.iter().filter(|p| !p.ok).count())
            .sum();
        assert_eq!(svg.matches(r#"class="probe failed""#).count(), failed);
        assert_eq!(
            failed,
            svg.matches(&format!(r#"fill="{FAIL}"><title>"#)).count()
        );
        // Event lines and labels.
        assert_eq!(svg.matches(r#"class="event""#).count(), 3);
        for e in &t.events {
            assert!(svg.contains(&format!(">{}</text>", e.label)));
        }
        // Title, escaping, axis in seconds up to the last probe (11.9 s → 12 s).
        assert!(svg.contains("Failover timeline: switchover"));
        assert!(svg.contains("HAProxy :5000 &lt;seed&gt; &amp; co"));
        assert!(svg.contains(">12</text>") && svg.contains("time since start (s)"));
        // HAProxy row above the pgrouter rows.
        let h = svg.find("HAProxy :5000").unwrap();
        assert!(h < svg.find("pgrouter :5000").unwrap());
        assert!(h < svg.find("pgrouter :5001").unwrap());
        // Shade per serving node.
        assert!(svg.contains("ok, served by pg1") && svg.contains("ok, served by pg2"));
        // Pure.
        assert_eq!(svg, render(&t));
    }

    #[test]
    fn close_events_get_separate_lanes() {
        let mut t = synthetic();
        t.events.truncate(2); // 2.0 s and 2.3 s: labels would overlap
        let svg = render(&t);
        let ys: Vec<&str> = svg
            .lines()
            .filter(|l| l.contains(r#"class="event-label""#))
            .map(|l| l.split("y=\"").nth(1).unwrap().split('"').next().unwrap())
            .collect();
        assert_eq!(ys.len(), 2);
        assert_ne!(ys[0], ys[1]);
    }

    #[test]
    fn xml_checker_rejects_broken_documents() {
        assert!(check_xml("<a><b></a></b>").is_err());
        assert!(check_xml("<a x=1/>").is_err());
        assert!(check_xml("<a>&nbsp;</a>").is_err());
        assert!(check_xml("<a/><b/>").is_err());
        assert!(check_xml("<a>x & y</a>").is_err());
        assert!(check_xml(r#"<a x="1"><b/>t&amp;</a>"#).is_ok());
    }

    #[test]
    fn node_shades_are_stable_across_pictures() {
        let mut t = synthetic();
        let a = render(&t);
        // Without pg1 anywhere, pg2 keeps its shade.
        for r in &mut t.rows {
            r.probes.retain(|p| p.node.as_deref() != Some("pg1"));
        }
        let b = render(&t);
        let pg2 = |svg: &str| {
            svg.lines()
                .find(|l| l.contains("ok pg2</title>"))
                .and_then(|l| l.split("fill=\"").nth(1))
                .map(|f| f[..7].to_string())
        };
        assert_eq!(pg2(&a), pg2(&b));
        assert!(pg2(&a).is_some());
    }

    #[test]
    fn empty_timeline_still_renders() {
        let t = Timeline {
            scenario: "empty".into(),
            t0_unix_ms: 0,
            events: vec![],
            rows: vec![],
        };
        check_xml(&render(&t)).unwrap();
    }
}
