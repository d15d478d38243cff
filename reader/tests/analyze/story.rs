//! The request's story on hand-built snapshots: a request blocked on a lock whose holder waits
//! for the disk, and a connection recognised from accept4…close that waits for an answer
//! that never comes.

use super::*;
use flightrec_reader::analyze::story::WokenBy;

fn sys(name: &str) -> u64 {
    schemas::event::syscall_id(name).unwrap()
}

/// Syscall entry with two arguments, and its exit (when `end` is given).
fn call2(
    b: &mut SnapshotBuilder,
    cpu: u32,
    t: (u32, u32, &str),
    name: &str,
    args: [u64; 2],
    span: (u64, u64),
    ret: i64,
) {
    let id = sys(name);
    for (ts_ns, data) in [
        (
            span.0,
            EventData::SyscallEntry(schemas::SyscallEntry {
                id,
                args: [args[0], args[1], 0, 0, 0, 0],
            }),
        ),
        (
            span.1,
            EventData::SyscallExit(schemas::SyscallExit { id, ret }),
        ),
    ] {
        b.event(Event {
            ts_ns,
            cpu,
            pid: t.0,
            tid: t.1,
            data,
        });
    }
}

const IDLE0: (u32, u32, &str) = (0, 0, "swapper/0");
const IDLE1: (u32, u32, &str) = (0, 0, "swapper/1");

// The request thread R (tid 101) of nginx blocks 40.7 ms in futex at +1 ms; the holder H (tid
// 102) of the same process is in fdatasync from +0.5 ms, blocked from +1.2 ms until its disk
// write (issued at +1 ms, complete at +40 ms) wakes it, and wakes R at +41.6 ms. R then runs to
// +50 ms. The hook names R and the request's 50 ms from +0.
fn lock_behind_io() -> SnapshotBuilder {
    let r = (100, 101, "nginx");
    let h = (100, 102, "nginx");
    let kw = (7, 7, "kworker/1:1");
    let mut b = SnapshotBuilder::new(2);
    b.switch(B - MS, 0, IDLE0, 0, r);
    b.switch(B - MS, 1, IDLE1, 0, h);
    call2(
        &mut b,
        0,
        r,
        "futex",
        [0x1000, 0],
        (B + MS, B + 41_800 * US),
        0,
    );
    b.switch(B + MS, 0, r, 1, IDLE0);
    call2(
        &mut b,
        1,
        h,
        "fdatasync",
        [5, 0],
        (B + 500 * US, B + 41 * MS),
        0,
    );
    b.block(1, h, 254 << 20, 8, 4096, 1, B + MS, B + 40 * MS);
    b.switch(B + 1_200 * US, 1, h, 2, IDLE1);
    b.wakeup(B + 40 * MS, 1, kw, h, 1);
    b.switch(B + 40_100 * US, 1, IDLE1, 0, h);
    call2(
        &mut b,
        1,
        h,
        "futex",
        [0x1000, 1],
        (B + 41_500 * US, B + 41_700 * US),
        1,
    );
    b.wakeup(B + 41_600 * US, 1, h, r, 0);
    b.switch(B + 41_700 * US, 0, IDLE0, 0, r);
    call2(
        &mut b,
        0,
        r,
        "getpid",
        [0, 0],
        (B + 50 * MS, B + 50 * MS + 500),
        100,
    );
    b.switch(B + 60 * MS, 1, h, 1, IDLE1);
    b.manifest
        .statedump
        .disks
        .push(schemas::manifest::DiskInfo {
            dev: 254 << 20,
            name: "vda".into(),
        });
    b.manifest.trigger.source = "hook".into();
    let f = &mut b.manifest.trigger.fields;
    f.insert("url".into(), "/orders?id=7".into());
    f.insert("method".into(), "GET".into());
    f.insert("duration_ms".into(), 50.0.into());
    f.insert("tid".into(), 101.into());
    f.insert("start_realtime_ns".into(), B.into());
    b
}

