//! System state captured at snapshot time: host identity, clock offsets, processes, threads and
//! cgroups, read from `/proc` and the cgroup2 mount.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use std::collections::HashMap;

use schemas::manifest::{
    CgroupInfo, ClockOffsets, DiskInfo, FdInfo, HostInfo, ProcessInfo, Statedump, ThreadInfo,
};

/// Open fds listed per process at most; a process with more says how many were left out.
pub const MAX_FDS_PER_PROCESS: usize = 256;
/// Open fds listed in all processes at most (about 100 bytes of manifest each).
pub const MAX_FDS_TOTAL: usize = 32_768;

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

/// An IPv4 or IPv6 `ADDR:PORT` of `/proc/net/{tcp,udp}{,6}`: the address as the kernel's
/// 32-bit words in host order, the port in hex.
fn inet_addr(hex: &str) -> Option<String> {
    let (addr, port) = hex.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut bytes = Vec::with_capacity(16);
    for i in (0..addr.len()).step_by(8) {
        let word = u32::from_str_radix(addr.get(i..i + 8)?, 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    match bytes.len() {
        4 => {
            let a: [u8; 4] = bytes.try_into().ok()?;
            Some(format!("{}:{port}", std::net::Ipv4Addr::from(a)))
        }
        16 => {
            let a: [u8; 16] = bytes.try_into().ok()?;
            let ip = std::net::Ipv6Addr::from(a);
            Some(match ip.to_ipv4_mapped() {
                Some(v4) => format!("{v4}:{port}"),
                None => format!("[{ip}]:{port}"),
            })
        }
        _ => None,
    }
}

/// Socket names by inode from the text of `/proc/PID/net/PROTO` (`tcp`, `tcp6`, `udp`,
/// `udp6`): `tcp 127.0.0.1:40312->127.0.0.1:5432`, `tcp 0.0.0.0:80 (listening)`,
/// `udp 0.0.0.0:53`.
fn inet_sockets(proto: &str, text: &str, out: &mut HashMap<u64, String>) {
    let name = proto.trim_end_matches('6');
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(remote), Some(st), Some(inode)) =
            (f.get(1), f.get(2), f.get(3), f.get(9))
        else {
            continue;
        };
        let (Some(local), Ok(inode)) = (inet_addr(local), inode.parse::<u64>()) else {
            continue;
        };
        if inode == 0 {
            continue;
        }
        let unconnected = remote.bytes().all(|b| b == b'0' || b == b':');
        let s = if name == "tcp" && *st == "0A" {
            format!("{name} {local} (listening)")
        } else if unconnected {
            format!("{name} {local}")
        } else {
            let remote = inet_addr(remote).unwrap_or_else(|| (*remote).to_owned());
            format!("{name} {local}->{remote}")
        };
        out.insert(inode, s);
    }
}

/// Socket names by inode from the text of `/proc/PID/net/unix`: `unix /run/x.sock`,
/// `unix @abstract`, or `unix` for an unnamed one.
fn unix_sockets(text: &str, out: &mut HashMap<u64, String>) {
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let Some(Ok(inode)) = f.get(6).map(|i| i.parse::<u64>()) else {
            continue;
        };
        out.insert(
            inode,
            match f.get(7) {
                Some(path) => format!("unix {path}"),
                None => "unix".to_owned(),
            },
        );
    }
}

/// The sockets of `pid`'s network namespace, by inode.
fn net_sockets(pid: u32) -> HashMap<u64, String> {
    let mut out = HashMap::new();
    for proto in ["tcp", "tcp6", "udp", "udp6"] {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{proto}")) {
            inet_sockets(proto, &text, &mut out);
        }
    }
    if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/unix")) {
        unix_sockets(&text, &mut out);
    }
    out
}

/// The inode of a `socket:[INODE]` link target.
fn socket_inode(target: &str) -> Option<u64> {
    target
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Socket tables read once per network namespace.
#[derive(Default)]
struct NetCache(HashMap<u64, HashMap<u64, String>>);

impl NetCache {
    fn socket(&mut self, pid: u32, inode: u64) -> Option<String> {
        // The namespace's inode keys the cache; a process whose namespace cannot be read gets
        // its own tables.
        let ns = std::fs::metadata(format!("/proc/{pid}/ns/net"))
            .map(|m| m.ino())
            .unwrap_or(u64::MAX - u64::from(pid));
        self.0
            .entry(ns)
            .or_insert_with(|| net_sockets(pid))
            .get(&inode)
            .cloned()
    }
}

/// The open fds of `pid`, lowest first, at most [`MAX_FDS_PER_PROCESS`] and `budget`; with how
/// many were left out. A process whose fds cannot be read (gone, or not ours to read) has
/// none.
fn process_fds(pid: u32, budget: &mut usize, nets: &mut NetCache) -> (Vec<FdInfo>, u32) {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return (Vec::new(), 0);
    };
    let mut nums: Vec<u32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect();
    nums.sort_unstable();
    let keep = nums.len().min(MAX_FDS_PER_PROCESS).min(*budget);
    let mut fds = Vec::with_capacity(keep);
    for &fd in &nums[..keep] {
        // An fd closed since the listing is simply not there any more.
        let Ok(target) = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")) else {
            continue;
        };
        let target = target.to_string_lossy().into_owned();
        let socket = socket_inode(&target).and_then(|inode| nets.socket(pid, inode));
        fds.push(FdInfo { fd, target, socket });
    }
    *budget -= fds.len();
    let omitted = (nums.len() - fds.len()) as u32;
    (fds, omitted)
}

