//! Benchmarks that run as ignored tests of the `tests` crate (they need the embedded XDP object
//! and root): the XDP per-packet cost under `BPF_PROG_TEST_RUN`, the same measured with the
//! object of [`BEFORE_COMMIT`] (the last commit before issue 10's flow life cycle), and the
//! garbage collector with a million flows. Each prints one `BENCH k=v …` line.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use super::root;

/// The last commit before issue 10's work: the "before" of the per-SYN cost.
pub const BEFORE_COMMIT: &str = "265e06e";
/// Alternations of before/now micro-benchmark runs; the median of each is reported.
const MICRO_RUNS: usize = 3;

pub type Fields = Vec<(String, String)>;

/// The fields of the `BENCH` line in a test's output.
pub fn bench_fields(stdout: &str, stderr: &str) -> anyhow::Result<Fields> {
    let Some(line) = stdout.lines().find(|l| l.starts_with("BENCH ")) else {
        bail!("no BENCH line in the benchmark's output:\n{stdout}\n{stderr}");
    };
    Ok(line
        .trim_start_matches("BENCH ")
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

pub fn field(f: &Fields, k: &str) -> Option<f64> {
    f.iter()
        .find(|(n, _)| n == k)
        .and_then(|(_, v)| v.parse().ok())
}

/// `cargo test --release -p tests --test <file> -- --ignored --exact <name> --nocapture`.
pub fn cargo_bench_test(file: &str, name: &str, env: &[(&str, String)]) -> anyhow::Result<Fields> {
    let out = Command::new("cargo")
        .args(["test", "--release", "-p", "tests", "--test", file])
        .args(["--", "--ignored", "--exact", name, "--nocapture"])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .with_context(|| format!("running the {name} benchmark"))?;
    bench_fields(
        &String::from_utf8_lossy(&out.stdout),
        &String::from_utf8_lossy(&out.stderr),
    )
}

/// The current XDP per-packet micro-benchmark (`datapath_kernel`,
/// `bench_test_run_ns_per_packet`).
pub fn xdp_micro() -> anyhow::Result<Fields> {
    cargo_bench_test("datapath_kernel", "bench_test_run_ns_per_packet", &[])
}

/// `target/bench/datapath_kernel-<BEFORE_COMMIT>`: the kernel-test binary (XDP object embedded)
/// built from [`BEFORE_COMMIT`]'s sources once, with this workspace's target folder for the
/// dependencies, and copied out at once: cargo names the workspace crates' artifacts by their
/// path inside the workspace, so the old build's files take the current ones' names (the next
/// build of this workspace rebuilds them).
fn before_binary() -> anyhow::Result<PathBuf> {
    let root = root();
    let bin = root.join(format!("target/bench/datapath_kernel-{BEFORE_COMMIT}"));
    if bin.exists() {
        return Ok(bin);
    }
    let src = root.join(format!("target/bench/src-{BEFORE_COMMIT}"));
    let _ = fs::remove_dir_all(&src);
    fs::create_dir_all(&src)?;
    println!("bench: building the micro-benchmark at {BEFORE_COMMIT} (once)");
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "git -C '{}' archive {BEFORE_COMMIT} | tar -x -C '{}'",
            root.display(),
            src.display()
        ))
        .status()?;
    anyhow::ensure!(st.success(), "git archive {BEFORE_COMMIT}");
    let out = Command::new("cargo")
        .args([
            "test",
            "--release",
            "-p",
            "tests",
            "--test",
            "datapath_kernel",
            "--no-run",
            "--message-format=json",
        ])
        .env("CARGO_TARGET_DIR", root.join("target"))
        .current_dir(&src)
        .output()
        .with_context(|| format!("building the micro-benchmark at {BEFORE_COMMIT}"))?;
    let exe = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"]["name"] == "datapath_kernel")
        .find_map(|v| v["executable"].as_str().map(PathBuf::from));
    let Some(exe) = exe else {
        bail!(
            "no datapath_kernel test binary built at {BEFORE_COMMIT}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    fs::copy(&exe, &bin)
        .with_context(|| format!("copying {} to {}", exe.display(), bin.display()))?;
    let _ = fs::remove_dir_all(&src);
    Ok(bin)
}

fn run_binary(bin: &Path) -> anyhow::Result<Fields> {
    let out = Command::new(bin)
        .args([
            "--ignored",
            "--exact",
            "bench_test_run_ns_per_packet",
            "--nocapture",
        ])
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    bench_fields(
        &String::from_utf8_lossy(&out.stdout),
        &String::from_utf8_lossy(&out.stderr),
    )
}

/// The micro-benchmark now and at [`BEFORE_COMMIT`], alternating, [`MICRO_RUNS`] times each.
#[derive(Clone, Debug, Default)]
pub struct MicroReport {
    pub now: Vec<Fields>,
    pub before: Vec<Fields>,
    /// Why the "before" side is missing, if it is.
    pub before_error: Option<String>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

impl MicroReport {
    pub fn median(runs: &[Fields], k: &str) -> f64 {
        median(runs.iter().filter_map(|f| field(f, k)).collect())
    }

    pub fn run() -> anyhow::Result<Self> {
        let mut r = MicroReport::default();
        let before = before_binary();
        if let Err(e) = &before {
            r.before_error = Some(format!("{e:#}"));
        }
        for _ in 0..MICRO_RUNS {
            if let Ok(b) = &before {
                match run_binary(b) {
                    Ok(f) => r.before.push(f),
                    Err(e) => r.before_error = Some(format!("{e:#}")),
                }
            }
            r.now.push(xdp_micro()?);
        }
        Ok(r)
    }

    pub fn markdown(&self) -> String {
        let m = |runs: &[Fields], k: &str| Self::median(runs, k);
        let mut md = String::new();
        let _ = std::fmt::Write::write_fmt(
            &mut md,
            format_args!(
                "## XDP per-packet cost (BPF_PROG_TEST_RUN)\n\n\
                 The real program against `baseline_tx` (returns XDP_TX, nothing else) from the same object, same frames, \
                 same namespace (`tests/tests/datapath_kernel.rs`, `bench_test_run_ns_per_packet`). Median of {} runs, \
                 alternating with the same benchmark built from commit `{BEFORE_COMMIT}` (before issue 10's flow life \
                 cycle: one LRU conntrack table, slot taken at the SYN).\n\n\
                 | path | pgrouter ns/packet | baseline ns/packet | ratio | at {BEFORE_COMMIT}: ns/packet | ratio | now / {BEFORE_COMMIT} |\n\
                 |---|---|---|---|---|---|---|\n\
                 | established flow (repeat 20,000) | {:.1} | {:.1} | {:.2}× | {:.1} | {:.2}× | **{:.2}×** |\n\
                 | new flow, SYN (5,000 single runs) | {:.1} | {:.1} | {:.2}× | {:.1} | {:.2}× | **{:.2}×** |\n\n\
                 Single runs include the test_run call's fixed cost, which is why the SYN row is compared with single runs \
                 of the baseline; the last column compares the two builds' ratios to their own baselines, which cancels \
                 drift between the runs.\n",
                self.now.len(),
                m(&self.now, "established_ns"),
                m(&self.now, "baseline_xdp_tx_ns"),
                m(&self.now, "established_ratio"),
                m(&self.before, "established_ns"),
                m(&self.before, "established_ratio"),
                m(&self.now, "established_ratio") / m(&self.before, "established_ratio"),
                m(&self.now, "syn_ns"),
                m(&self.now, "baseline_single_run_ns"),
                m(&self.now, "syn_ratio"),
                m(&self.before, "syn_ns"),
                m(&self.before, "syn_ratio"),
                m(&self.now, "syn_ratio") / m(&self.before, "syn_ratio"),
            ),
        );
        if let Some(e) = &self.before_error {
            md.push_str(&format!(
                "\nThe {BEFORE_COMMIT} side is missing in this run: {e}\n"
            ));
        }
        md.push('\n');
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_line_fields_and_medians() {
        let f = bench_fields("x\nBENCH a=1.5 syn_ns=10 b=x\n", "").unwrap();
        assert_eq!(field(&f, "a"), Some(1.5));
        assert_eq!(field(&f, "b"), None);
        assert!(bench_fields("nothing", "").is_err());
        let runs: Vec<Fields> = [30.0, 10.0, 20.0]
            .iter()
            .map(|v| vec![("syn_ns".to_string(), v.to_string())])
            .collect();
        assert_eq!(MicroReport::median(&runs, "syn_ns"), 20.0);
    }
}
