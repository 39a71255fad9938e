//! psql from the lab's client namespace with the superuser password.
use super::Lab;
use super::topology::{CLIENT_NS, PG_BIN, SUPERUSER, SUPERUSER_PASSWORD, VIP};
use super::util::{ns_cmd, run, show};
use anyhow::{Context, Result};

impl Lab {
    /// Runs SQL via psql (from the client namespace) on `addr`:5432.
    pub fn psql(&self, addr: &str, sql: &str) -> Result<String> {
        self.psql_port(addr, 5432, sql)
    }

    /// Runs SQL via psql (from the client namespace) on `addr`:`port`, e.g.
    /// the VIP on 5000/5001. Returns trimmed stdout.
    pub fn psql_port(&self, addr: &str, port: u16, sql: &str) -> Result<String> {
        let port = port.to_string();
        let mut c = ns_cmd(
            CLIENT_NS,
            [
                &format!("{PG_BIN}/psql"),
                "-h",
                addr,
                "-p",
                &port,
                "-U",
                SUPERUSER,
                "-d",
                "postgres",
                "-XAtq",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
        );
        c.env("PGPASSWORD", SUPERUSER_PASSWORD)
            .env("PGCONNECT_TIMEOUT", "5");
        run(&mut c).map(|s| s.trim().to_string())
    }

    /// Runs psql in the client namespace with the lab's superuser password;
    /// `args` are passed through (default target: the VIP, port 5000).
    pub fn psql_cli(&self, args: &[String]) -> Result<i32> {
        let mut argv = vec![format!("{PG_BIN}/psql")];
        if !args
            .iter()
            .any(|a| a == "-h" || a.starts_with("--host") || a.starts_with("host="))
        {
            argv.extend(["-h".into(), VIP.into()]);
        }
        if !args.iter().any(|a| a == "-p" || a.starts_with("--port")) {
            argv.extend(["-p".into(), "5000".into()]);
        }
        if !args
            .iter()
            .any(|a| a == "-U" || a.starts_with("--username"))
        {
            argv.extend(["-U".into(), SUPERUSER.into()]);
        }
        if !args.iter().any(|a| a == "-d" || a.starts_with("--dbname")) {
            argv.extend(["-d".into(), "postgres".into()]);
        }
        argv.extend(args.iter().cloned());
        let mut c = ns_cmd(CLIENT_NS, &argv);
        c.env("PGPASSWORD", SUPERUSER_PASSWORD);
        if std::env::var_os("PGCONNECT_TIMEOUT").is_none() {
            c.env("PGCONNECT_TIMEOUT", "5");
        }
        let st = c
            .status()
            .with_context(|| format!("could not run `{}`", show(&c)))?;
        Ok(st.code().unwrap_or(128 + 9))
    }
}
