//! What file or socket an fd of a process was at a given time.
//!
//! Two sources name an fd, each right at different times:
//!
//! - the recorded syscalls: an `open`/`openat`/`openat2`/`creat` that returned the fd (its
//!   path from the `SyscallPath` record the kernel writes just before the entry), `socket`,
//!   `accept`, `eventfd`, `epoll_create`, `timerfd_create`... and the `dup`s and `close`s that
//!   move and end names. Such a name is right from the call's exit until the next change of
//!   that fd in that process;
//! - the statedump's open fds, read at snapshot time: right for fd N at time t only when no
//!   change of N in that process was recorded after t (the fd then still held the same open
//!   file at the snapshot). It names fds opened before the recorded history began, and it is
//!   preferred when both are right, as it has absolute paths and socket addresses.
//!
//! An fd opened before the recorded history and closed (or replaced) before the snapshot has
//! no name: neither source saw it. Nor do the fds of `pipe`, `pipe2` and `socketpair` (their
//! numbers are written to user memory, which is not recorded); a child process starts with
//! the names its parent's fds had at the `fork`, and keeps them across `execve` (which fds
//! close-on-exec closed is not recorded).
//!
//! Every event is observed, inside the analysed window or not, as task names are.

use std::collections::HashMap;

use schemas::event::{Event, EventData, syscall_name};
use schemas::manifest::Statedump;

/// `AT_FDCWD`: `openat` relative to the working directory.
const AT_FDCWD: i64 = -100;
/// `fcntl` commands that duplicate.
const F_DUPFD: u64 = 0;
const F_DUPFD_CLOEXEC: u64 = 1030;
/// `close_range` flag: mark close-on-exec instead of closing.
const CLOSE_RANGE_CLOEXEC: u64 = 1 << 2;
/// Longest path kept from a `SyscallPath` record's bytes.
const PATH_LEN: usize = 56;

/// Syscalls whose first argument is the fd they work or wait on.
pub const FD_FIRST: &[&str] = &[
    "read",
    "write",
    "pread64",
    "pwrite64",
    "readv",
    "writev",
    "preadv",
    "pwritev",
    "preadv2",
    "pwritev2",
    "recvfrom",
    "sendto",
    "recvmsg",
    "sendmsg",
    "recvmmsg",
    "sendmmsg",
    "connect",
    "accept",
    "accept4",
    "fsync",
    "fdatasync",
    "sync_file_range",
    "fallocate",
    "ftruncate",
    "flock",
    "ioctl",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "splice",
    "sendfile",
    "getdents64",
];

/// The fd a call of `syscall` works or waits on, from its first argument.
pub fn fd_arg(syscall: &str, arg0: u64) -> Option<i64> {
    FD_FIRST.contains(&syscall).then_some(arg0 as i64)
}

/// Syscalls whose exit creates, copies or ends an fd: the only entries the table keeps.
const CHANGING: &[&str] = &[
    "open",
    "creat",
    "openat",
    "openat2",
    "close",
    "close_range",
    "dup",
    "dup2",
    "dup3",
    "fcntl",
    "socket",
    "accept",
    "accept4",
    "eventfd",
    "eventfd2",
    "epoll_create",
    "epoll_create1",
    "timerfd_create",
    "signalfd",
    "signalfd4",
    "inotify_init",
    "inotify_init1",
    "fanotify_init",
    "memfd_create",
    "pidfd_open",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
];

/// A change of one fd: opened as a name (or as something unnamed), or closed.
#[derive(Clone, Debug)]
struct Change {
    ts: u64,
    /// `Some(name)`: opened; `None` inside: opened, name unknown; outer `None`: closed.
    opened: Option<Option<String>>,
}

/// A syscall entered and not yet exited, with what its exit needs.
#[derive(Clone, Debug)]
struct Pending {
    name: &'static str,
    args: [u64; 6],
    path: Option<String>,
}

/// Names of fds over the recorded history, per process.
#[derive(Debug, Default)]
pub struct FdNames {
    statedump: HashMap<(u32, i64), String>,
    changes: HashMap<(u32, i64), Vec<Change>>,
    pending: HashMap<u32, Pending>,
    /// The last path record per thread: (ts, syscall number, path).
    path: HashMap<u32, (u64, u64, String)>,
    /// Every fd number either source knows of, per process (fork and close_range walk these).
    known: HashMap<u32, std::collections::BTreeSet<i64>>,
    /// Syscall numbers of [`CHANGING`], as a lookup table: the hot path skips every other
    /// entry without hashing.
    changing: Vec<bool>,
}

