//! Planted causes of one slow request, and the noise around them, for the privileged tests of
//! `flightrec analyze`'s findings.
//!
//! ```text
//! causes idle                    noise: threads parked in epoll_wait, futex and nanosleep
//! causes busy                    noise: 2 ms of CPU work and a small read every 10 ms
//! causes flush DIR MIB OUT       MIB MiB of dirty data in DIR/flush.dat, then the request: a
//!                                4 KiB write and an fdatasync of the file, kept open
//! causes lock DIR MIB OUT        a holder thread writes MIB MiB, takes a mutex and fsyncs
//!                                the file; the request thread then waits for the mutex
//! causes cpu MS CPU OUT [NICE]   the request: MS ms of CPU time on CPU, at nice NICE (0)
//! causes net OUT                 the request: connect to a loopback listener that never
//!                                answers, send a query, poll 300 ms for the answer
//! causes storm N PROGRAM CPU     on CPU, run PROGRAM N times, one after the other
//! causes flood PORT CPU MS       on CPU, flood 127.0.0.1:PORT with UDP for MS ms while a
//!                                thread there drains them
//! ```
//!
//! A request writes `tid start_realtime_ns duration_ns` to OUT when it ends, what a webserver
//! module sends the hook about a slow request; its process then stays up, as a server does,
//! until it is killed.

mod cpu;

use cpu::pin_to_cpu;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::time::{Duration, Instant};

fn realtime_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64
}

fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
}

/// A request in progress on this thread; `end` reports it to `out`.
struct Request {
    tid: u32,
    start_rt: u64,
    start: Instant,
}

impl Request {
    fn begin() -> Request {
        Request {
            tid: gettid(),
            start_rt: realtime_ns(),
            start: Instant::now(),
        }
    }

    /// Reports the request (atomically: the file appears whole).
    fn end(self, out: &str) {
        let ns = self.start.elapsed().as_nanos();
        let tmp = format!("{out}.tmp");
        std::fs::write(&tmp, format!("{} {} {ns}\n", self.tid, self.start_rt)).expect("report");
        std::fs::rename(tmp, out).expect("report");
    }
}

/// Thread CPU time, ns.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Burns `ms` ms of this thread's CPU time, however long that takes on the wall clock.
fn work(ms: u64) {
    let until = thread_cpu_ns() + ms * 1_000_000;
    let mut x = 0u64;
    while thread_cpu_ns() < until {
        for _ in 0..20_000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
}

fn idle() -> ! {
    // An event loop with nothing to do.
    std::thread::spawn(|| {
        // SAFETY: an epoll instance with no fds, waited on with a valid event buffer.
        unsafe {
            let ep = libc::epoll_create1(0);
            let mut ev: libc::epoll_event = std::mem::zeroed();
            loop {
                libc::epoll_wait(ep, &mut ev, 1, -1);
            }
        }
    });
    // A parked pool worker.
    std::thread::spawn(|| {
        let pair = (Mutex::new(()), Condvar::new());
        let mut g = pair.0.lock().unwrap();
        loop {
            g = pair.1.wait(g).unwrap();
        }
    });
    // A timer thread.
    loop {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn busy() -> ! {
    let mut buf = [0u8; 512];
    loop {
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(2) {
            std::hint::black_box(&mut buf);
        }
        if let Ok(mut f) = std::fs::File::open("/proc/self/stat") {
            let _ = std::io::Read::read(&mut f, &mut buf);
        }
        std::thread::sleep(Duration::from_millis(8));
    }
}

/// Appends `mib` MiB to `f` through the page cache: dirty data for a flush to write.
fn dirty(f: &mut std::fs::File, mib: usize) {
    let chunk = vec![0x5au8; 1 << 20];
    for _ in 0..mib {
        f.write_all(&chunk).expect("write");
    }
}

fn flush(dir: &str, mib: usize, out: &str) {
    let mut f = std::fs::File::create(format!("{dir}/flush.dat")).expect("create");
    dirty(&mut f, mib);
    let r = Request::begin();
    f.write_all(&[0x17; 4096]).expect("write");
    // SAFETY: fdatasync of an open fd.
    assert_eq!(unsafe { libc::fdatasync(f.as_raw_fd()) }, 0, "fdatasync");
    r.end(out);
    // The file stays open while the server runs, as a database keeps its log open: the
    // snapshot's statedump then names it even when the rings no longer hold its open.
    std::mem::forget(f);
}

fn lock(dir: &str, mib: usize, out: &str) {
    // Both threads on one CPU, so the holder's unlock wakes the request from the holder's own
    // context: a wakeup sent to an idle CPU is queued there and its sched_wakeup fires in the
    // idle task, which names no waker (docs/analyses.md).
    pin_to_cpu(0);
    let m = Arc::new(Mutex::new(()));
    let held = Arc::new(Barrier::new(2));
    let holder = {
        let (m, held, path) = (m.clone(), held.clone(), format!("{dir}/lock.dat"));
        std::thread::spawn(move || {
            let mut f = std::fs::File::create(path).expect("create");
            dirty(&mut f, mib);
            let _g = m.lock().unwrap();
            held.wait();
            f.sync_all().expect("fsync");
        })
    };
    held.wait();
    std::thread::sleep(Duration::from_millis(20));
    let r = Request::begin();
    drop(m.lock().unwrap());
    work(2);
    r.end(out);
    holder.join().unwrap();
}

fn cpu(ms: u64, cpu: usize, out: &str, nice: i32) {
    pin_to_cpu(cpu);
    // SAFETY: setpriority on this process.
    assert_eq!(
        unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) },
        0,
        "setpriority"
    );
    let r = Request::begin();
    work(ms);
    r.end(out);
}

fn net(out: &str) {
    // The listener's backlog completes the connection; nobody ever accepts or answers it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let r = Request::begin();
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.write_all(b"QUERY 1\n").expect("send");
    let mut p = libc::pollfd {
        fd: s.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut p, 1, 300) };
    assert_eq!(n, 0, "the listener answered");
    r.end(out);
    drop(listener);
}

