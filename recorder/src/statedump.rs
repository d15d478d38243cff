//! System state captured at snapshot time: host identity, clock offsets, processes, threads and
//! cgroups, read from `/proc` and the cgroup2 mount.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use schemas::manifest::{
    CgroupInfo, ClockOffsets, DiskInfo, HostInfo, ProcessInfo, Statedump, ThreadInfo,
};

fn read_trim(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The cgroup2 mount point (`/sys/fs/cgroup` on unified systems, `/sys/fs/cgroup/unified` on
/// hybrid ones).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, dir, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(dir))
    })
}

/// cgroup v2 id (the directory's inode number) of `path` under the cgroup2 mount.
pub fn cgroup_id(path: &str) -> Option<u64> {
    let root = cgroup2_mount()?;
    let full = root.join(path.trim_start_matches('/'));
    std::fs::metadata(full).ok().map(|m| m.ino())
}

/// A container id in a cgroup path (64 hex digits, as docker, containerd and podman name them).
pub fn container_id(path: &str) -> Option<String> {
    path.split(['/', '-', '.', ':'])
        .find(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned)
}

fn uname() -> (String, String, String, String) {
    // SAFETY: uname fills the struct; fields are NUL-terminated.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    unsafe { libc::uname(&mut u) };
    let s = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    (s(&u.nodename), s(&u.release), s(&u.version), s(&u.machine))
}

/// Identity of this host.
pub fn host_info(host_id: &str, ncpu: u32) -> HostInfo {
    let (hostname, release, version, machine) = uname();
    HostInfo {
        host_id: if host_id.is_empty() {
            hostname.clone()
        } else {
            host_id.to_owned()
        },
        hostname,
        kernel_release: release,
        kernel_version: version,
        machine,
        boot_id: read_trim("/proc/sys/kernel/random/boot_id"),
        ncpu,
    }
}

fn clock(c: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and out pointer.
    unsafe { libc::clock_gettime(c, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// Offsets from `CLOCK_MONOTONIC` to the other clocks, from the tightest of 16 paired reads.
pub fn clock_offsets() -> ClockOffsets {
    let mut best = ClockOffsets {
        uncertainty_ns: u64::MAX,
        ..Default::default()
    };
    for _ in 0..16 {
        let m1 = clock(libc::CLOCK_MONOTONIC);
        let rt = clock(libc::CLOCK_REALTIME);
        let tai = clock(libc::CLOCK_TAI);
        let boot = clock(libc::CLOCK_BOOTTIME);
        let m2 = clock(libc::CLOCK_MONOTONIC);
        let width = (m2 - m1) as u64;
        if width < best.uncertainty_ns {
            let mid = m1 + (m2 - m1) / 2;
            best = ClockOffsets {
                realtime_minus_monotonic_ns: rt - mid,
                tai_minus_monotonic_ns: tai - mid,
                boottime_minus_monotonic_ns: boot - mid,
                uncertainty_ns: width,
            };
        }
    }
    best
}

fn status_field(status: &str, key: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().parse().ok())
}

/// The cgroup v2 path of a process (`0::/path` line of `/proc/PID/cgroup`).
fn proc_cgroup(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
        })
        .unwrap_or_default()
}

/// Block devices from `/sys/dev/block/MAJOR:MINOR`, each a link whose last component is the
/// kernel's name of the device.
fn disks() -> Vec<DiskInfo> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/sys/dev/block") else {
        return out;
    };
    for entry in dir.flatten() {
        let num = entry.file_name();
        let Some((major, minor)) = num.to_str().and_then(|s| s.split_once(':')) else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (major.parse::<u32>(), minor.parse::<u32>()) else {
            continue;
        };
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if let Some(name) = target.file_name().and_then(|n| n.to_str()) {
            out.push(DiskInfo {
                dev: (major << 20) | minor,
                name: name.to_owned(),
            });
        }
    }
    out.sort_by_key(|d| d.dev);
    out
}

