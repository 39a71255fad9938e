//! Loading the embedded XDP object with pinned maps, and attaching it through pinned links so
//! the data path outlives a controller restart.
use std::{
    ffi::CString,
    fs,
    os::fd::{AsFd as _, BorrowedFd},
    path::{Path, PathBuf},
};

use crate::config::XdpMode;
use anyhow::{Context as _, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    programs::{
        Xdp, XdpMode as AyaMode,
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
    },
};
use router_ebpf::{ABI_VERSION, GC_PROGRAM_NAME, PROGRAM_NAME, map_names};
use tracing::{info, warn};

/// The object built by `build.rs`, aligned so aya can parse it in place.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/router-ebpf.o"));

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Folder on bpffs; maps and links are pinned under `<pin_path>/v<ABI_VERSION>/`.
    /// `None` loads private maps (kernel tests, benchmarks).
    pub pin_path: Option<PathBuf>,
    pub conntrack_entries: u32,
    /// Size of `PGR_HANDSHAKE` (config `datapath.handshake_entries`).
    pub handshake_entries: u32,
}

/// A loaded data path: the program, its maps (pinned) and the aya-log reader.
pub struct Datapath {
    pub ebpf: Ebpf,
    /// Kept alive: dropping it closes the log map while the program still references it.
    pub logger: Option<aya_log::EbpfLogger<XdpLog>>,
    pub pin_dir: Option<PathBuf>,
}

impl Datapath {
    /// Loads the program and opens or creates its maps under the pin folder. A controller that
    /// restarts finds the maps (and so every tracked flow) where it left them.
    pub fn load(opts: &LoadOptions) -> anyhow::Result<Self> {
        let pin_dir = opts.pin_path.as_deref().map(ensure_pin_dir).transpose()?;
        let paths: Vec<(&str, PathBuf)> = match &pin_dir {
            Some(dir) => map_names::ALL.iter().map(|n| (*n, dir.join(n))).collect(),
            None => Vec::new(),
        };
        let mut loader = EbpfLoader::new();
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        loader.map_max_entries(map_names::CONNTRACK, opts.conntrack_entries);
        loader.map_max_entries(map_names::HANDSHAKE, opts.handshake_entries);
        let mut ebpf = loader.load(EBPF_OBJECT).context("loading the XDP object")?;
        let logger = match aya_log::EbpfLogger::init_with_logger(&mut ebpf, XdpLog) {
            Ok(l) => Some(l),
            Err(e) => {
                warn!(error = %e, "kernel log forwarding unavailable");
                None
            }
        };
        let prog: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or_else(|| anyhow!("program {PROGRAM_NAME} missing from the object"))?
            .try_into()?;
        prog.load().context("verifying the XDP program")?;
        // Verified but never attached: the controller's GC runs it with BPF_PROG_TEST_RUN so
        // that reaping a flow and giving back its maxconn slot use the kernel's own atomic
        // close, never a racing userspace write.
        let gc: &mut Xdp = ebpf
            .program_mut(GC_PROGRAM_NAME)
            .ok_or_else(|| anyhow!("program {GC_PROGRAM_NAME} missing from the object"))?
            .try_into()?;
        gc.load().context("verifying the GC program")?;
        Ok(Self {
            ebpf,
            logger,
            pin_dir,
        })
    }

    /// Points the pinned link at `from` to this program (bpf_link_update). With `move_to`,
    /// the link is pinned there and its old pin removed.
    fn take_over(
        &mut self,
        iface: &str,
        from: &Path,
        move_to: Option<&Path>,
    ) -> anyhow::Result<()> {
        let pinned = PinnedLink::from_pin(from)
            .with_context(|| format!("opening pinned link {}", from.display()))?;
        let link = XdpLink::try_from(FdLink::from(pinned))
            .map_err(|e| anyhow!("pinned link {} is not XDP: {e}", from.display()))?;
        let prog = self.prog()?;
        let id = prog
            .attach_to_link(link)
            .with_context(|| format!("replacing the program on {iface}"))?;
        let link = prog.take_link(id)?;
        match move_to {
            Some(to) => {
                pin_link(link, iface, to)?;
                fs::remove_file(from).with_context(|| format!("removing {}", from.display()))?;
            }
            // The link stays pinned; forget our handle so dropping it does not detach.
            None => std::mem::forget(link),
        }
        Ok(())
    }

