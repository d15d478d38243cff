//! Dropping capabilities once the programs are attached.
//!
//! Everything that needs privilege happens before: loading and attaching the programs, pinning
//! them, mapping the rings and the rule-hit buffer, binding the control socket (and giving it
//! its owner) and the hook's port. What the running daemon still does needs none of it:
//!
//! - freezes, epoch flips, the freeze lock and the rule-hit buffer are plain loads and stores
//!   on memory mapped at start, never a `bpf()` call;
//! - the statedump reads `/proc/PID/{status,comm,cmdline,cgroup,task}` of every process, files
//!   every user may read; only on a `/proc` mounted with `hidepid` does root need
//!   `CAP_SYS_PTRACE` to see other users' processes, and only then is it kept;
//! - the statedump's open fds (`statedump.fds`, on by default) list `/proc/PID/fd` and read its
//!   links: the directory is `0500` and owned by the process's user, and each link is checked
//!   with `ptrace_may_access`, so root reads other users' fds only with `CAP_DAC_READ_SEARCH`
//!   and `CAP_SYS_PTRACE`; both are kept then, and neither with `statedump.fds = false`.
//!   What is kept stays out of the effective set except while a statedump runs
//!   ([`while_raised`]);
//! - snapshots, the spool and uploads are root's own files in root's own directories, reached
//!   through their modes (an approved `snapshot_dirs` directory must let root write through its
//!   mode: no `CAP_DAC_OVERRIDE` is kept);
//! - sockets are already bound; accepting and the collector link need no capability.
//!
//! The drop happens on the thread that set everything up, before the runtime's threads exist,
//! so every thread of the daemon inherits it. The bounding set is emptied and the securebits
//! lock root out of regaining capabilities through `execve`, so nothing the daemon could be
//! made to run gets them back either.

use std::io;

/// `CAP_SETPCAP`: needed to shrink the bounding set and set securebits.
const CAP_SETPCAP: u32 = 8;
/// `CAP_DAC_READ_SEARCH`: listing other users' `/proc/PID/fd` (mode `0500`).
pub const CAP_DAC_READ_SEARCH: u32 = 2;
/// `CAP_SYS_PTRACE`: seeing other users' processes under `hidepid`, reading their fd links.
pub const CAP_SYS_PTRACE: u32 = 19;

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
const SECBIT_NOROOT: libc::c_ulong = 1 << 0;
const SECBIT_NOROOT_LOCKED: libc::c_ulong = 1 << 1;
const SECBIT_NO_SETUID_FIXUP: libc::c_ulong = 1 << 2;
const SECBIT_NO_SETUID_FIXUP_LOCKED: libc::c_ulong = 1 << 3;
const SECBIT_KEEP_CAPS_LOCKED: libc::c_ulong = 1 << 5;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// A set of capabilities as a 64-bit mask.
fn mask(caps: &[u32]) -> u64 {
    caps.iter().fold(0, |m, &c| m | (1 << c))
}

/// The capabilities the running daemon keeps here, each with why; `fds`: the statedump lists
/// open fds (`statedump.fds`).
pub fn needed(fds: bool) -> Vec<(u32, &'static str)> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    needed_with(fds, proc_hides_pids(&mounts))
}

fn needed_with(fds: bool, hidepid: bool) -> Vec<(u32, &'static str)> {
    let mut keep = Vec::new();
    if fds {
        keep.push((
            CAP_DAC_READ_SEARCH,
            "statedump.fds lists other users' /proc/PID/fd",
        ));
        keep.push((CAP_SYS_PTRACE, "and reads their fd links"));
    } else if hidepid {
        keep.push((
            CAP_SYS_PTRACE,
            "/proc is mounted with hidepid: the statedump reads other users' processes",
        ));
    }
    keep
}

/// Whether the `/proc` mount in `mounts` hides other users' processes.
fn proc_hides_pids(mounts: &str) -> bool {
    mounts.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(1) == Some(&"/proc")
            && f.get(2) == Some(&"proc")
            && f.get(3).is_some_and(|opts| {
                opts.split(',').any(|o| {
                    o.strip_prefix("hidepid=")
                        .is_some_and(|v| !matches!(v, "0" | "off"))
                })
            })
    })
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn current() -> io::Result<[CapData; 2]> {
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget fills two CapData for version 3 headers.
    check(unsafe { libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()) } as libc::c_int)?;
    Ok(data)
}

fn effective(data: &[CapData; 2]) -> u64 {
    data[0].effective as u64 | (data[1].effective as u64) << 32
}

/// Drops every capability of this thread (and of the threads it creates from now on) but
/// `keep`, for good, and leaves even those out of the effective set: [`while_raised`] raises
/// them around the one piece of work that needs them. Returns the permitted set left, as a
/// mask.
pub fn drop_all_but(keep: &[u32]) -> io::Result<u64> {
    let keep = mask(keep);
    let before = current()?;
    let keep = keep & permitted(&before);
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    // SAFETY: prctl calls with integer arguments only.
    unsafe {
        check(libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        ))?;
        if effective(&before) & (1 << CAP_SETPCAP) != 0 {
            for cap in (0..=last).filter(|c| keep & (1 << c) == 0) {
                check(libc::prctl(
                    libc::PR_CAPBSET_DROP,
                    cap as libc::c_ulong,
                    0,
                    0,
                    0,
                ))?;
            }
            check(libc::prctl(
                libc::PR_SET_SECUREBITS,
                SECBIT_NOROOT
                    | SECBIT_NOROOT_LOCKED
                    | SECBIT_NO_SETUID_FIXUP
                    | SECBIT_NO_SETUID_FIXUP_LOCKED
                    | SECBIT_KEEP_CAPS_LOCKED,
                0,
                0,
                0,
            ))?;
        }
        check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
    }
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let half = |shift: u32| CapData {
        effective: 0,
        permitted: (keep >> shift) as u32,
        inheritable: 0,
    };
    let data = [half(0), half(32)];
    // SAFETY: capset reads two CapData for version 3 headers.
    check(unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) } as libc::c_int)?;
    Ok(permitted(&current()?))
}

