//! Planted behaviour for the privileged tests: makes an exactly known sequence of syscalls.
//!
//! ```text
//! workload syscalls DIR      1000 getpgid(MAGIC+i), nanosleep 20 ms, write 64 KiB + fsync in DIR
//! workload getpgid N [CPU]   N getpgid(MAGIC+i), optionally pinned to CPU
//! workload sleeper N MS      N times: sleep MS milliseconds
//! workload poll MS           one poll() with no fds and a timeout of MS milliseconds
//! workload spin MS [CPU]     burn the CPU for MS milliseconds, optionally pinned to CPU
//! workload spinsleep N SPIN_MS SLEEP_MS [CPU]
//!                            N times: burn SPIN_MS, then sleep SLEEP_MS
//! workload execs N PROGRAM   N times: run PROGRAM (a short-lived child) and wait for it
//! workload slowcall N MS     N getpgid(MAGIC+i), one raw nanosleep of MS ms, then N more
//!                            getpgid(MAGIC+N+i)
//! workload victim N MS CPU   renames itself "rqvictim", goes SCHED_IDLE on CPU, and N times
//!                            sleeps MS ms (so CPU hogs there make it wait to run)
//! workload threads T N CPU  T threads pinned to CPU, each N times: getpgid(MAGIC + t<<20 + i),
//!                            then sched_yield (so the threads take turns on the CPU)
//! workload threadexec N WHEN a second thread execs `workload getpgid N`: the process keeps
//!                            its pid, the thread takes it as its tid. WHEN `alive`: the
//!                            leader sleeps meanwhile (the exec waits for it to die);
//!                            `exited`: the leader has ended first (the exec waits for nothing)
//! workload http PORTFILE N   HTTP/1.1 on 127.0.0.1, port written to PORTFILE; answers N
//!                            requests one by one; paths starting /slow take a raw nanosleep
//!                            of 300 ms first
//! ```
//!
//! Every getpgid passes `MAGIC + i` as its pid argument, recorded by flightrec (getpgid has one
//! argument, so its entries keep it), so tests can find each call and check order, gaps and
//! duplicates. The kernel reads the argument as a negative pid and answers ESRCH: no side
//! effect, and the same answer every time.

mod cpu;

use cpu::pin_to_cpu;
use std::ffi::CString;

/// Argument of the i-th getpgid is `MAGIC + i` (a negative `pid_t` in its low half).
const MAGIC: u64 = 0xF11E_8000_0000;

fn getpgid_loop(n: u64) {
    for i in 0..n {
        // SAFETY: getpgid only looks the pid up; a negative one fails with ESRCH.
        unsafe { libc::syscall(libc::SYS_getpgid, MAGIC + i) };
    }
}

