//! Structure-aware haproxy.cfg and keepalived.conf: the sections, keywords and arguments the
//! importer reads (import/haproxy.rs, translate.rs, keepalived.rs, vrrp_plan.rs) in arbitrary
//! order and number, with the spellings found in the fixtures and in deployment guides.
use arbitrary::{Result, Unstructured};

use crate::pools::{pick, word};

const SECTIONS: &[&str] = &[
    "global",
    "defaults",
    "frontend",
    "backend",
    "listen",
    "peers",
    "userlist",
    "resolvers",
];
const PROXY_NAMES: &[&str] = &[
    "master",
    "replicas",
    "pg_write",
    "pg_read",
    "pg_primary",
    "pg_replicas",
    "stats",
    "postgres",
    "from",
];
const BINDS: &[&str] = &[
    "198.18.0.100:5000",
    "198.18.0.100:5001",
    "*:5000",
    ":5432",
    "0.0.0.0:5000",
    "[::]:5000",
    "ipv4@198.18.0.100:5000",
    "ipv6@[fd00:198:18::1]:5000",
    "198.18.0.100:5000-5001",
    "198.18.0.100",
    "198.18.0.100:0",
    "198.18.0.100:70000",
    "[fd00:198:18::100]:5000",
];
const SERVER_ADDRS: &[&str] = &[
    "198.18.0.11:5432",
    "198.18.0.12:5432",
    "198.18.0.13:5432",
    "db1:5432",
    "198.18.0.11",
    "[fd00:198:18::11]:5432",
    "198.18.0.11:0",
    "198.18.0.11:+1",
    "unix@/tmp/s",
];
const SERVER_OPTS: &[&str] = &[
    "check",
    "port 8008",
    "port 0",
    "port 99999",
    "inter 3s",
    "fastinter 1s",
    "downinter 5s",
    "fall 3",
    "rise 2",
    "rise 0",
    "maxconn 100",
    "maxconn -1",
    "backup",
    "check-ssl",
    "verify none",
    "ca-file /etc/ssl/ca.pem",
    "crt /etc/ssl/c.pem",
    "on-marked-down shutdown-sessions",
    "on-marked-up shutdown-backup-sessions",
    "weight 10",
    "disabled",
    "addr 198.18.0.21",
    "resolvers dns",
    "send-proxy",
    "slowstart 10s",
    "inter",
    "sni str(db)",
];
const CHECK_URIS: &[&str] = &[
    "/primary",
    "/master",
    "/leader",
    "/replica",
    "/replica?lag=100MB",
    "/read-only",
    "/read-only?lag=16MB",
    "/async?lag=100MB",
    "/sync",
    "/health",
    "/replica?lag=abc",
    "/replica?lag=100MB&tag_datacenter=east",
    "/standby-leader",
    "/",
];
const TIMES: &[&str] = &[
    "5s",
    "1s",
    "500ms",
    "60m",
    "30m",
    "2000",
    "0",
    "1h",
    "3x",
    "",
    "99999999999999999999",
];
const ACL_NAMES: &[&str] = &["no_replicas", "is_rw", "x"];

/// The import fixtures (router-user/tests/fixtures/import): a generated file starts from one of
/// them half of the time, so generated sections meet real ones.
const HAPROXY_FIXTURES: &[&str] = &[
    include_str!("../../router-user/tests/fixtures/import/frontend_backend.haproxy.cfg"),
    include_str!("../../router-user/tests/fixtures/import/guide_write_read.haproxy.cfg"),
    include_str!("../../router-user/tests/fixtures/import/patroni.haproxy.cfg"),
    include_str!("../../router-user/tests/fixtures/import/patroni_confd.haproxy.cfg"),
    include_str!("../../router-user/tests/fixtures/import/patroni_lone_get.haproxy.cfg"),
    include_str!("../../router-user/tests/fixtures/import/seed_fallback.haproxy.cfg"),
    include_str!("../../router-user/tests/fixtures/import/seed_simple.haproxy.cfg"),
    include_str!("../../router-user/tests/fixtures/import/seed_stale_names.haproxy.cfg"),
    include_str!("../../router-user/tests/fixtures/import/vitabaks.haproxy.cfg"),
];
const KEEPALIVED_FIXTURES: &[&str] = &[
    include_str!("../../router-user/tests/fixtures/import/seed.keepalived.conf"),
    include_str!("../../router-user/tests/fixtures/import/vitabaks.keepalived.conf"),
];