    /// The GC program (loaded, never attached), for `BPF_PROG_TEST_RUN` with a `GcRequest`.
    pub fn gc_program_fd(&self) -> anyhow::Result<BorrowedFd<'_>> {
        let gc: &Xdp = self
            .ebpf
            .program(GC_PROGRAM_NAME)
            .ok_or_else(|| anyhow!("program {GC_PROGRAM_NAME} missing"))?
            .try_into()?;
        Ok(gc.fd()?.as_fd())
    }

    fn prog(&mut self) -> anyhow::Result<&mut Xdp> {
        Ok(self
            .ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or_else(|| anyhow!("program {PROGRAM_NAME} missing"))?
            .try_into()?)
    }

    /// Attaches to `iface`. If an earlier pgrouter left a pinned link there, the link is
    /// updated to this program atomically (no packet sees no program). Returns the mode used.
    pub fn attach(&mut self, iface: &str, mode: XdpMode) -> anyhow::Result<&'static str> {
        let link_pin = self
            .pin_dir
            .as_ref()
            .map(|d| d.join(format!("link_{iface}")));
        if let Some(link_pin) = link_pin.as_ref().filter(|p| p.exists()) {
            self.take_over(iface, link_pin, None)?;
            info!(iface, "took over the pinned XDP link");
            return Ok("pinned");
        }
        if let (Some(dir), Some(ours)) = (&self.pin_dir, &link_pin)
            && let Some(old) = other_layout_link(dir, iface)
        {
            warn!(
                iface,
                old = %old.display(),
                abi = ABI_VERSION,
                "the running data path uses another map layout: replacing its program through \
                 its link (no gap in service), but the flows it tracks cannot be read by this \
                 build, so their sessions will be reset; its maps stay pinned until removed"
            );
            self.take_over(iface, &old, Some(ours))?;
            return Ok("pinned");
        }
        let tries: &[(AyaMode, &'static str)] = match mode {
            XdpMode::Native => &[(AyaMode::Driver, "native")],
            XdpMode::Generic => &[(AyaMode::Skb, "generic")],
            XdpMode::Auto => &[(AyaMode::Driver, "native"), (AyaMode::Skb, "generic")],
        };
        let mut last_err = None;
        for (m, label) in tries {
            let prog = self.prog()?;
            match prog.attach(iface, *m) {
                Ok(id) => {
                    if let Some(link_pin) = &link_pin {
                        pin_link(prog.take_link(id)?, iface, link_pin)?;
                    }
                    if *label == "generic" && mode == XdpMode::Auto {
                        warn!(iface, "native XDP unavailable; attached in generic mode");
                    }
                    info!(iface, mode = label, "attached");
                    return Ok(label);
                }
                Err(e) => {
                    last_err = Some(anyhow!(e).context(format!("attaching {label} XDP to {iface}")))
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("no attach mode tried")))
    }
}

/// Forwards the XDP program's aya-log records to tracing, marked `source = "xdp"`. Given to
/// aya-log directly: the global `log` logger is tracing's own bridge, which would drop the
/// mark.
pub struct XdpLog;

impl log::Log for XdpLog {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, r: &log::Record<'_>) {
        match r.level() {
            log::Level::Error => tracing::error!(source = "xdp", "{}", r.args()),
            log::Level::Warn => tracing::warn!(source = "xdp", "{}", r.args()),
            _ => tracing::info!(source = "xdp", "{}", r.args()),
        }
    }
    fn flush(&self) {}
}

/// Removes pgrouter from `iface` by unpinning its link (the kernel detaches when the last
/// reference goes).
pub fn detach(pin_path: &Path, iface: &str) -> anyhow::Result<bool> {
    let link_pin = versioned(pin_path).join(format!("link_{iface}"));
    if !link_pin.exists() {
        return Ok(false);
    }
    fs::remove_file(&link_pin).with_context(|| format!("removing {}", link_pin.display()))?;
    Ok(true)
}

/// Pins an XDP link at `path` and lets go of our handle, so the program stays attached after
/// this process exits.
fn pin_link(link: XdpLink, iface: &str, path: &Path) -> anyhow::Result<()> {
    let fd_link =
        FdLink::try_from(link).map_err(|e| anyhow!("XDP link on {iface} cannot be pinned: {e}"))?;
    let pinned = fd_link
        .pin(path)
        .with_context(|| format!("pinning link {}", path.display()))?;
    std::mem::forget(pinned);
    Ok(())
}

/// A link on `iface` pinned by a build with another map layout (a sibling `v<N>` folder).
fn other_layout_link(ours: &Path, iface: &str) -> Option<PathBuf> {
    let parent = ours.parent()?;
    fs::read_dir(parent)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p != ours
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('v'))
        })
        .map(|p| p.join(format!("link_{iface}")))
        .find(|p| p.exists())
}

/// The folder for this ABI version: an incompatible build never opens another layout's maps.
pub fn versioned(pin_path: &Path) -> PathBuf {
    pin_path.join(format!("v{ABI_VERSION}"))
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0) && st.f_type as i64 == BPF_FS_MAGIC
}

/// A bpffs mounted from a private mount namespace (e.g. under `ip netns exec`) goes away with
/// the process, and every pin with it: the data path would not outlive a restart.
fn private_mount_ns() -> bool {
    match (
        fs::read_link("/proc/self/ns/mnt"),
        fs::read_link("/proc/1/ns/mnt"),
    ) {
        (Ok(a), Ok(b)) => a != b,
        _ => false,
    }
}

fn mount_bpffs(at: &Path) -> anyhow::Result<()> {
    if private_mount_ns() {
        warn!(
            at = %at.display(),
            "mounting bpffs from a private mount namespace: pins vanish when pgrouter exits; \
             mount a bpffs there from the host's namespace so the data path survives restarts"
        );
    }
    let target = CString::new(at.as_os_str().as_encoded_bytes())?;
    let src = CString::new("bpf")?;
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        bail!(
            "mounting bpffs on {}: {}",
            at.display(),
            std::io::Error::last_os_error()
        );
    }
    info!(at = %at.display(), "mounted bpffs");
    Ok(())
}

/// Makes sure the pin folder exists on a bpffs, mounting one as systemd would when missing:
/// on /sys/fs/bpf for paths below it, otherwise on the configured folder itself.
fn ensure_pin_dir(pin_path: &Path) -> anyhow::Result<PathBuf> {
    let sys = Path::new("/sys/fs/bpf");
    if pin_path.starts_with(sys) {
        if !is_bpffs(sys) {
            mount_bpffs(sys)?;
        }
    } else {
        fs::create_dir_all(pin_path)
            .with_context(|| format!("creating pin folder {}", pin_path.display()))?;
        if !is_bpffs(pin_path) {
            mount_bpffs(pin_path)?;
        }
    }
    let dir = versioned(pin_path);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