fn spin(ms: u64) {
    let until = std::time::Instant::now() + std::time::Duration::from_millis(ms);
    let mut x = 0u64;
    while std::time::Instant::now() < until {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}

fn raw_nanosleep(ms: u64) {
    let ts = libc::timespec {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
    };
    // SAFETY: the raw syscall (glibc's nanosleep() calls clock_nanosleep) on a valid timespec.
    unsafe {
        libc::syscall(
            libc::SYS_nanosleep,
            &ts,
            std::ptr::null_mut::<libc::timespec>(),
        )
    };
}

fn serve_http(port_file: &str, n: u32) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::fs::write(port_file, port.to_string()).expect("port file");
    for _ in 0..n {
        let (stream, _) = listener.accept().expect("accept");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut first = String::new();
        reader.read_line(&mut first).expect("request line");
        // The rest of the head, up to the empty line; requests here carry no body.
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
        }
        let path = first.split_whitespace().nth(1).unwrap_or("/");
        if path.starts_with("/slow") {
            raw_nanosleep(300);
        }
        let body = format!("served {path}\n");
        let mut out = stream;
        let _ = write!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("syscalls") => {
            let path = CString::new(format!("{}/workload.dat", args[1])).expect("path");
            let buf = vec![0x5au8; 64 * 1024];
            // SAFETY: plain syscalls on valid buffers.
            unsafe {
                let fd = libc::open(
                    path.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC,
                    0o644,
                );
                assert!(fd >= 0, "open failed");
                getpgid_loop(1000);
                let ts = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 20_000_000,
                };
                // The raw syscall: glibc's nanosleep() calls clock_nanosleep.
                libc::syscall(
                    libc::SYS_nanosleep,
                    &ts,
                    std::ptr::null_mut::<libc::timespec>(),
                );
                let n = libc::write(fd, buf.as_ptr().cast(), buf.len());
                assert_eq!(n, buf.len() as isize, "write");
                assert_eq!(libc::fsync(fd), 0, "fsync");
                libc::close(fd);
            }
        }
        Some("getpgid") => {
            let n: u64 = args[1].parse().expect("count");
            if let Some(cpu) = args.get(2) {
                pin_to_cpu(cpu.parse().expect("cpu"));
            }
            getpgid_loop(n);
        }
        Some("threads") => {
            let t: u64 = args[1].parse().expect("threads");
            let n: u64 = args[2].parse().expect("count");
            let cpu: usize = args[3].parse().expect("cpu");
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(t as usize));
            let threads: Vec<_> = (0..t)
                .map(|k| {
                    let barrier = barrier.clone();
                    std::thread::spawn(move || {
                        pin_to_cpu(cpu);
                        barrier.wait();
                        for i in 0..n {
                            // SAFETY: as in getpgid_loop; sched_yield has no arguments.
                            unsafe {
                                libc::syscall(libc::SYS_getpgid, MAGIC + (k << 20) + i);
                                libc::sched_yield();
                            }
                        }
                    })
                })
                .collect();
            for h in threads {
                h.join().expect("thread");
            }
        }
        Some("threadexec") => {
            let n = args[1].clone();
            let leader_exits = match args[2].as_str() {
                "alive" => false,
                "exited" => true,
                other => panic!("threadexec: WHEN is alive or exited, not {other}"),
            };
            let exe = std::env::current_exe().expect("own path");
            // SAFETY: no preconditions.
            let leader = unsafe { libc::getpid() };
            std::thread::spawn(move || {
                if leader_exits {
                    // The leader stays a zombie while this thread lives.
                    let stat = format!("/proc/self/task/{leader}/stat");
                    while !std::fs::read_to_string(&stat)
                        .is_ok_and(|s| s.rsplit(") ").next().is_some_and(|r| r.starts_with('Z')))
                    {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                }
                let exe = CString::new(exe.into_os_string().into_encoded_bytes()).expect("path");
                let argv = [
                    c"workload".to_owned(),
                    c"getpgid".to_owned(),
                    CString::new(n).expect("n"),
                ];
                let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
                ptrs.push(std::ptr::null());
                // SAFETY: NUL-terminated path and argument vector; execv returns only on error.
                unsafe { libc::execv(exe.as_ptr(), ptrs.as_ptr()) };
                panic!("execv failed: {}", std::io::Error::last_os_error());
            });
            if leader_exits {
                // Ends this thread only (not the process): the raw exit, not exit_group.
                // SAFETY: nothing of this thread is used after; the process lives on.
                unsafe { libc::syscall(libc::SYS_exit, 0) };
            }
            // The exec ends this thread (the kernel kills every other thread of the process).
            loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        }
        Some("sleeper") => {
            let n: u32 = args[1].parse().expect("count");
            let ms: u64 = args[2].parse().expect("ms");
            for _ in 0..n {
                std::thread::sleep(std::time::Duration::from_millis(ms));
            }
        }
        Some("poll") => {
            let ms: i32 = args[1].parse().expect("ms");
            // SAFETY: no fds to read; the timeout alone makes the call block.
            let n = unsafe { libc::poll(std::ptr::null_mut(), 0, ms) };
            assert_eq!(n, 0, "poll");
        }
        Some("spin") => {
            if let Some(cpu) = args.get(2) {
                pin_to_cpu(cpu.parse().expect("cpu"));
            }
            spin(args[1].parse().expect("ms"));
        }
        Some("spinsleep") => {
            let n: u32 = args[1].parse().expect("count");
            let (busy, idle): (u64, u64) = (
                args[2].parse().expect("spin ms"),
                args[3].parse().expect("sleep ms"),
            );
            if let Some(cpu) = args.get(4) {
                pin_to_cpu(cpu.parse().expect("cpu"));
            }
            for _ in 0..n {
                spin(busy);
                std::thread::sleep(std::time::Duration::from_millis(idle));
            }
        }
        Some("execs") => {
            let n: u32 = args[1].parse().expect("count");
            for _ in 0..n {
                let st = std::process::Command::new(&args[2])
                    .status()
                    .expect("spawn");
                assert!(st.success(), "{} failed", args[2]);
            }
        }
        Some("slowcall") => {
            let n: u64 = args[1].parse().expect("count");
            let ms: u64 = args[2].parse().expect("ms");
            getpgid_loop(n);
            raw_nanosleep(ms);
            for i in n..2 * n {
                // SAFETY: getpgid only looks the pid up; a negative one fails with ESRCH.
                unsafe { libc::syscall(libc::SYS_getpgid, MAGIC + i) };
            }
        }
        Some("victim") => {
            let n: u32 = args[1].parse().expect("count");
            let ms: u64 = args[2].parse().expect("ms");
            pin_to_cpu(args[3].parse().expect("cpu"));
            // SAFETY: PR_SET_NAME with a NUL-terminated name; sched_setscheduler on ourselves.
            unsafe {
                libc::prctl(libc::PR_SET_NAME, c"rqvictim".as_ptr());
                let param = libc::sched_param { sched_priority: 0 };
                assert_eq!(
                    libc::sched_setscheduler(0, libc::SCHED_IDLE, &param),
                    0,
                    "SCHED_IDLE"
                );
            }
            for _ in 0..n {
                std::thread::sleep(std::time::Duration::from_millis(ms));
            }
        }
        Some("http") => serve_http(&args[1], args[2].parse().expect("count")),
        _ => {
            eprintln!(
                "usage: workload syscalls DIR | getpgid N [CPU] | sleeper N MS | poll MS | \
                 spin MS [CPU] | spinsleep N SPIN_MS SLEEP_MS [CPU] | execs N PROGRAM | \
                 slowcall N MS | victim N MS CPU | threads T N CPU | threadexec N alive|exited | \
                 http PORTFILE N"
            );
            std::process::exit(2);
        }
    }
}