/// One haproxy.cfg.
pub fn haproxy(u: &mut Unstructured<'_>) -> Result<String> {
    let mut out = String::new();
    if u.ratio(1, 2)? {
        out.push_str(pick(u, HAPROXY_FIXTURES)?);
        out.push('\n');
    }
    for _ in 0..u.int_in_range(0..=6)? {
        let kind = pick(u, SECTIONS)?;
        let name = if kind == "global" {
            String::new()
        } else {
            word(u, PROXY_NAMES)?
        };
        out.push_str(&format!("{kind} {name}"));
        if kind == "listen" && u.ratio(1, 4)? {
            out.push_str(&format!(" {}", pick(u, BINDS)?));
        }
        if kind == "defaults" && u.ratio(1, 4)? {
            out.push_str(&format!(" from {}", pick(u, PROXY_NAMES)?));
        }
        out.push('\n');
        for _ in 0..u.int_in_range(0..=10)? {
            out.push_str("    ");
            out.push_str(&directive(u)?);
            out.push('\n');
        }
    }
    Ok(out)
}

fn directive(u: &mut Unstructured<'_>) -> Result<String> {
    let d = match u.int_in_range(0..=24)? {
        0 => format!("bind {}", word(u, BINDS)?),
        1 => format!("mode {}", pick(u, &["tcp", "http", "health"])?),
        2 => format!(
            "balance {}",
            pick(
                u,
                &[
                    "roundrobin",
                    "leastconn",
                    "source",
                    "static-rr",
                    "first",
                    "uri"
                ]
            )?
        ),
        3 => format!("maxconn {}", pick(u, &["100", "10000", "0", "-1", "x"])?),
        4 => format!(
            "option httpchk {}{}",
            pick(u, &["", "GET ", "OPTIONS ", "HEAD ", "POST ", "PUT "])?,
            word(u, CHECK_URIS)?
        ),
        5 => format!(
            "http-check expect {}",
            pick(
                u,
                &["status 200", "status 503", "rstatus ^2", "string ok", ""]
            )?
        ),
        6 => format!(
            "http-check send meth {} uri {}",
            pick(u, &["GET", "OPTIONS", "HEAD"])?,
            word(u, CHECK_URIS)?
        ),
        7 => format!(
            "timeout {} {}",
            pick(
                u,
                &[
                    "connect",
                    "client",
                    "server",
                    "check",
                    "queue",
                    "tunnel",
                    "http-request",
                    "client-fin"
                ]
            )?,
            word(u, TIMES)?
        ),
        8..=10 => format!(
            "server {} {} {}",
            pick(u, &["pg1", "pg2", "pg3", "db1", "pgnode01"])?,
            word(u, SERVER_ADDRS)?,
            server_opts(u)?
        ),
        11 => format!("default-server {}", server_opts(u)?),
        12 => format!("default_backend {}", word(u, PROXY_NAMES)?),
        13 => format!(
            "use_backend {} if {}",
            pick(u, PROXY_NAMES)?,
            pick(
                u,
                &["no_replicas", "!is_rw", "{ nbsrv(pg_replicas) lt 1 }", ""]
            )?
        ),
        14 => format!(
            "acl {} nbsrv({}) lt {}",
            pick(u, ACL_NAMES)?,
            pick(u, PROXY_NAMES)?,
            pick(u, &["1", "2", "x"])?
        ),
        15 => format!(
            "option {}",
            pick(
                u,
                &[
                    "tcplog",
                    "tcp-check",
                    "redispatch",
                    "log-health-checks",
                    "pgsql-check user pg"
                ]
            )?
        ),
        16 => format!("retries {}", pick(u, &["2", "0", "x"])?),
        17 => format!("log {}", pick(u, &["global", "/dev/log local0"])?),
        18 => "stats enable".into(),
        19 => format!(
            "tcp-check {}",
            pick(u, &["connect", "expect string ok", "send PING"])?
        ),
        20 => format!(
            "{} \"quoted arg\" 'single' esc\\ aped # comment",
            pick(u, &["description", "bind", "server"])?
        ),
        21 => pick(u, &["", "# only a comment", "\t", "\\"])?.to_owned(),
        22 => format!(
            "server-template pg {} db:5432 check",
            pick(u, &["1-3", "3", "x"])?
        ),
        23 => format!("use-server {} if TRUE", pick(u, &["pg1", "x"])?),
        _ => {
            let s: String = u.arbitrary()?;
            s.replace('\n', " ")
        }
    };
    Ok(d)
}

fn server_opts(u: &mut Unstructured<'_>) -> Result<String> {
    let mut v = Vec::new();
    for _ in 0..u.int_in_range(0..=8)? {
        v.push(pick(u, SERVER_OPTS)?);
    }
    Ok(v.join(" "))
}

