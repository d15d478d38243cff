//! Planted behaviour for the privileged tests: makes an exactly known sequence of syscalls.
//!
//! ```text
//! workload syscalls DIR      1000 getppid(MAGIC+i), nanosleep 20 ms, write 64 KiB + fsync in DIR
//! workload getppid N [CPU]   N getppid(MAGIC+i), optionally pinned to CPU
//! workload sleeper N MS      N times: sleep MS milliseconds
//! ```
//!
//! Every getppid passes `MAGIC + i` as its first argument (ignored by the kernel, recorded by
//! flightrec), so tests can find each call and check order, gaps and duplicates.

use std::ffi::CString;

/// First argument of the i-th getppid is `MAGIC + i`.
const MAGIC: u64 = 0xF11E_0000_0000;

fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET stays in bounds for cpu < 1024.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            panic!("sched_setaffinity({cpu}) failed");
        }
    }
}

fn getppid_loop(n: u64) {
    for i in 0..n {
        // SAFETY: getppid ignores its arguments.
        unsafe { libc::syscall(libc::SYS_getppid, MAGIC + i) };
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
                getppid_loop(1000);
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
        Some("getppid") => {
            let n: u64 = args[1].parse().expect("count");
            if let Some(cpu) = args.get(2) {
                pin_to_cpu(cpu.parse().expect("cpu"));
            }
            getppid_loop(n);
        }
        Some("sleeper") => {
            let n: u32 = args[1].parse().expect("count");
            let ms: u64 = args[2].parse().expect("ms");
            for _ in 0..n {
                std::thread::sleep(std::time::Duration::from_millis(ms));
            }
        }
        _ => {
            eprintln!("usage: workload syscalls DIR | getppid N [CPU] | sleeper N MS");
            std::process::exit(2);
        }
    }
}
