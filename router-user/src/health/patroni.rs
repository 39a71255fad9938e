//! Judging Patroni REST API answers (pure: status + body in, verdict input out).
//!
//! Patroni's status code alone is not enough for writes: `/primary` answers 200 while the node
//! holds the leader lock even when PostgreSQL is down or still finishing promotion
//! (patroni#2756). A node passes the primary check only with 200 *and* a JSON body saying
//! `role` = "primary" (or "master" before Patroni 4) *and* `state` = "running". Replica and
//! read-only checks require 200 and a well-formed body with `state` = "running" too, so a proxy
//! or a half-written answer never counts as healthy.
use serde::Serialize;
use serde_json::Value;

use super::verdict::CheckKind;

/// What one node's Patroni said about itself (`GET /primary` etc. all return the same status
/// document).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PatroniInfo {
    pub role: Option<String>,
    pub state: Option<String>,
    pub timeline: Option<u64>,
    /// `xlog.location` (primary's current WAL position).
    pub wal_location: Option<u64>,
    /// `xlog.replayed_location` (replica).
    pub replayed_location: Option<u64>,
    pub replication_state: Option<String>,
}

impl PatroniInfo {
    pub fn is_primary_role(&self) -> bool {
        matches!(self.role.as_deref(), Some("primary" | "master"))
    }

    pub fn is_running(&self) -> bool {
        self.state.as_deref() == Some("running")
    }
}

/// Parses Patroni's status JSON. Unknown fields are ignored; wrong types count as absent.
pub fn parse_body(body: &[u8]) -> Result<PatroniInfo, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))?;
    let obj = v.as_object().ok_or("JSON body is not an object")?;
    let s = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_owned);
    let xlog = obj.get("xlog");
    let x = |k: &str| xlog.and_then(|x| x.get(k)).and_then(Value::as_u64);
    Ok(PatroniInfo {
        role: s("role"),
        state: s("state"),
        timeline: obj.get("timeline").and_then(Value::as_u64),
        wal_location: x("location"),
        replayed_location: x("replayed_location"),
        replication_state: s("replication_state"),
    })
}

/// The judgement of one answer for one check kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Judgement {
    pub ok: bool,
    /// Patroni answered coherently that this node is not a primary (e.g. a demoted old
    /// primary): the primary check goes down at once instead of after `fall` failures.
    pub not_primary: bool,
    /// Why it failed (or a short description when ok).
    pub reason: String,
    pub info: Option<PatroniInfo>,
}

