//! Tearing the lab down: every process it started, its namespaces and links, leftover
//! shared memory, its directory. Also run before `up`, so a crashed lab never lingers.
use super::Lab;
use super::topology::{BRIDGE, HOSTS, PG_NODES};
use super::util::{cmd, netns_pids, pid_alive, pidfile_alive, run, run_quiet, signal, wait_gone};
use anyhow::{Context, Result, bail};
use std::fs;
use std::time::Duration;

impl Lab {
    /// Stops everything the lab started, deletes namespaces, bridge and data.
    pub fn down(&self) -> Result<()> {
        self.cleanup(true)?;
        println!("lab: down");
        Ok(())
    }

    /// Removes processes (pidfiles, then anything left in pgrlab-* namespaces),
    /// namespaces, pgrlab-* links and the lab dir. Idempotent.
    pub(super) fn cleanup(&self, verbose: bool) -> Result<()> {
        let mut did = false;
        // 0. Thaw anything frozen by lag-replica so shutdowns don't hang.
        let list = run(&mut cmd("ip", ["netns", "list"])).unwrap_or_default();
        for ns in list
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with("pgrlab-"))
        {
            for p in netns_pids(ns) {
                signal(p, libc::SIGCONT);
            }
        }
        // 1. Processes from `spawn` (e.g. pgrouter) gracefully, then Patroni
        //    (it stops PostgreSQL), then etcd.
        let mut spawned = vec![];
        for e in fs::read_dir(self.run_dir()).into_iter().flatten().flatten() {
            let f = e.file_name().to_string_lossy().into_owned();
            let Some(name) = f.strip_suffix(".pid") else {
                continue;
            };
            if name == "etcd" || PG_NODES.contains(&name) {
                continue;
            }
            let Ok(pid) = fs::read_to_string(e.path())
                .unwrap_or_default()
                .trim()
                .parse::<i32>()
            else {
                continue;
            };
            // Only if it still runs in one of our namespaces (PID reuse guard).
            let in_lab = fs::read_link(format!("/proc/{pid}/ns/net"))
                .ok()
                .is_some_and(|l| {
                    HOSTS.iter().any(|h| {
                        fs::metadata(format!("/run/netns/{}", h.ns()))
                            .ok()
                            .is_some_and(|m| {
                                use std::os::unix::fs::MetadataExt;
                                l.to_string_lossy() == format!("net:[{}]", m.ino())
                            })
                    })
                });
            if pid_alive(pid) && in_lab {
                println!("lab: stopping {name} (pid {pid})");
                signal(pid, libc::SIGTERM);
                spawned.push(pid);
            }
        }
        if !spawned.is_empty() {
            did = true;
            wait_gone(&spawned, Duration::from_secs(10));
        }
        let mut pats = vec![];
        for n in PG_NODES {
            if let Some(pid) = self.patroni_pid(n) {
                signal(pid, libc::SIGCONT);
                signal(pid, libc::SIGTERM);
                pats.push(pid);
                println!("lab: stopping Patroni {n} (pid {pid})");
            }
        }
        if !pats.is_empty() {
            did = true;
            if !wait_gone(&pats, Duration::from_secs(20)) {
                println!("lab: Patroni did not stop within 20s; killing");
            }
        }
        if let Some(pid) = pidfile_alive(&self.pidfile("etcd"), "etcd") {
            did = true;
            println!("lab: stopping etcd (pid {pid})");
            signal(pid, libc::SIGTERM);
            if !wait_gone(&[pid], Duration::from_secs(10)) {
                signal(pid, libc::SIGKILL);
            }
        }
        // 2. Anything still running inside our namespaces, then the namespaces.
        let list = run(&mut cmd("ip", ["netns", "list"])).unwrap_or_default();
        let nss: Vec<String> = list
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with("pgrlab-"))
            .map(String::from)
            .collect();
        for ns in &nss {
            let pids = netns_pids(ns);
            if !pids.is_empty() {
                println!("lab: killing leftover processes in {ns}: {pids:?}");
                for &p in &pids {
                    signal(p, libc::SIGKILL);
                }
                if !wait_gone(&pids, Duration::from_secs(10)) {
                    bail!("processes {pids:?} in {ns} survived SIGKILL");
                }
            }
        }
        for ns in &nss {
            did = true;
            run(&mut cmd("ip", ["netns", "del", ns]))?;
        }
        // 3. Root-namespace links (bridge, veth ends whose peer survived).
        let links = run(&mut cmd("ip", ["-o", "link", "show"])).unwrap_or_default();
        for l in links.lines() {
            if let Some(name) = l
                .split(':')
                .nth(1)
                .map(|s| s.trim().split('@').next().unwrap_or("").to_string())
                && name.starts_with("pgrlab-")
            {
                did = true;
                run_quiet(&mut cmd("ip", ["link", "del", &name]));
            }
        }
        // 4. SysV shared memory of SIGKILLed postmasters (key and id are on
        //    line 7 of postmaster.pid); all our processes are gone by now.
        for n in PG_NODES {
            let pm = self.node_dir(n).join("data/postmaster.pid");
            let Ok(text) = fs::read_to_string(&pm) else {
                continue;
            };
            let mut f = text.lines().nth(6).unwrap_or("").split_whitespace();
            let (Some(Ok(key)), Some(Ok(id))) = (
                f.next().map(str::parse::<i32>),
                f.next().map(str::parse::<i32>),
            ) else {
                continue;
            };
            // SAFETY: IPC_STAT fills a zeroed shmid_ds; IPC_RMID only when the
            // segment is still the one named in postmaster.pid and unattached.
            unsafe {
                let mut ds: libc::shmid_ds = std::mem::zeroed();
                if libc::shmctl(id, libc::IPC_STAT, &mut ds) == 0
                    && ds.shm_perm.__key == key
                    && ds.shm_nattch == 0
                    && libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) == 0
                {
                    println!("lab: removed {n}'s leftover shared memory segment (shmid {id})");
                }
            }
        }
        // 5. Lab dir (data, logs, pidfiles).
        if self.dir.exists() {
            did = true;
            fs::remove_dir_all(&self.dir)
                .with_context(|| format!("rm -r {}", self.dir.display()))?;
        }
        if did {
            let what = if verbose {
                "removed"
            } else {
                "removed leftovers of an earlier lab:"
            };
            println!(
                "lab: {what} processes, namespaces pgrlab-*, bridge {BRIDGE}, {}",
                self.dir.display()
            );
        } else if verbose {
            println!("lab: nothing was up");
        }
        Ok(())
    }
}