const KA_VIPS: &[&str] = &[
    "198.18.0.100",
    "198.18.0.100/24",
    "198.18.0.100/32 dev eth0",
    "fd00:198:18::100/64",
    "198.18.0.100/33",
    "198.18.0.101 label eth0:1",
    "x",
];

/// One keepalived.conf.
pub fn keepalived(u: &mut Unstructured<'_>) -> Result<String> {
    let mut out = String::new();
    if u.ratio(1, 2)? {
        out.push_str(pick(u, KEEPALIVED_FIXTURES)?);
        out.push('\n');
    }
    if u.ratio(1, 2)? {
        out.push_str("global_defs {\n    router_id edge1\n");
        if u.ratio(1, 3)? {
            out.push_str(&format!(
                "    vrrp_version {}\n",
                pick(u, &["2", "3", "4"])?
            ));
        }
        if u.ratio(1, 3)? {
            out.push_str("    enable_script_security\n    script_user root\n");
        }
        out.push_str("}\n");
    }
    for _ in 0..u.int_in_range(0..=2)? {
        out.push_str(&format!(
            "vrrp_script {} {{\n    script \"{}\"\n    interval {}\n    weight {}\n{}}}\n",
            pick(u, &["chk_haproxy", "chk_patroni", "chk"])?,
            pick(
                u,
                &[
                    "/usr/bin/killall -0 haproxy",
                    "pidof haproxy",
                    "curl -sf http://127.0.0.1:8008/primary"
                ]
            )?,
            pick(u, &["2", "1", "0", "x"])?,
            pick(u, &["2", "-20", "0", "300"])?,
            pick(u, &["", "    fall 2\n    rise 2\n", "    timeout 3\n"])?,
        ));
    }
    for _ in 0..u.int_in_range(0..=3)? {
        out.push_str(&format!(
            "vrrp_instance {} {{\n",
            pick(u, &["VI_1", "VI_2", "pg", "VI_1"])?
        ));
        for _ in 0..u.int_in_range(0..=12)? {
            out.push_str("    ");
            out.push_str(&instance_item(u)?);
            out.push('\n');
        }
        out.push_str("}\n");
    }
    if u.ratio(1, 8)? {
        let s: String = u.arbitrary()?;
        out.push_str(&s);
    }
    Ok(out)
}

fn instance_item(u: &mut Unstructured<'_>) -> Result<String> {
    let s = match u.int_in_range(0..=16)? {
        0 => format!("interface {}", pick(u, &["eth0", "ens192", ""])?),
        1 => format!("state {}", pick(u, &["MASTER", "BACKUP", "FAULT"])?),
        2 => format!(
            "virtual_router_id {}",
            pick(u, &["51", "1", "255", "0", "256", "x"])?
        ),
        3 => format!("priority {}", pick(u, &["100", "150", "255", "0", "256"])?),
        4 => format!(
            "advert_int {}",
            pick(u, &["1", "2", "0.5", "0.01", "41", "0", "x"])?
        ),
        5 => "nopreempt".into(),
        6 => format!("preempt_delay {}", pick(u, &["5", "0", "1001"])?),
        7 => {
            let vips: Vec<&str> = (0..u.int_in_range(0..=3)?)
                .map(|_| pick(u, KA_VIPS))
                .collect::<Result<_>>()?;
            format!(
                "virtual_ipaddress {{\n        {}\n    }}",
                vips.join("\n        ")
            )
        }
        8 => format!(
            "authentication {{\n        auth_type {}\n        auth_pass {}\n    }}",
            pick(u, &["PASS", "AH", ""])?,
            pick(u, &["secret", "1ce24b6e", "123456789", ""])?
        ),
        9 => format!(
            "track_script {{\n        {}\n    }}",
            pick(u, &["chk_haproxy", "chk_patroni", "missing"])?
        ),
        10 => format!(
            "unicast_src_ip {}",
            pick(u, &["198.18.0.1", "fd00:198:18::1", "x"])?
        ),
        11 => format!(
            "unicast_peer {{\n        {}\n    }}",
            pick(
                u,
                &[
                    "198.18.0.2",
                    "198.18.0.2\n        198.18.0.3",
                    "fd00:198:18::2",
                    ""
                ]
            )?
        ),
        12 => format!("garp_master_delay {}", pick(u, &["5", "0", "x"])?),
        13 => format!("notify_master \"{}\"", pick(u, &["/bin/true", ""])?),
        14 => format!(
            "track_interface {{\n        {}\n    }}",
            pick(u, &["eth0", ""])?
        ),
        15 => format!("version {}", pick(u, &["2", "3"])?),
        _ => {
            let s: String = u.arbitrary()?;
            s.replace('\n', " ")
        }
    };
    Ok(s)
}