fn permitted(data: &[CapData; 2]) -> u64 {
    data[0].permitted as u64 | (data[1].permitted as u64) << 32
}

fn set_effective(mut data: [CapData; 2], mask: u64) -> io::Result<()> {
    data[0].effective = mask as u32;
    data[1].effective = (mask >> 32) as u32;
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    // SAFETY: capset reads two CapData for version 3 headers.
    check(unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) } as libc::c_int)
}

/// Runs `f` with this thread's permitted capabilities effective, then lowers them again: the
/// statedump is the only work that needs the ones the daemon keeps. Where nothing can be
/// raised (a process that dropped nothing, or a failed `capset`), `f` runs as things are.
pub fn while_raised<T>(f: impl FnOnce() -> T) -> T {
    let Ok(before) = current() else {
        return f();
    };
    let (eff, perm) = (effective(&before), permitted(&before));
    if eff == perm || set_effective(before, perm).is_err() {
        return f();
    }
    let out = f();
    // Lowering what this thread raised cannot fail: it only clears effective bits.
    let _ = set_effective(before, eff);
    out
}

/// Capability names for a log line (`none` for an empty set).
pub fn names(caps: &[(u32, &str)]) -> String {
    if caps.is_empty() {
        return "none".into();
    }
    caps.iter()
        .map(|(c, _)| match *c {
            CAP_SYS_PTRACE => "CAP_SYS_PTRACE".to_owned(),
            CAP_DAC_READ_SEARCH => "CAP_DAC_READ_SEARCH".to_owned(),
            c => format!("capability {c}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidepid_is_read_from_the_proc_mount() {
        let plain = "proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0\n";
        assert!(!proc_hides_pids(plain));
        let hidden = "sysfs /sys sysfs rw 0 0\nproc /proc proc rw,relatime,hidepid=invisible 0 0\n";
        assert!(proc_hides_pids(hidden));
        assert!(proc_hides_pids("proc /proc proc rw,hidepid=2 0 0"));
        assert!(!proc_hides_pids("proc /proc proc rw,hidepid=0 0 0"));
        assert!(!proc_hides_pids("proc /other proc rw,hidepid=2 0 0"));
    }

    #[test]
    fn fds_keep_exactly_ptrace_and_dac_read_search() {
        let codes = |v: Vec<(u32, &str)>| v.iter().map(|(c, _)| *c).collect::<Vec<_>>();
        assert_eq!(
            codes(needed_with(true, false)),
            [CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE]
        );
        assert_eq!(
            codes(needed_with(true, true)),
            [CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE]
        );
        assert_eq!(codes(needed_with(false, true)), [CAP_SYS_PTRACE]);
        assert!(needed_with(false, false).is_empty());
    }

    /// Probe 5: the daemon kept every capability. On a thread of its own (the drop is per
    /// thread), a drop leaves exactly what was kept, for good.
    #[test]
    fn dropped_capabilities_stay_dropped() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            println!("skipped dropped_capabilities_stay_dropped: needs root to hold capabilities");
            return;
        }
        std::thread::spawn(|| {
            let left = drop_all_but(&[CAP_SYS_PTRACE]).unwrap();
            assert_eq!(left, 1 << CAP_SYS_PTRACE);
            let line = |key: &str| {
                let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
                status
                    .lines()
                    .find(|l| l.starts_with(key))
                    .unwrap()
                    .to_owned()
            };
            // Kept, but effective only while raised.
            assert_eq!(line("CapEff:"), "CapEff:\t0000000000000000");
            assert_eq!(line("CapPrm:"), "CapPrm:\t0000000000080000");
            assert_eq!(
                while_raised(|| line("CapEff:")),
                "CapEff:\t0000000000080000"
            );
            assert_eq!(line("CapEff:"), "CapEff:\t0000000000000000");
            let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
            let bnd = status.lines().find(|l| l.starts_with("CapBnd:")).unwrap();
            assert_eq!(bnd, "CapBnd:\t0000000000080000");
            assert!(drop_all_but(&[]).unwrap() == 0);
            // A capability no longer permitted cannot be set again.
            let mut hdr = CapHeader {
                version: LINUX_CAPABILITY_VERSION_3,
                pid: 0,
            };
            let data = [
                CapData {
                    effective: 1 << CAP_SETPCAP,
                    permitted: 1 << CAP_SETPCAP,
                    inheritable: 0,
                },
                CapData::default(),
            ];
            // SAFETY: capset reads two CapData for version 3 headers.
            let r = unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) };
            assert!(r < 0, "a dropped capability came back");
        })
        .join()
        .unwrap();
    }
}
