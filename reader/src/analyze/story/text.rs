//! The story as text: a few lines under the findings, before the system-wide tables.

use std::io::{self, Write};

use super::{Story, WokenBy};
use crate::analyze::fds::fd_label;
use crate::analyze::text::fmt_ns;

fn woke(w: &WokenBy) -> String {
    match w {
        WokenBy::Thread(x) => format!("woken by {} ({})", x.comm, x.tid),
        WokenBy::Irq { irq, name } => format!("woken by irq {irq} ({name})"),
        WokenBy::Softirq { name } => format!("woken by softirq {name}"),
        WokenBy::Nobody => "no waker seen".into(),
    }
}

/// Writes the story of `s`; times are relative to `begin` (the window's start).
pub fn render(s: &Story, begin: u64, out: &mut impl Write) -> io::Result<()> {
    let rel = |t: u64| fmt_ns(t.saturating_sub(begin));
    let cg = s
        .who
        .cgroup
        .as_deref()
        .map_or(String::new(), |c| format!(", cgroup {c}"));
    writeln!(
        out,
        "  {} ({}): {} pid {} tid {}{cg}, from +{} ({} UTC) for {}",
        s.what,
        s.source,
        s.who.comm,
        s.who.pid,
        s.who.tid,
        rel(s.begin_ns),
        schemas::clock::utc_stamp(s.begin_realtime_ns),
        fmt_ns(s.duration_ns)
    )?;
    writeln!(
        out,
        "  ran {} (interrupts {}), runnable {} (interrupts meanwhile {}), blocked {}, not seen {}",
        fmt_ns(s.running_ns),
        fmt_ns(s.interrupted_ns),
        fmt_ns(s.runnable_ns),
        fmt_ns(s.waited_interrupts_ns),
        fmt_ns(s.blocked_ns),
        fmt_ns(s.unknown_ns)
    )?;
    for b in &s.blocked {
        let fd = b.fd.map_or(String::new(), |fd| {
            format!(" {}", fd_label(fd, b.fd_name.as_deref()))
        });
        let mut how = if b.timed_out {
            "timed out, nothing answered".to_owned()
        } else {
            woke(&b.woken_by)
        };
        if let Some(fd) = b.ready_fd {
            let conn = if b.ready_fd_connected {
                ", a connection it opened"
            } else {
                ""
            };
            how.push_str(&format!(
                "; then read {}{conn}",
                fd_label(fd, b.ready_fd_name.as_deref())
            ));
        }
        let io = b.own_io.as_ref().map_or(String::new(), |io| {
            format!(
                "; {} requests on {}, up to {}",
                io.requests,
                io.device,
                fmt_ns(io.max_ns)
            )
        });
        writeln!(
            out,
            "  blocked {} at +{} in {}{fd}: {how}{io}",
            fmt_ns(b.duration_ns),
            rel(b.begin_ns),
            b.syscall.as_deref().unwrap_or("(no syscall)"),
        )?;
        for l in &b.chain {
            let io = l.io.as_ref().map_or(String::new(), |io| {
                format!(
                    ", {} requests on {} up to {}",
                    io.requests,
                    io.device,
                    fmt_ns(io.max_ns)
                )
            });
            writeln!(
                out,
                "    <- {} ({}) meanwhile ran {}, runnable {}, blocked {}{}{io}",
                l.who.comm,
                l.who.tid,
                fmt_ns(l.running_ns),
                fmt_ns(l.runnable_ns),
                fmt_ns(l.blocked_ns),
                l.syscall.as_deref().map_or(String::new(), |s| format!(
                    " mostly in {s}{}",
                    l.fd.map_or(String::new(), |fd| format!(
                        " on {}",
                        fd_label(fd, l.fd_name.as_deref())
                    ))
                )),
            )?;
        }
    }
    for g in s
        .ran_instead_groups
        .iter()
        .filter(|g| g.threads >= 2)
        .take(2)
    {
        let what = match g.kind {
            "cgroup" => format!("{} threads of cgroup {}", g.threads, g.name),
            _ => format!("{} processes started by {}", g.threads, g.name),
        };
        writeln!(out, "  ran instead: {what} {}", fmt_ns(g.ns))?;
    }
    for r in s.ran_instead.iter().take(3) {
        let cg = r
            .who
            .cgroup
            .as_deref()
            .map_or(String::new(), |c| format!(" [{c}]"));
        writeln!(
            out,
            "  ran instead: {} ({}){cg} {}",
            r.who.comm,
            r.who.tid,
            fmt_ns(r.ns)
        )?;
    }
    for x in s.stolen.iter().take(3) {
        writeln!(out, "  interrupted by {} {}", x.name, fmt_ns(x.ns))?;
    }
    let calls: Vec<String> = s
        .calls
        .iter()
        .take(5)
        .map(|c| format!("{} x{} {}", c.syscall, c.count, fmt_ns(c.total_ns)))
        .collect();
    if !calls.is_empty() {
        writeln!(out, "  syscalls: {}", calls.join(", "))?;
    }
    if s.forks > 0 {
        writeln!(out, "  started {} processes", s.forks)?;
    }
    Ok(())
}