fn storm(n: u32, program: &str, cpu: usize) {
    pin_to_cpu(cpu);
    for _ in 0..n {
        let st = std::process::Command::new(program).status().expect("spawn");
        assert!(st.success(), "{program} failed");
    }
}

fn flood(port: u16, cpu: usize, ms: u64) {
    pin_to_cpu(cpu);
    let rx = std::net::UdpSocket::bind(("127.0.0.1", port)).expect("bind");
    rx.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let until = Instant::now() + Duration::from_millis(ms);
    let drain = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while Instant::now() < until {
            let _ = rx.recv(&mut buf);
        }
    });
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    tx.connect(("127.0.0.1", port)).expect("connect");
    // Each send is one buffer of 128 datagrams of 64 bytes (UDP GSO): loopback passes it on
    // whole and the receiving CPU cuts it into datagrams in its NET_RX softirq, so the
    // receive side costs far more than the send.
    let seg: libc::c_int = 64;
    // SAFETY: setsockopt with a valid int option.
    let rc = unsafe {
        libc::setsockopt(
            tx.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            (&seg as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "UDP_SEGMENT");
    let payload = [0u8; 128 * 64];
    const BATCH: usize = 32;
    let mut iov: Vec<libc::iovec> = (0..BATCH)
        .map(|_| libc::iovec {
            iov_base: payload.as_ptr() as *mut libc::c_void,
            iov_len: payload.len(),
        })
        .collect();
    // SAFETY: zeroed mmsghdrs are valid; each points at its own iovec, alive below.
    let mut msgs: Vec<libc::mmsghdr> = iov
        .iter_mut()
        .map(|v| {
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    while Instant::now() < until {
        // SAFETY: BATCH valid messages on a connected socket.
        unsafe { libc::sendmmsg(tx.as_raw_fd(), msgs.as_mut_ptr(), BATCH as u32, 0) };
    }
    drain.join().unwrap();
}

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let n = |i: usize| -> u64 { a[i].parse().expect("a number") };
    let serves = matches!(
        a.first().map(String::as_str),
        Some("flush" | "lock" | "cpu" | "net")
    );
    match a.first().map(String::as_str) {
        Some("idle") => idle(),
        Some("busy") => busy(),
        Some("flush") => flush(&a[1], n(2) as usize, &a[3]),
        Some("lock") => lock(&a[1], n(2) as usize, &a[3]),
        Some("cpu") => cpu(
            n(1),
            n(2) as usize,
            &a[3],
            a.get(4).map_or(0, |x| x.parse().expect("nice")),
        ),
        Some("net") => net(&a[1]),
        Some("storm") => storm(n(1) as u32, &a[2], n(3) as usize),
        Some("flood") => flood(n(1) as u16, n(2) as usize, n(3)),
        _ => {
            eprintln!(
                "usage: causes idle | busy | flush DIR MIB OUT | lock DIR MIB OUT | \
                 cpu MS CPU OUT [NICE] | net OUT | storm N PROGRAM CPU | flood PORT CPU MS"
            );
            std::process::exit(2);
        }
    }
    if serves {
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}