impl FdNames {
    /// Starts from the statedump's open fds.
    pub fn from_statedump(s: &Statedump) -> FdNames {
        let mut names = FdNames::default();
        for id in CHANGING
            .iter()
            .filter_map(|n| schemas::event::syscall_id(n))
        {
            let id = id as usize;
            if names.changing.len() <= id {
                names.changing.resize(id + 1, false);
            }
            names.changing[id] = true;
        }
        for p in &s.processes {
            for f in &p.fds {
                names.statedump.insert((p.pid, i64::from(f.fd)), f.name());
                names
                    .known
                    .entry(p.pid)
                    .or_default()
                    .insert(i64::from(f.fd));
            }
        }
        names
    }

    /// A path record of thread `tid` at `ts` for the syscall `id` entered next (`cut`: the
    /// path was longer than the record holds).
    pub fn path(&mut self, tid: u32, ts: u64, id: u64, bytes: &[u8], cut: bool) {
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        let mut p = String::from_utf8_lossy(&bytes[..end.min(PATH_LEN)]).into_owned();
        if cut {
            p.push('…');
        }
        self.path.insert(tid, (ts, id, p));
    }

    /// Learns from one event (time order).
    pub fn observe(&mut self, ev: &Event) {
        match &ev.data {
            EventData::SyscallEntry(e) => {
                if !self.changing.get(e.id as usize).copied().unwrap_or(false) {
                    // A thread's stale path record or unfinished call is dropped here, so
                    // neither is handed to a later call.
                    if !self.pending.is_empty() {
                        self.pending.remove(&ev.tid);
                    }
                    return;
                }
                let Some(name) = syscall_name(e.id) else {
                    return;
                };
                let path = self
                    .path
                    .remove(&ev.tid)
                    .filter(|(ts, id, _)| *ts == ev.ts_ns && *id == e.id)
                    .map(|(_, _, p)| p);
                self.pending.insert(
                    ev.tid,
                    Pending {
                        name,
                        args: e.args,
                        path,
                    },
                );
            }
            EventData::SyscallExit(x) => {
                if self.pending.is_empty() {
                    return;
                }
                // An exit whose entry was not recorded is not that entry's.
                if let Some(p) = self.pending.remove(&ev.tid)
                    && syscall_name(x.id) == Some(p.name)
                {
                    self.exit(ev.pid, ev.ts_ns, &p, x.ret);
                }
            }
            EventData::SyscallPath(p, cut) => self.path(ev.tid, ev.ts_ns, p.id, &p.path, *cut),
            EventData::ProcessFork(f) if f.child_pid != f.parent_pid => {
                self.fork(f.parent_pid, f.child_pid, ev.ts_ns);
            }
            _ => {}
        }
    }