/// Processes, threads and cgroups as they are now. Processes that exit during the scan are
/// skipped.
pub fn statedump() -> Statedump {
    let cg_root = cgroup2_mount();
    let mut processes = Vec::new();
    let mut cgroup_paths = std::collections::BTreeSet::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Statedump::default();
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let comm = read_trim(format!("/proc/{pid}/comm"));
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| {
                b.split(|&c| c == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        let mut threads = Vec::new();
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for t in tasks.flatten() {
                if let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
                    threads.push(ThreadInfo {
                        tid,
                        comm: read_trim(format!("/proc/{pid}/task/{tid}/comm")),
                    });
                }
            }
        }
        threads.sort_by_key(|t| t.tid);
        let cgroup_path = proc_cgroup(pid);
        let cgroup_id = cg_root
            .as_ref()
            .and_then(|r| std::fs::metadata(r.join(cgroup_path.trim_start_matches('/'))).ok())
            .map_or(0, |m| m.ino());
        if !cgroup_path.is_empty() {
            cgroup_paths.insert((cgroup_id, cgroup_path.clone()));
        }
        processes.push(ProcessInfo {
            pid,
            ppid: status_field(&status, "PPid:").unwrap_or(0),
            comm,
            cmdline,
            container_id: container_id(&cgroup_path),
            cgroup_path,
            cgroup_id,
            threads,
        });
    }
    processes.sort_by_key(|p| p.pid);
    if let Some(root) = &cg_root {
        cgroup_tree(root, &mut cgroup_paths);
    }
    Statedump {
        disks: disks(),
        processes,
        cgroups: cgroup_paths
            .into_iter()
            .map(|(id, path)| CgroupInfo { id, path })
            .collect(),
    }
}

/// Most cgroup directories a statedump lists: far more than a host runs, few enough that a
/// runaway tree cannot make the manifest huge.
const MAX_CGROUPS: usize = 20_000;

/// Adds every cgroup directory under the cgroup2 mount `root` to `out` as (id, path), so the
/// cgroup ids the kernel records carry name groups that hold no process at the freeze: the
/// group of a job whose processes all exited is still named, as long as it exists.
fn cgroup_tree(root: &Path, out: &mut std::collections::BTreeSet<(u64, String)>) {
    let mut stack = vec![(root.to_path_buf(), String::from("/"))];
    let mut seen = 0;
    while let Some((dir, path)) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&dir) else {
            continue;
        };
        out.insert((meta.ino(), path.clone()));
        seen += 1;
        if seen >= MAX_CGROUPS {
            break;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            // Groups are directories; never follow a link out of the tree.
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let Some(name) = e.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let child = if path == "/" {
                format!("/{name}")
            } else {
                format!("{path}/{name}")
            };
            stack.push((e.path(), child));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids() {
        let id = "a".repeat(64);
        assert_eq!(
            container_id(&format!("/system.slice/docker-{id}.scope")),
            Some(id.clone())
        );
        assert_eq!(
            container_id(&format!("/kubepods/burstable/pod1/{id}")),
            Some(id)
        );
        assert_eq!(container_id("/user.slice/user-0.slice"), None);
    }

    #[test]
    fn statedump_sees_this_process_and_thread() {
        let me = std::process::id();
        let dump = statedump();
        let p = dump
            .processes
            .iter()
            .find(|p| p.pid == me)
            .expect("self in statedump");
        assert!(p.threads.iter().any(|t| t.tid == me));
        assert_eq!(p.ppid, std::os::unix::process::parent_id());
    }

    #[test]
    fn clock_offsets_are_consistent() {
        let o = clock_offsets();
        let rt = clock(libc::CLOCK_REALTIME);
        let mono = clock(libc::CLOCK_MONOTONIC);
        // The offset predicts realtime from monotonic to well within a millisecond.
        assert!((mono + o.realtime_minus_monotonic_ns - rt).abs() < 1_000_000);
        assert!(o.tai_minus_monotonic_ns >= o.realtime_minus_monotonic_ns);
    }
}