#[test]
fn a_request_blocked_on_a_lock_names_the_holder_and_its_disk_wait() {
    let r = run("story-lock", &lock_behind_io(), &Options::default());
    let s = r.story.as_ref().expect("a story for the hook's request");
    // The hook's 50 ms, and the 2 ms a webserver's whole-millisecond clock may hide.
    assert_eq!(
        (s.source.as_str(), s.who.tid, s.duration_ns),
        ("hook", 101, 52 * MS)
    );
    assert_eq!(s.what, "GET /orders?id=7");
    assert_eq!(s.blocked_ns, 40_600 * US, "{s:#?}");
    assert_eq!(
        s.running_ns + s.runnable_ns + s.blocked_ns + s.unknown_ns,
        52 * MS
    );
    let b = &s.blocked[0];
    assert_eq!(b.syscall.as_deref(), Some("futex"));
    match &b.woken_by {
        WokenBy::Thread(w) => assert_eq!(w.tid, 102),
        other => panic!("woken by {other:?}"),
    }
    let holder = &b.chain[0];
    assert_eq!(holder.who.tid, 102);
    assert_eq!(holder.syscall.as_deref(), Some("fdatasync"));
    let io = holder.io.as_ref().expect("the holder's disk write");
    assert_eq!(
        (io.device.as_str(), io.requests, io.max_ns),
        ("vda", 1, 39 * MS)
    );
    // The story is the first finding, and names the lock holder's disk wait.
    assert_eq!(r.findings[0].kind, FindingKind::Request);
    let v = &r.findings[0].text;
    assert!(
        v.contains("futex") && v.contains("fdatasync") && v.contains("vda"),
        "{v}"
    );
    let mut text = Vec::new();
    flightrec_reader::analyze::render(&r, &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    let head: Vec<&str> = text.lines().take(40).collect();
    assert!(
        head.iter()
            .any(|l| l.contains("fdatasync") && l.contains("<- nginx (102)")),
        "{text}"
    );
}

/// `lock_behind_io` with the statedump's open fds of nginx (pid 100): fd 5 as `fd5`.
fn lock_with_fd5(fd5: schemas::manifest::FdInfo) -> SnapshotBuilder {
    let mut b = lock_behind_io();
    b.process(100, 1, "nginx", ("/", 1), &[101, 102]);
    b.manifest.statedump.processes[0].fds = vec![fd5];
    b
}

// The holder's fdatasync is on fd 5, which the statedump names: the story, the finding, the
// slow-call table and the JSON name the file.
#[test]
fn the_holders_fdatasync_names_its_file_from_the_statedump() {
    let b = lock_with_fd5(schemas::manifest::FdInfo {
        fd: 5,
        target: "/var/lib/db/wal".into(),
        socket: None,
    });
    let r = run("story-fd-name", &b, &Options::default());
    let s = r.story.as_ref().unwrap();
    let holder = &s.blocked[0].chain[0];
    assert_eq!(
        (holder.fd, holder.fd_name.as_deref()),
        (Some(5), Some("/var/lib/db/wal"))
    );
    let v = &r.findings[0].text;
    assert!(v.contains("fdatasync on fd 5 (/var/lib/db/wal)"), "{v}");
    let slow = &ok(&r.syscalls).slowest_work[0];
    assert_eq!(
        (slow.syscall.as_str(), slow.fd, slow.fd_name.as_deref()),
        ("fdatasync", Some(5), Some("/var/lib/db/wal"))
    );
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(
        json["story"]["blocked"][0]["chain"][0]["fd_name"],
        "/var/lib/db/wal"
    );
    assert_eq!(
        json["syscalls"]["slowest_work"][0]["fd_name"],
        "/var/lib/db/wal"
    );
    let mut text = Vec::new();
    flightrec_reader::analyze::render(&r, &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.lines()
            .any(|l| l.contains("fdatasync") && l.contains("5 /var/lib/db/wal")),
        "{text}"
    );
}

// The holder closes fd 5 after its fdatasync and makes a TCP socket that gets fd 5; the
// statedump's fd 5 is that socket, which is not what the fdatasync was on: the fdatasync's
// fd stays unnamed, and a read on the socket afterwards gets the statedump's addresses.
#[test]
fn a_statedump_name_is_not_given_to_an_fd_changed_since() {
    let mut b = lock_with_fd5(schemas::manifest::FdInfo {
        fd: 5,
        target: "socket:[99]".into(),
        socket: Some("tcp 127.0.0.1:40312->127.0.0.1:5432".into()),
    });
    let h = (100, 102, "nginx");
    call2(
        &mut b,
        1,
        h,
        "close",
        [5, 0],
        (B + 42 * MS, B + 42 * MS + 100),
        0,
    );
    call2(
        &mut b,
        1,
        h,
        "socket",
        [2, 1],
        (B + 43 * MS, B + 43 * MS + 100),
        5,
    );
    call2(&mut b, 1, h, "read", [5, 0], (B + 44 * MS, B + 55 * MS), 10);
    let r = run("story-fd-changed", &b, &Options::default());
    let holder = &r.story.as_ref().unwrap().blocked[0].chain[0];
    assert_eq!((holder.fd, holder.fd_name.as_deref()), (Some(5), None));
    let sys = ok(&r.syscalls);
    let name_of = |call: &str| {
        sys.slowest
            .iter()
            .find(|c| c.syscall == call)
            .map(|c| c.fd_name.clone())
    };
    assert_eq!(name_of("fdatasync"), Some(None));
    assert_eq!(
        name_of("read"),
        Some(Some("tcp 127.0.0.1:40312->127.0.0.1:5432".into()))
    );
}

// A server thread accepts fd 7 at +1 ms, connects a UDP socket (fd 8) to a resolver, polls for
// 2 s and gets nothing (poll returns 0), answers and closes fd 7 at +2.01 s. No hook: the
// accept4…close period is the story.
#[test]
fn a_connection_recognised_from_accept_to_close_shows_a_wait_that_timed_out() {
    let t = (300, 300, "server");
    let mut b = SnapshotBuilder::new(1);
    b.switch(B, 0, IDLE0, 0, t);
    call2(&mut b, 0, t, "accept4", [3, 0], (B, B + MS), 7);
    call2(
        &mut b,
        0,
        t,
        "connect",
        [8, 0],
        (B + 2 * MS, B + 2 * MS + 3000),
        0,
    );
    call2(
        &mut b,
        0,
        t,
        "poll",
        [0x7000, 1],
        (B + 3 * MS, B + 2003 * MS),
        0,
    );
    b.switch(B + 3 * MS + 500, 0, t, 1, IDLE0);
    b.wakeup(B + 2003 * MS - 1000, 0, IDLE0, t, 0);
    b.switch(B + 2003 * MS - 500, 0, IDLE0, 0, t);
    call2(
        &mut b,
        0,
        t,
        "write",
        [7, 0],
        (B + 2004 * MS, B + 2005 * MS),
        10,
    );
    call2(
        &mut b,
        0,
        t,
        "close",
        [7, 0],
        (B + 2010 * MS, B + 2010 * MS + 900),
        0,
    );
    // The statedump names the listening socket the connection was accepted on.
    b.process(300, 1, "server", ("/", 1), &[300]);
    b.manifest.statedump.processes[0].fds = vec![schemas::manifest::FdInfo {
        fd: 3,
        target: "socket:[41]".into(),
        socket: Some("tcp 0.0.0.0:8080 (listening)".into()),
    }];
    let r = run("story-period", &b, &Options::default());
    let s = r.story.as_ref().expect("a story for the connection");
    assert_eq!((s.source.as_str(), s.who.tid), ("accept_close", 300));
    assert_eq!(
        s.what,
        "the slowest of 1 connections served (fd 7 (connection accepted on tcp 0.0.0.0:8080))"
    );
    assert_eq!(s.duration_ns, 2009 * MS);
    let w = &s.blocked[0];
    assert_eq!(w.syscall.as_deref(), Some("poll"));
    assert!(w.timed_out, "{w:#?}");
    assert!(
        r.findings[0].text.contains("nothing answered"),
        "{}",
        r.findings[0].text
    );
    // Asked not to, analyze tells no story.
    let opts = Options {
        story: flightrec_reader::analyze::StoryChoice::Off,
        ..Options::default()
    };
    assert!(run("story-off", &b, &opts).story.is_none());
}

// The request thread S (tid 401) is preempted on CPU 0 at +1 ms by P (tid 77), a thread whose
// own events are never recorded (so its switch-out is missing either); Q (tid 402) has an
// event on CPU 0 at +2 ms and runs until it switches S back in at +10 ms. P cannot have run
// after +2 ms: Q did. It used to run, for the story, until the end of the span, and rank
// first among those that ran instead of S.
#[test]
fn a_thread_never_switched_out_does_not_run_to_the_end_of_the_span() {
    let s = (400, 401, "server");
    let p = (1, 77, "tokio-rt-worker");
    let q = (400, 402, "server");
    let mut b = SnapshotBuilder::new(1);
    b.switch(B - MS, 0, IDLE0, 0, s);
    b.switch(B + MS, 0, s, 0, p);
    call2(
        &mut b,
        0,
        q,
        "getpid",
        [0, 0],
        (B + 2 * MS, B + 2 * MS + 500),
        400,
    );
    b.switch(B + 10 * MS, 0, q, 0, s);
    call2(
        &mut b,
        0,
        s,
        "getpid",
        [0, 0],
        (B + 19 * MS, B + 19 * MS + 500),
        400,
    );
    b.manifest.trigger.source = "hook".into();
    let f = &mut b.manifest.trigger.fields;
    f.insert("url".into(), "/x".into());
    f.insert("duration_ms".into(), 18.0.into());
    f.insert("tid".into(), 401.into());
    f.insert("start_realtime_ns".into(), B.into());
    let r = run("story-phantom", &b, &Options::default());
    let st = r.story.as_ref().expect("a story");
    assert_eq!(st.runnable_ns, 9 * MS, "{st:#?}");
    let instead: Vec<(u32, u64)> = st.ran_instead.iter().map(|x| (x.who.tid, x.ns)).collect();
    assert_eq!(instead[0], (402, 8 * MS), "{instead:?}");
    assert!(
        instead.iter().all(|&(tid, ns)| tid != 77 || ns <= MS),
        "{instead:?}"
    );
}

// A database opens its WAL inside the window (the kernel's path record before the openat
// entry), fdatasyncs it for 30 ms and closes it before the snapshot, so the statedump does not
// list it: the open names the fd, in the slow-call table and in the finding.
#[test]
fn an_fd_opened_in_the_window_is_named_by_its_open() {
    let t = (400, 400, "db");
    let mut b = SnapshotBuilder::new(1);
    b.switch(B, 0, IDLE0, 0, t);
    let openat = sys("openat");
    b.path(B + MS, 0, t, openat, "/var/lib/db/wal");
    call2(
        &mut b,
        0,
        t,
        "openat",
        [-100i64 as u64, 0],
        (B + MS, B + MS + 900),
        3,
    );
    call2(
        &mut b,
        0,
        t,
        "fdatasync",
        [3, 0],
        (B + 2 * MS, B + 32 * MS),
        0,
    );
    call2(
        &mut b,
        0,
        t,
        "close",
        [3, 0],
        (B + 33 * MS, B + 33 * MS + 100),
        0,
    );
    // The same fd number, reopened for another file afterwards, does not rename the call.
    b.path(B + 34 * MS, 0, t, openat, "/tmp/other");
    call2(
        &mut b,
        0,
        t,
        "openat",
        [-100i64 as u64, 0],
        (B + 34 * MS, B + 35 * MS),
        3,
    );
    let r = run("fd-opened-in-window", &b, &Options::default());
    let slow = &ok(&r.syscalls).slowest_work[0];
    assert_eq!(
        (slow.syscall.as_str(), slow.fd_name.as_deref()),
        ("fdatasync", Some("/var/lib/db/wal"))
    );
    let f = r
        .findings
        .iter()
        .find(|f| f.kind == FindingKind::SlowSyscall)
        .expect("a slow syscall finding");
    assert!(f.text.contains("fdatasync"), "{}", f.text);
    assert!(f.text.contains("on fd 3 (/var/lib/db/wal)"), "{}", f.text);
    assert_eq!(f.evidence.fd_name.as_deref(), Some("/var/lib/db/wal"));
}
