//! Which syscalls are *waits* and which are *work*.
//!
//! A wait blocks until an event happens: a readiness or timer (`epoll_wait`, `poll`, `select`,
//! `nanosleep`), another thread (`futex` with a wait operation), a child (`wait4`), a
//! connection (`accept`), a signal (`pause`, `rt_sigsuspend`) or a message (`msgrcv`). Idle
//! event loops, parked pool workers and shells spend their lives in them, so their duration
//! says nothing about a problem by itself. Everything else is work: I/O, `fsync`, `mmap`...,
//! whose duration is time the caller could not do anything else. `io_uring_enter` stays work:
//! whether it waits depends on its flags and submissions, and the fsync it submits is work.
//!
//! `exit` and `exit_group` never return by design, so they are never "still in a syscall".

/// `FUTEX_CMD_MASK`: the operation without `FUTEX_PRIVATE_FLAG` (128) and
/// `FUTEX_CLOCK_REALTIME` (256).
const FUTEX_CMD_MASK: u64 = 0x7f;
/// futex operations that sleep until woken: `FUTEX_WAIT` (0), `FUTEX_LOCK_PI` (6),
/// `FUTEX_WAIT_BITSET` (9), `FUTEX_WAIT_REQUEUE_PI` (11), `FUTEX_LOCK_PI2` (13).
const FUTEX_WAIT_OPS: [u64; 5] = [0, 6, 9, 11, 13];

/// Syscalls that always wait for an event, by x86-64 name.
const WAITS: &[&str] = &[
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "poll",
    "ppoll",
    "select",
    "pselect6",
    "futex_waitv",
    "nanosleep",
    "clock_nanosleep",
    "wait4",
    "waitid",
    "accept",
    "accept4",
    "pause",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "msgrcv",
];

/// Whether a call of syscall `name` with second argument `arg1` waits for an event.
pub fn is_wait(name: &str, arg1: u64) -> bool {
    if name == "futex" {
        return FUTEX_WAIT_OPS.contains(&(arg1 & FUTEX_CMD_MASK));
    }
    WAITS.contains(&name)
}

/// Whether syscall `name` ends the thread instead of returning.
pub fn never_returns(name: &str) -> bool {
    matches!(name, "exit" | "exit_group")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_and_work() {
        // (syscall, args[1], wait?)
        let table: &[(&str, u64, bool)] = &[
            ("epoll_wait", 0, true),
            ("epoll_pwait", 0, true),
            ("epoll_pwait2", 0, true),
            ("poll", 0, true),
            ("ppoll", 0, true),
            ("select", 0, true),
            ("pselect6", 0, true),
            ("nanosleep", 0, true),
            ("clock_nanosleep", 0, true),
            ("wait4", 0, true),
            ("waitid", 0, true),
            ("accept", 0, true),
            ("accept4", 0, true),
            ("pause", 0, true),
            ("rt_sigsuspend", 0, true),
            ("rt_sigtimedwait", 0, true),
            ("msgrcv", 0, true),
            ("futex_waitv", 0, true),
            // FUTEX_WAIT, FUTEX_WAIT|PRIVATE, FUTEX_WAIT_BITSET|PRIVATE|CLOCK_REALTIME,
            // FUTEX_LOCK_PI, FUTEX_WAIT_REQUEUE_PI|PRIVATE, FUTEX_LOCK_PI2.
            ("futex", 0, true),
            ("futex", 128, true),
            ("futex", 9 | 128 | 256, true),
            ("futex", 6, true),
            ("futex", 11 | 128, true),
            ("futex", 13, true),
            // FUTEX_WAKE, FUTEX_WAKE|PRIVATE, FUTEX_REQUEUE, FUTEX_UNLOCK_PI, FUTEX_WAKE_OP.
            ("futex", 1, false),
            ("futex", 129, false),
            ("futex", 3, false),
            ("futex", 7, false),
            ("futex", 5, false),
            ("fdatasync", 0, false),
            ("fsync", 0, false),
            ("read", 0, false),
            ("write", 0, false),
            ("io_uring_enter", 0, false),
            ("connect", 0, false),
            ("exit_group", 0, false),
        ];
        for &(name, arg1, wait) in table {
            assert_eq!(is_wait(name, arg1), wait, "{name} with args[1] = {arg1}");
        }
    }

    #[test]
    fn exits_never_return() {
        assert!(never_returns("exit_group"));
        assert!(never_returns("exit"));
        assert!(!never_returns("fsync"));
        assert!(!never_returns("epoll_wait"));
    }
}
