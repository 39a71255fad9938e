//! Value pools shared by the generators: each key's grammar (valid values first) plus the
//! near-misses an operator writes; one in eight values is free text from the fuzzer instead.
use arbitrary::{Result, Unstructured};

/// TOML literals of durations.
pub const DURATIONS: &[&str] = &[
    r#""1s""#,
    r#""200ms""#,
    r#""0s""#,
    r#""5m""#,
    r#""2h4m""#,
    r#""1m30s""#,
    r#""10s""#,
    r#""3s""#,
    r#""250us""#,
    r#""1d""#,
    r#""1""#,
    r#""""#,
    r#""1.5s""#,
    r#""99999999999999999999d""#,
    r#""18446744073709551615d""#,
    "1",
    r#""7s""#,
    r#""61s""#,
];
/// TOML integers around every limit the validator has.
pub const INTS: &[&str] = &[
    "0",
    "1",
    "2",
    "3",
    "100",
    "1000",
    "1001",
    "4096",
    "16384",
    "524288",
    "4294967295",
    "4294967296",
    "-1",
    r#""3""#,
];
pub const PORTS: &[&str] = &[
    "5432", "5000", "5001", "8008", "0", "1", "65535", "65536", "-1",
];
pub const PORT_RANGES: &[&str] = &[
    r#""40000-59999""#,
    r#""1-1""#,
    r#""0-65535""#,
    r#""59999-40000""#,
    r#""1024-1024""#,
    r#""40000""#,
    r#""a-b""#,
    r#"" 40000 - 40010 ""#,
];
pub const IPS: &[&str] = &[
    r#""198.18.0.1""#,
    r#""198.18.0.2""#,
    r#""198.18.0.3""#,
    r#""198.18.0.100""#,
    r#""fd00:198:18::1""#,
    r#""0.0.0.0""#,
    r#""::""#,
    r#""255.255.255.255""#,
    r#""127.0.0.1""#,
    r#""224.0.0.18""#,
    r#""not-an-ip""#,
    r#""198.18.0.1:5432""#,
];
pub const NAMES: &[&str] = &[
    r#""a""#,
    r#""b""#,
    r#""c""#,
    r#""pg""#,
    r#""main""#,
    r#""""#,
    r#""x y""#,
    r#""a/b""#,
    r#""é""#,
    r#""pg1""#,
];
/// Patroni lag sizes, as TOML strings or integers.
pub const SIZES: &[&str] = &[
    r#""10MB""#,
    r#""1kB""#,
    r#""0""#,
    r#""0x10""#,
    r#""1e6""#,
    r#""-1""#,
    r#""1.5GB""#,
    "1048576",
    r#""TB""#,
    r#""8EB""#,
    r#""8589934592GB""#,
    r#""010""#,
    "-5",
    r#""1 MB""#,
];

pub fn pick<'a>(u: &mut Unstructured<'_>, from: &[&'a str]) -> Result<&'a str> {
    Ok(*u.choose(from)?)
}

/// A value from `pool`, or (one in eight) a fuzzed TOML string.
pub fn value(u: &mut Unstructured<'_>, pool: &[&str]) -> Result<String> {
    if u.ratio(1, 8)? {
        let s: String = u.arbitrary()?;
        return Ok(format!("{s:?}"));
    }
    Ok(pick(u, pool)?.to_owned())
}

/// A word from `pool`, or (one in eight) a fuzzed word without whitespace.
pub fn word(u: &mut Unstructured<'_>, pool: &[&str]) -> Result<String> {
    if u.ratio(1, 8)? {
        let s: String = u.arbitrary()?;
        return Ok(s.chars().filter(|c| !c.is_whitespace()).collect());
    }
    Ok(pick(u, pool)?.to_owned())
}
