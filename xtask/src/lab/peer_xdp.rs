//! The XDP_PASS program on a native-mode edge's veth peer, taken from pgrouter's own object
//! (its `xdp_pass` program), so there is no second, hand-written program to trust.
//!
//! Why: frames a native XDP program sends with XDP_TX on a veth go to the peer's NAPI ring.
//! With only GRO enabling that NAPI (the lab's set-up), they sat there until the peer's next
//! NAPI run, in the lab about once a second (measured: 1–4 pgbench transactions per second
//! through pgrouter). With an XDP program on the peer they are processed at once — as on a
//! real NIC, where the wire has no such queue.
use anyhow::{Context, Result, anyhow};
use aya::programs::{Xdp, XdpMode};
use std::path::PathBuf;

/// `xdp_pass` attached in driver mode to a root-side veth peer for as long as this value
/// lives (a BPF link, detached when the object is dropped).
pub struct PeerXdpPass {
    _ebpf: aya::Ebpf,
}

impl PeerXdpPass {
    pub fn attach(ifname: &str) -> Result<Self> {
        let obj = ebpf_object()?;
        let mut ebpf =
            aya::Ebpf::load_file(&obj).with_context(|| format!("loading {}", obj.display()))?;
        let p: &mut Xdp = ebpf
            .program_mut("xdp_pass")
            .ok_or_else(|| anyhow!("no xdp_pass program in {}", obj.display()))?
            .try_into()?;
        p.load().context("loading xdp_pass")?;
        p.attach(ifname, XdpMode::Driver)
            .with_context(|| format!("attaching xdp_pass to {ifname} (driver mode)"))?;
        Ok(PeerXdpPass { _ebpf: ebpf })
    }
}

/// The XDP object pgrouter embeds: `PGROUTER_EBPF_OBJ` when set (a prebuilt object, as for
/// router-user's build), else the one the release build put in router-user's build output
/// (`target/release/build/router-user-*/out/router-ebpf.o`, the newest). xtask cannot link
/// router-user itself: `cargo xtask setup` installs the toolchain its build needs.
fn ebpf_object() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("PGROUTER_EBPF_OBJ") {
        return Ok(PathBuf::from(p));
    }
    let build = super::edge::workspace().join("target/release/build");
    std::fs::read_dir(&build)
        .with_context(|| format!("reading {}", build.display()))?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("router-user-"))
        .map(|e| e.path().join("out/router-ebpf.o"))
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .max()
        .map(|(_, p)| p)
        .ok_or_else(|| {
            anyhow!(
                "no router-ebpf.o under {}: build the release pgrouter first (or set PGROUTER_EBPF_OBJ)",
                build.display()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::util::{cmd, run, run_quiet};

    /// Root only (`cargo test -p xtask -- --ignored peer_xdp`): pgrouter's `xdp_pass` attaches
    /// in driver mode to a veth whose peer sits in a namespace of the test's own, and leaves
    /// with the value.
    #[test]
    #[ignore]
    fn xdp_pass_attaches_to_a_veth_peer_and_detaches_on_drop() {
        let (ns, veth) = ("pgrxt-peer", "pgrxt-peer0");
        let _ = run_quiet(&mut cmd("ip", ["netns", "del", ns]));
        run(&mut cmd("ip", ["netns", "add", ns])).unwrap();
        let shown = || run(&mut cmd("ip", ["link", "show", veth])).unwrap();
        let r = std::panic::catch_unwind(|| {
            run(&mut cmd(
                "ip",
                [
                    "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
                ],
            ))
            .unwrap();
            run(&mut cmd("ip", ["link", "set", veth, "up"])).unwrap();
            let peer = PeerXdpPass::attach(veth).unwrap();
            assert!(shown().contains("xdp"), "{}", shown());
            drop(peer);
            assert!(!shown().contains("xdp"), "{}", shown());
        });
        let _ = run_quiet(&mut cmd("ip", ["link", "del", veth]));
        let _ = run_quiet(&mut cmd("ip", ["netns", "del", ns]));
        r.unwrap();
    }
}