    fn exit(&mut self, pid: u32, ts: u64, p: &Pending, ret: i64) {
        let a = p.args;
        let arg = |i: usize| a[i] as i64;
        let opened = |this: &mut Self, name: Option<String>| {
            if ret >= 0 {
                this.change(pid, ret, ts, Some(name));
            }
        };
        match p.name {
            "open" | "creat" => {
                let name = p.path.clone();
                opened(self, name)
            }
            "openat" | "openat2" => {
                let name = p
                    .path
                    .as_ref()
                    .map(|path| match (path.starts_with('/'), arg(0)) {
                        (false, dir) if dir != AT_FDCWD => match self.name_at(pid, dir, ts) {
                            Some(d) if d.starts_with('/') => {
                                format!("{}/{path}", d.trim_end_matches('/'))
                            }
                            _ => path.clone(),
                        },
                        _ => path.clone(),
                    });
                opened(self, name)
            }
            // Linux releases the fd even when close reports an error other than EBADF.
            "close" if ret != -9 => self.change(pid, arg(0), ts, None),
            "close_range" if ret == 0 && a[2] & CLOSE_RANGE_CLOEXEC == 0 => {
                let (first, last) = (i64::from(a[0] as u32), i64::from(a[1] as u32));
                let fds: Vec<i64> = self
                    .known
                    .get(&pid)
                    .map(|k| k.range(first..=last).copied().collect())
                    .unwrap_or_default();
                for fd in fds {
                    self.change(pid, fd, ts, None);
                }
            }
            "dup" => {
                let name = self.name_at(pid, arg(0), ts);
                opened(self, name)
            }
            "dup2" | "dup3" if ret >= 0 && arg(0) != arg(1) => {
                let name = self.name_at(pid, arg(0), ts);
                opened(self, name)
            }
            "fcntl" if a[1] == F_DUPFD || a[1] == F_DUPFD_CLOEXEC => {
                let name = self.name_at(pid, arg(0), ts);
                opened(self, name)
            }
            "socket" => opened(self, Some(socket_name(a[0], a[1]))),
            "accept" | "accept4" => {
                let name = match self.name_at(pid, arg(0), ts) {
                    Some(l) => format!(
                        "connection accepted on {}",
                        l.trim_end_matches(" (listening)")
                    ),
                    None => format!("connection accepted on fd {}", arg(0)),
                };
                opened(self, Some(name))
            }
            "eventfd" | "eventfd2" => opened(self, Some("eventfd".into())),
            "epoll_create" | "epoll_create1" => opened(self, Some("epoll".into())),
            "timerfd_create" => opened(self, Some("timerfd".into())),
            "signalfd" | "signalfd4" if arg(0) == -1 => opened(self, Some("signalfd".into())),
            "inotify_init" | "inotify_init1" => opened(self, Some("inotify".into())),
            "fanotify_init" => opened(self, Some("fanotify".into())),
            "memfd_create" => opened(self, Some("memfd".into())),
            "pidfd_open" => opened(self, Some("pidfd".into())),
            "perf_event_open" => opened(self, Some("perf_event".into())),
            "userfaultfd" => opened(self, Some("userfaultfd".into())),
            "io_uring_setup" => opened(self, Some("io_uring".into())),
            _ => {}
        }
    }

    /// A new process starts with a copy of its parent's fds: the names its parent's fds had
    /// at the fork.
    fn fork(&mut self, parent: u32, child: u32, ts: u64) {
        let fds: Vec<i64> = self
            .known
            .get(&parent)
            .map(|k| k.iter().copied().collect())
            .unwrap_or_default();
        for fd in fds {
            if let Some(name) = self.name_at(parent, fd, ts) {
                self.change(child, fd, ts, Some(Some(name)));
            }
        }
    }

    fn change(&mut self, pid: u32, fd: i64, ts: u64, opened: Option<Option<String>>) {
        self.known.entry(pid).or_default().insert(fd);
        self.changes
            .entry((pid, fd))
            .or_default()
            .push(Change { ts, opened });
    }

    /// What fd `fd` of process `pid` was at `ts` (a call on it entered then), if a source
    /// that is right at `ts` names it (see the module doc).
    pub fn name_at(&self, pid: u32, fd: i64, ts: u64) -> Option<String> {
        let changes = self.changes.get(&(pid, fd)).map_or(&[][..], Vec::as_slice);
        // Changes are recorded at syscall exits; one at `ts` itself (another thread's close
        // exiting as this call enters) counts as before.
        let after = changes.partition_point(|c| c.ts <= ts);
        if after == changes.len()
            && let Some(n) = self.statedump.get(&(pid, fd))
        {
            return Some(n.clone());
        }
        match changes[..after].last() {
            Some(Change {
                opened: Some(name), ..
            }) => name.clone(),
            _ => None,
        }
    }
}

/// `tcp`, `udp`, `unix`... socket from `socket(domain, type, ...)`'s arguments.
fn socket_name(domain: u64, ty: u64) -> String {
    let family = match domain {
        1 => "unix",
        2 => "ipv4",
        10 => "ipv6",
        16 => "netlink",
        17 => "packet",
        _ => "",
    };
    let kind = match ty & 0xf {
        1 if family == "ipv4" || family == "ipv6" => "tcp",
        2 if family == "ipv4" || family == "ipv6" => "udp",
        1 => "stream",
        2 => "dgram",
        3 => "raw",
        5 => "seqpacket",
        _ => "",
    };
    match (family, kind) {
        ("ipv4" | "ipv6", "tcp" | "udp") => format!("{kind} socket"),
        ("", _) => "socket".into(),
        (f, "") => format!("{f} socket"),
        (f, k) => format!("{f} {k} socket"),
    }
}