/// Judges an HTTP answer (`status`, `body`) to the check `kind`.
pub fn judge(kind: &CheckKind, status: u16, body: &[u8]) -> Judgement {
    let parsed = parse_body(body);
    let info = parsed.as_ref().ok().cloned();
    let describe = |i: &PatroniInfo| {
        format!(
            "role={} state={}",
            i.role.as_deref().unwrap_or("?"),
            i.state.as_deref().unwrap_or("?")
        )
    };
    let fail = |reason: String, not_primary: bool| Judgement {
        ok: false,
        not_primary,
        reason,
        info: info.clone(),
    };
    let i = match (&parsed, status) {
        (Ok(i), _) => i,
        (Err(e), 200) => return fail(format!("HTTP 200 but {e}"), false),
        (Err(_), s) => return fail(format!("HTTP {s}"), false),
    };
    // A coherent answer that names a non-primary role settles the primary question.
    let not_primary = *kind == CheckKind::Primary && i.role.is_some() && !i.is_primary_role();
    if status != 200 {
        let hint = if status == 401 || status == 403 {
            " (check api.username/password)"
        } else {
            ""
        };
        return fail(format!("HTTP {status}{hint}, {}", describe(i)), not_primary);
    }
    let ok = match kind {
        CheckKind::Primary => i.is_primary_role() && i.is_running(),
        CheckKind::Replica { .. } => i.role.as_deref() == Some("replica") && i.is_running(),
        CheckKind::ReadOnly { .. } => i.is_running(),
    };
    if ok {
        Judgement {
            ok,
            not_primary: false,
            reason: format!("HTTP 200, {}", describe(i)),
            info,
        }
    } else {
        fail(
            format!("HTTP 200 but {} (not serving yet)", describe(i)),
            not_primary,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRIMARY: &str =
        r#"{"state":"running","role":"primary","timeline":3,"xlog":{"location":1000}}"#;
    const MASTER: &str = r#"{"state":"running","role":"master","timeline":3}"#;
    const REPLICA: &str = r#"{"state":"running","role":"replica","timeline":3,
        "xlog":{"received_location":900,"replayed_location":800},"replication_state":"streaming"}"#;

    #[test]
    fn primary_needs_200_role_and_running() {
        let j = judge(&CheckKind::Primary, 200, PRIMARY.as_bytes());
        assert!(j.ok, "{j:?}");
        let info = j.info.unwrap_or_default();
        assert_eq!(info.timeline, Some(3));
        assert_eq!(info.wal_location, Some(1000));
    }

    #[test]
    fn pre_patroni_4_master_role_counts_as_primary() {
        assert!(judge(&CheckKind::Primary, 200, MASTER.as_bytes()).ok);
    }

    /// patroni#2756: the leader lock holder answers 200 while PostgreSQL is not running.
    #[test]
    fn primary_200_with_state_not_running_fails() {
        for state in [
            "starting",
            "stopped",
            "crashed",
            "running custom bootstrap script",
        ] {
            let body = format!(r#"{{"state":"{state}","role":"primary","timeline":3}}"#);
            let j = judge(&CheckKind::Primary, 200, body.as_bytes());
            assert!(!j.ok, "{state}");
            assert!(
                !j.not_primary,
                "a primary that is starting is not a demoted one"
            );
        }
    }

    #[test]
    fn primary_200_without_body_fails() {
        let j = judge(&CheckKind::Primary, 200, b"");
        assert!(!j.ok);
        assert!(j.reason.contains("invalid JSON"), "{}", j.reason);
        assert!(!judge(&CheckKind::Primary, 200, b"<html>ok</html>").ok);
        assert!(
            !judge(
                &CheckKind::Primary,
                200,
                br#"{"state":"running","role":"pri"#
            )
            .ok
        );
        assert!(!judge(&CheckKind::Primary, 200, b"[1,2]").ok);
    }

    #[test]
    fn demoted_primary_is_definitively_not_primary() {
        let j = judge(&CheckKind::Primary, 503, REPLICA.as_bytes());
        assert!(!j.ok);
        assert!(j.not_primary);
        // 503 without a readable body says nothing about the role.
        assert!(!judge(&CheckKind::Primary, 503, b"").not_primary);
        // A primary that lost the lock still says role=primary: not definitive, `fall` applies.
        assert!(!judge(&CheckKind::Primary, 503, PRIMARY.as_bytes()).not_primary);
    }

    #[test]
    fn replica_check() {
        let k = CheckKind::Replica { lag: None };
        assert!(judge(&k, 200, REPLICA.as_bytes()).ok);
        assert!(
            !judge(&k, 503, REPLICA.as_bytes()).ok,
            "503 = lagging or noloadbalance"
        );
        assert!(!judge(&k, 200, PRIMARY.as_bytes()).ok);
        assert!(!judge(&k, 200, b"garbage").ok);
        let starting = r#"{"state":"starting","role":"replica"}"#;
        assert!(!judge(&k, 200, starting.as_bytes()).ok);
    }

    #[test]
    fn read_only_check_accepts_primary_and_replica() {
        let k = CheckKind::ReadOnly { lag: None };
        assert!(judge(&k, 200, REPLICA.as_bytes()).ok);
        assert!(judge(&k, 200, PRIMARY.as_bytes()).ok);
        assert!(!judge(&k, 503, PRIMARY.as_bytes()).ok);
    }

    #[test]
    fn auth_failure_is_explained() {
        let j = judge(&CheckKind::Primary, 401, PRIMARY.as_bytes());
        assert!(j.reason.contains("username"), "{}", j.reason);
    }
}