/// Processes, threads and cgroups as they are now, with each process's open fds when `fds`
/// is set. Processes that exit during the scan are skipped.
pub fn statedump(with_fds: bool) -> Statedump {
    let cg_root = cgroup2_mount();
    let mut fd_budget = if with_fds { MAX_FDS_TOTAL } else { 0 };
    let mut nets = NetCache::default();
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
        let (fds, fds_omitted) = if with_fds {
            process_fds(pid, &mut fd_budget, &mut nets)
        } else {
            (Vec::new(), 0)
        };
        processes.push(ProcessInfo {
            pid,
            ppid: status_field(&status, "PPid:").unwrap_or(0),
            comm,
            cmdline,
            container_id: container_id(&cgroup_path),
            cgroup_path,
            cgroup_id,
            threads,
            fds,
            fds_omitted,
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
pub(crate) fn cgroup_tree(root: &Path, out: &mut std::collections::BTreeSet<(u64, String)>) {
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
        let dump = statedump(false);
        let p = dump
            .processes
            .iter()
            .find(|p| p.pid == me)
            .expect("self in statedump");
        assert!(p.threads.iter().any(|t| t.tid == me));
        assert_eq!(p.ppid, std::os::unix::process::parent_id());
    }

    /// A real child holding a file, a pipe (its stdout) and a connected loopback TCP socket:
    /// the statedump names each, and a budget cuts the list and says how much it left out.
    #[test]
    fn fds_of_a_child_are_named() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let file = std::env::temp_dir().join(format!("flightrec-fds-{}", std::process::id()));
        std::fs::write(&file, b"x").unwrap();
        let mut child = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "exec 3<'{}' 5<>/dev/tcp/127.0.0.1/{port}; echo up; exec sleep 30",
                file.display()
            ))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (conn, peer) = listener.accept().unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line, "up\n");
        let pid = child.id();
        let mut budget = 100;
        let (fds, omitted) = process_fds(pid, &mut budget, &mut NetCache::default());
        let name = |fd: u32| fds.iter().find(|f| f.fd == fd).map(FdInfo::name);
        assert_eq!(name(1).as_deref(), Some("pipe"), "{fds:?}");
        assert_eq!(name(3), Some(file.display().to_string()), "{fds:?}");
        assert_eq!(
            name(5),
            Some(format!("tcp {peer}->127.0.0.1:{port}")),
            "{fds:?}"
        );
        assert_eq!(omitted, 0);
        assert_eq!(budget, 100 - fds.len());

        let mut budget = 2;
        let (cut, omitted) = process_fds(pid, &mut budget, &mut NetCache::default());
        assert_eq!(cut.len(), 2);
        assert_eq!(omitted as usize, fds.len() - 2);
        assert_eq!(budget, 0);

        let _ = child.kill();
        let _ = child.wait();
        drop(conn);
        let _ = std::fs::remove_file(&file);
    }

    #[test]
    fn socket_tables_are_read() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1538 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1085 1 0 100 0 0 10 0
   1: 0100007F:9D7C 0100007F:1538 01 00000000:00000000 00:00000000 00000000     0        0 2001 1 0 100 0 0 10 0
";
        let tcp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3003 1 0 100 0 0 10 0
";
        let udp = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  5: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4004 2 0 0
";
        let unix = "Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 5005 /run/x.sock
0000000000000000: 00000003 00000000 00000000 0001 03 5006
";
        let mut m = HashMap::new();
        inet_sockets("tcp", tcp, &mut m);
        inet_sockets("tcp6", tcp6, &mut m);
        inet_sockets("udp", udp, &mut m);
        unix_sockets(unix, &mut m);
        let cases = [
            (1085, "tcp 127.0.0.1:5432 (listening)"),
            (2001, "tcp 127.0.0.1:40316->127.0.0.1:5432"),
            (3003, "tcp [::1]:80 (listening)"),
            (4004, "udp 0.0.0.0:53"),
            (5005, "unix /run/x.sock"),
            (5006, "unix"),
        ];
        for (inode, want) in cases {
            assert_eq!(
                m.get(&inode).map(String::as_str),
                Some(want),
                "inode {inode}"
            );
        }
        assert_eq!(socket_inode("socket:[2001]"), Some(2001));
        assert_eq!(socket_inode("pipe:[2001]"), None);
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