/// Names the fds of the report's slowest and in-flight calls.
pub(crate) fn name_calls(r: &mut super::Report, names: &FdNames) {
    let super::Section::Ok(s) = &mut r.syscalls else {
        return;
    };
    for lists in [&mut s.slowest, &mut s.slowest_work, &mut s.slowest_waits] {
        for c in lists.iter_mut() {
            c.fd_name = c.fd.and_then(|fd| names.name_at(c.pid, fd, c.entry_ns));
        }
    }
    for lists in [
        &mut s.in_flight,
        &mut s.in_flight_work,
        &mut s.in_flight_waits,
    ] {
        for c in lists.iter_mut() {
            c.fd_name = c.fd.and_then(|fd| names.name_at(c.pid, fd, c.entry_ns));
        }
    }
}

/// `fd 3 (/var/lib/db/wal)`, or `fd 3` when nothing names it.
pub fn fd_label(fd: i64, name: Option<&str>) -> String {
    match name {
        Some(n) => format!("fd {fd} ({n})"),
        None => format!("fd {fd}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::event::syscall_id;
    use schemas::manifest::{FdInfo, ProcessInfo};
    use schemas::{SyscallEntry, SyscallExit};

    fn call(names: &mut FdNames, ts: u64, name: &str, args: [u64; 6], ret: i64) {
        let id = syscall_id(name).unwrap();
        let ev = |ts, data| Event {
            ts_ns: ts,
            cpu: 0,
            pid: 10,
            tid: 11,
            data,
        };
        names.observe(&ev(ts, EventData::SyscallEntry(SyscallEntry { id, args })));
        names.observe(&ev(ts + 1, EventData::SyscallExit(SyscallExit { id, ret })));
    }

    fn open(names: &mut FdNames, ts: u64, path: &str, fd: i64) {
        let id = syscall_id("openat").unwrap();
        names.path(11, ts, id, path.as_bytes(), false);
        call(names, ts, "openat", [AT_FDCWD as u64, 0, 0, 0, 0, 0], fd);
    }

    fn dump(fds: &[(u32, &str, Option<&str>)]) -> Statedump {
        Statedump {
            processes: vec![ProcessInfo {
                pid: 10,
                fds: fds
                    .iter()
                    .map(|&(fd, target, socket)| FdInfo {
                        fd,
                        target: target.into(),
                        socket: socket.map(Into::into),
                    })
                    .collect(),
                ..ProcessInfo::default()
            }],
            ..Statedump::default()
        }
    }

    /// Each source names an fd only when it is right at that time.
    #[test]
    fn names_come_from_the_source_right_at_the_time() {
        let mut n = FdNames::from_statedump(&dump(&[
            (3, "/var/lib/db/wal", None),
            (
                4,
                "socket:[77]",
                Some("tcp 127.0.0.1:40312->127.0.0.1:5432"),
            ),
            (5, "anon_inode:[eventpoll]", None),
            (7, "/new/seven", None),
        ]));
        // fd 6: opened before the history, closed at 100, opened again at 200.
        call(&mut n, 100, "close", [6, 0, 0, 0, 0, 0], 0);
        open(&mut n, 200, "/data/six", 6);
        // fd 7: opened at 300 as one file, closed at 400, opened again as the statedump's.
        open(&mut n, 300, "/old/seven", 7);
        call(&mut n, 400, "close", [7, 0, 0, 0, 0, 0], 0);
        open(&mut n, 500, "seven", 7);
        // fd 8: a dup of the WAL, then a socket on fd 9 and its accept on fd 10.
        call(&mut n, 600, "dup", [3, 0, 0, 0, 0, 0], 8);
        call(&mut n, 700, "socket", [2, 1 | 0o2000000, 0, 0, 0, 0], 9);
        call(&mut n, 800, "accept4", [4, 0, 0, 0, 0, 0], 10);
        // fd 11: opened relative to a directory fd.
        open(&mut n, 900, "/srv", 12);
        let id = syscall_id("openat").unwrap();
        n.path(11, 950, id, b"www/index.html\0\0", false);
        call(&mut n, 950, "openat", [12, 0, 0, 0, 0, 0], 11);
        // A failed open changes nothing.
        open(&mut n, 990, "/nope", -2);

        let cases: &[(i64, u64, Option<&str>)] = &[
            (3, 50, Some("/var/lib/db/wal")),
            (4, 50, Some("tcp 127.0.0.1:40312->127.0.0.1:5432")),
            (5, 50, Some("epoll")),
            (6, 50, None),
            (6, 150, None),
            (6, 250, Some("/data/six")),
            (7, 350, Some("/old/seven")),
            (7, 450, None),
            (7, 600, Some("/new/seven")),
            (8, 650, Some("/var/lib/db/wal")),
            (9, 750, Some("tcp socket")),
            (
                10,
                850,
                Some("connection accepted on tcp 127.0.0.1:40312->127.0.0.1:5432"),
            ),
            (11, 1000, Some("/srv/www/index.html")),
            (13, 1000, None),
        ];
        for &(fd, ts, want) in cases {
            assert_eq!(n.name_at(10, fd, ts).as_deref(), want, "fd {fd} at {ts}");
        }
        // Another process's fd 3 is not this one's.
        assert_eq!(n.name_at(99, 3, 50), None);
    }

    #[test]
    fn closes_and_cut_paths() {
        let mut n = FdNames::from_statedump(&dump(&[(3, "/a", None)]));
        open(&mut n, 10, "/five", 5);
        open(&mut n, 20, "/six", 6);
        call(
            &mut n,
            100,
            "close_range",
            [5, u32::MAX as u64, 0, 0, 0, 0],
            0,
        );
        assert_eq!(n.name_at(10, 5, 50).as_deref(), Some("/five"));
        assert_eq!(n.name_at(10, 5, 150), None);
        assert_eq!(n.name_at(10, 6, 150), None);
        assert_eq!(n.name_at(10, 3, 150).as_deref(), Some("/a"));
        // With CLOSE_RANGE_CLOEXEC nothing closes.
        open(&mut n, 160, "/seven", 7);
        call(
            &mut n,
            170,
            "close_range",
            [7, 7, CLOSE_RANGE_CLOEXEC, 0, 0, 0],
            0,
        );
        assert_eq!(n.name_at(10, 7, 180).as_deref(), Some("/seven"));
        let id = syscall_id("open").unwrap();
        n.path(11, 200, id, &[b'x'; 56], true);
        call(&mut n, 200, "open", [0; 6], 6);
        assert_eq!(n.name_at(10, 6, 300), Some(format!("{}…", "x".repeat(56))));
        // A path record of another syscall (or time) is not this open's.
        n.path(11, 300, id, b"/stale", false);
        call(&mut n, 310, "open", [0; 6], 5);
        assert_eq!(n.name_at(10, 5, 400), None);
    }

    /// A forked child inherits the names its parent's fds had at the fork; the parent's later
    /// changes are not the child's.
    #[test]
    fn a_child_inherits_its_parents_names_at_the_fork() {
        let mut n = FdNames::from_statedump(&dump(&[(3, "/var/lib/db/wal", None)]));
        open(&mut n, 100, "/data/four", 4);
        n.observe(&Event {
            ts_ns: 200,
            cpu: 0,
            pid: 10,
            tid: 11,
            data: EventData::ProcessFork(schemas::ProcessFork {
                parent_pid: 10,
                parent_tid: 11,
                child_pid: 20,
                child_tid: 20,
                ..Default::default()
            }),
        });
        call(&mut n, 300, "close", [4, 0, 0, 0, 0, 0], 0);
        assert_eq!(n.name_at(20, 3, 400).as_deref(), Some("/var/lib/db/wal"));
        assert_eq!(n.name_at(20, 4, 400).as_deref(), Some("/data/four"));
        assert_eq!(n.name_at(10, 4, 400), None);
        assert_eq!(n.name_at(20, 4, 150), None);
    }

    #[test]
    fn socket_names() {
        for (domain, ty, want) in [
            (2, 1, "tcp socket"),
            (10, 2 | 0o4000, "udp socket"),
            (1, 1, "unix stream socket"),
            (16, 3, "netlink raw socket"),
            (99, 1, "socket"),
        ] {
            assert_eq!(socket_name(domain, ty), want);
        }
    }
}
