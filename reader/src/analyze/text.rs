//! The text form of a [`Report`]: aligned tables and BCC-style histograms.

use std::io::{self, Write};

use super::stats::{LatencyStats, Log2Hist};
use super::syscalls::SyscallCall;
use super::{Report, Section};

/// A table whose columns are sized to their widest cell; numeric columns align right.
struct Table {
    head: Vec<&'static str>,
    rows: Vec<Vec<String>>,
    left: Vec<bool>,
}

impl Table {
    fn new(head: &[&'static str]) -> Table {
        Table {
            head: head.to_vec(),
            rows: Vec::new(),
            left: vec![false; head.len()],
        }
    }

    /// Left-aligns the columns named.
    fn left(mut self, cols: &[&str]) -> Table {
        for (i, h) in self.head.iter().enumerate() {
            if cols.contains(h) {
                self.left[i] = true;
            }
        }
        self
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn write(&self, out: &mut impl Write) -> io::Result<()> {
        if self.rows.is_empty() {
            return writeln!(out, "  (none)");
        }
        let widths: Vec<usize> = (0..self.head.len())
            .map(|i| {
                self.rows
                    .iter()
                    .map(|r| r[i].chars().count())
                    .chain([self.head[i].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: Vec<&str>, out: &mut dyn Write| -> io::Result<()> {
            let mut s = String::from(" ");
            for (i, c) in cells.iter().enumerate() {
                let last = i + 1 == cells.len();
                if self.left[i] {
                    if last {
                        s.push_str(&format!(" {c}"));
                    } else {
                        s.push_str(&format!(" {c:<w$}", w = widths[i]));
                    }
                } else {
                    s.push_str(&format!(" {c:>w$}", w = widths[i]));
                }
            }
            writeln!(out, "{}", s.trim_end())
        };
        line(self.head.clone(), out)?;
        for r in &self.rows {
            line(r.iter().map(String::as_str).collect(), out)?;
        }
        Ok(())
    }
}

/// A duration for people: `812ns`, `35.2us`, `4.51ms`, `1.203s`.
pub fn fmt_ns(ns: u64) -> String {
    match ns {
        n if n < 1_000 => format!("{n}ns"),
        n if n < 1_000_000 => format!("{:.1}us", n as f64 / 1e3),
        n if n < 1_000_000_000 => format!("{:.2}ms", n as f64 / 1e6),
        n => format!("{:.3}s", n as f64 / 1e9),
    }
}

fn fmt_bytes(b: f64) -> String {
    match b {
        b if b >= (1u64 << 30) as f64 => format!("{:.1}GiB", b / (1u64 << 30) as f64),
        b if b >= (1u64 << 20) as f64 => format!("{:.1}MiB", b / (1u64 << 20) as f64),
        b if b >= 1024.0 => format!("{:.1}KiB", b / 1024.0),
        b => format!("{b:.0}B"),
    }
}

/// Timestamp relative to the window start, in seconds.
fn rel(ts: u64, begin: u64) -> String {
    format!("+{:.6}", ts.saturating_sub(begin) as f64 / 1e9)
}

fn lat_cells(l: &LatencyStats) -> Vec<String> {
    vec![
        l.count.to_string(),
        fmt_ns(l.min_ns),
        fmt_ns(l.avg_ns),
        fmt_ns(l.p50_ns),
        fmt_ns(l.p99_ns),
        fmt_ns(l.max_ns),
        fmt_ns(l.total_ns),
    ]
}

/// Writes `h` the way BCC's `print_log2_hist` does.
pub fn write_hist(h: &Log2Hist, label: &str, out: &mut impl Write) -> io::Result<()> {
    if h.buckets.is_empty() {
        return Ok(());
    }
    let max = h.buckets.iter().map(|b| b.count).max().unwrap_or(0).max(1);
    writeln!(out, "  {:>22} : count     distribution", label)?;
    for b in &h.buckets {
        let bar = (b.count * 40).div_ceil(max) as usize;
        writeln!(
            out,
            "  {:>10} -> {:<9} : {:<8} |{:<40}|",
            b.low,
            b.high,
            b.count,
            "*".repeat(bar)
        )?;
    }
    Ok(())
}

fn heading(out: &mut impl Write, title: &str) -> io::Result<()> {
    writeln!(out, "\n== {title} ==")
}

fn not_recorded<T>(s: &Section<T>, out: &mut impl Write) -> io::Result<bool> {
    if let Section::NotRecorded { reason } = s {
        writeln!(out, "  not available: {reason}")?;
        return Ok(true);
    }
    Ok(false)
}

/// The fd column: `3 /var/lib/db/wal`, `3` when nothing names it, empty for calls on no fd.
fn fd_cell(fd: Option<i64>, name: Option<&str>) -> String {
    match (fd, name) {
        (Some(fd), Some(n)) => format!("{fd} {n}"),
        (Some(fd), None) => fd.to_string(),
        (None, _) => String::new(),
    }
}

/// A table of completed calls.
fn calls_table(calls: &[SyscallCall], b: u64, out: &mut impl Write) -> io::Result<()> {
    let mut t = Table::new(&[
        "entry", "duration", "tid", "pid", "comm", "syscall", "arg0", "ret", "fd",
    ])
    .left(&["comm", "syscall", "fd"]);
    for x in calls {
        t.row(vec![
            rel(x.entry_ns, b),
            fmt_ns(x.duration_ns),
            x.tid.to_string(),
            x.pid.to_string(),
            x.comm.clone(),
            x.syscall.clone(),
            x.arg0.to_string(),
            x.ret.to_string(),
            fd_cell(x.fd, x.fd_name.as_deref()),
        ]);
    }
    t.write(out)
}

/// Writes the text form of `r`.
pub fn render(r: &Report, out: &mut impl Write) -> io::Result<()> {
    let b = r.window.begin_ns;
    writeln!(
        out,
        "snapshot {} ({}) on {}, kernel {}; trigger {}: {}",
        r.snapshot.id,
        r.snapshot.name,
        r.snapshot.hostname,
        r.snapshot.kernel,
        r.snapshot.trigger_source,
        r.snapshot.trigger_reason
    )?;
    writeln!(
        out,
        "window   {} .. {} ns (CLOCK_MONOTONIC), {} long, {} events; times below are relative to its start",
        r.window.begin_ns,
        r.window.end_ns,
        fmt_ns(r.window.duration_ns),
        r.window.events
    )?;
    writeln!(
        out,
        "began    {} UTC",
        schemas::clock::utc_stamp(r.window.begin_realtime_ns)
    )?;
    for w in &r.warnings {
        writeln!(out, "warning  {w}")?;
    }
    let c = &r.completeness;
    if c.complete {
        writeln!(out, "complete no record overwritten or lost")?;
    } else {
        writeln!(
            out,
            "complete NO: {} records overwritten, {} lost; every CPU is covered only from {}",
            c.overwritten,
            c.lost,
            rel(c.all_cpus_from_ns, b)
        )?;
    }
    let rc = &r.recorder;
    if !rc.pids.is_empty() {
        let cpu = rc
            .on_cpu_ns
            .map_or_else(String::new, |ns| format!(", {} on CPU", fmt_ns(ns)));
        writeln!(
            out,
            "recorder pid {:?}: {} events{cpu} in the window; {}",
            rc.pids,
            rc.events,
            if rc.included {
                "ranked with the others (--include-recorder)"
            } else {
                "left out of the rankings (--include-recorder puts it back)"
            }
        )?;
    }
    if !r.filter.is_empty() {
        writeln!(
            out,
            "filter   pids {:?} tids {:?} comms {:?} cgroups {:?}",
            r.filter.pids, r.filter.tids, r.filter.comms, r.filter.cgroups
        )?;
    }

    heading(out, "Findings")?;
    if r.findings.is_empty() {
        writeln!(out, "  nothing stands out")?;
    }
    for (i, f) in r.findings.iter().enumerate() {
        writeln!(out, "  {}. {}", i + 1, f.text)?;
    }
    if let Some(s) = &r.story {
        heading(out, "The request")?;
        super::story::text::render(s, b, out)?;
    }

    heading(out, "Syscalls")?;
    if !not_recorded(&r.syscalls, out)?
        && let Section::Ok(s) = &r.syscalls
    {
        writeln!(
            out,
            "  {} calls, {} errors, {} exits without their entry",
            s.calls, s.errors, s.unmatched_exits
        )?;
        let mut t = Table::new(&[
            "syscall", "count", "errors", "min", "avg", "p50", "p99", "max", "total",
        ])
        .left(&["syscall"]);
        for x in &s.by_syscall {
            let mut row = vec![x.name.clone()];
            let l = lat_cells(&x.latency);
            row.push(l[0].clone());
            row.push(x.errors.to_string());
            row.extend_from_slice(&l[1..]);
            t.row(row);
        }
        t.write(out)?;
        writeln!(
            out,
            "\n  Per process (most time in working syscalls first, then in waits):"
        )?;
        let mut t = Table::new(&[
            "pid",
            "comm",
            "calls",
            "errors",
            "work",
            "waits",
            "top syscalls",
        ])
        .left(&["comm", "top syscalls"]);
        for p in &s.by_process {
            let tops: Vec<String> = p
                .syscalls
                .iter()
                .take(3)
                .map(|x| {
                    format!(
                        "{} {}x {}",
                        x.name,
                        x.latency.count,
                        fmt_ns(x.latency.total_ns)
                    )
                })
                .collect();
            t.row(vec![
                p.pid.to_string(),
                p.comm.clone(),
                p.count.to_string(),
                p.errors.to_string(),
                fmt_ns(p.work_ns),
                fmt_ns(p.total_ns - p.work_ns),
                tops.join(", "),
            ]);
        }
        t.write(out)?;
        writeln!(
            out,
            "\n  Slowest work calls (waits for an event are listed apart, below):"
        )?;
        calls_table(&s.slowest_work, b, out)?;
        writeln!(
            out,
            "\n  Slowest waits (idle loops and parked threads wait by design):"
        )?;
        calls_table(&s.slowest_waits, b, out)?;
        for (list, what) in [
            (&s.in_flight_work, "working"),
            (&s.in_flight_waits, "waiting"),
        ] {
            if list.is_empty() {
                continue;
            }
            writeln!(
                out,
                "\n  Still in a syscall at the end of the window, {what}:"
            )?;
            let mut t = Table::new(&[
                "entry", "elapsed", "tid", "pid", "comm", "syscall", "arg0", "fd",
            ])
            .left(&["comm", "syscall", "fd"]);
            for x in list {
                t.row(vec![
                    rel(x.entry_ns, b),
                    fmt_ns(x.elapsed_ns),
                    x.tid.to_string(),
                    x.pid.to_string(),
                    x.comm.clone(),
                    x.syscall.clone(),
                    x.arg0.to_string(),
                    fd_cell(x.fd, x.fd_name.as_deref()),
                ]);
            }
            t.write(out)?;
        }
        writeln!(out)?;
        write_hist(&s.histogram, "syscall usecs", out)?;
    }

    heading(out, "CPU")?;
    if !not_recorded(&r.cpu, out)?
        && let Section::Ok(c) = &r.cpu
    {
        let mut t = Table::new(&["cpu", "usage", "busy", "covered", "switches", "busiest"])
            .left(&["busiest"]);
        for u in &c.per_cpu {
            let tops: Vec<String> = u
                .top
                .iter()
                .take(3)
                .map(|x| format!("{}[{}] {:.1}%", x.comm, x.tid, x.pct))
                .collect();
            t.row(vec![
                u.cpu.to_string(),
                format!("{:.1}%", u.usage_pct),
                fmt_ns(u.busy_ns),
                fmt_ns(u.covered_ns),
                u.switches.to_string(),
                tops.join(", "),
            ]);
        }
        t.write(out)?;
        writeln!(out, "\n  Per process (share of one CPU over the window):")?;
        let mut t = Table::new(&["pid", "comm", "on cpu", "share", "threads", "cgroup"])
            .left(&["comm", "cgroup"]);
        for p in &c.by_process {
            t.row(vec![
                p.time.pid.to_string(),
                p.time.comm.clone(),
                fmt_ns(p.time.on_cpu_ns),
                format!("{:.1}%", p.time.pct),
                p.threads.to_string(),
                p.cgroup.clone().unwrap_or_else(|| "?".into()),
            ]);
        }
        t.write(out)?;
        writeln!(out, "\n  Per thread:")?;
        let mut t = Table::new(&[
            "tid",
            "pid",
            "comm",
            "on cpu",
            "share",
            "in",
            "preempted",
            "blocked",
        ])
        .left(&["comm"]);
        for x in &c.by_thread {
            t.row(vec![
                x.time.tid.to_string(),
                x.time.pid.to_string(),
                x.time.comm.clone(),
                fmt_ns(x.time.on_cpu_ns),
                format!("{:.1}%", x.time.pct),
                x.switches_in.to_string(),
                x.preempted.to_string(),
                x.blocked.to_string(),
            ]);
        }
        t.write(out)?;
    }

    heading(out, "Scheduling latency (wakeup -> running)")?;
    if !not_recorded(&r.sched, out)?
        && let Section::Ok(s) = &r.sched
    {
        let mut t = Table::new(&["wakeups", "min", "avg", "p50", "p99", "max", "total"]);
        t.row(lat_cells(&s.latency));
        t.write(out)?;
        writeln!(out)?;
        write_hist(&s.histogram, "wakeup usecs", out)?;
        writeln!(out, "\n  Per cgroup (worst p99 first):")?;
        let mut t = Table::new(&[
            "cgroup", "wakeups", "min", "avg", "p50", "p99", "max", "total",
        ])
        .left(&["cgroup"]);
        for g in &s.by_cgroup {
            let mut row = vec![g.cgroup.clone()];
            row.extend(lat_cells(&g.latency));
            t.row(row);
        }
        t.write(out)?;
        writeln!(out, "\n  Per process (worst p99 first):")?;
        let mut t = Table::new(&[
            "pid", "comm", "wakeups", "min", "avg", "p50", "p99", "max", "total",
        ])
        .left(&["comm"]);
        for g in &s.by_process {
            let mut row = vec![
                g.pid.unwrap_or(0).to_string(),
                g.comm.clone().unwrap_or_default(),
            ];
            row.extend(lat_cells(&g.latency));
            t.row(row);
        }
        t.write(out)?;
        let a = &s.delay_ns;
        writeln!(
            out,
            "\n  Waiting charged to: same cgroup {}, other cgroups {}, system {}, unknown {}",
            fmt_ns(a.same_cgroup),
            fmt_ns(a.other_cgroup),
            fmt_ns(a.system),
            fmt_ns(a.unknown)
        )?;
        let p = &s.preemptions;
        writeln!(
            out,
            "  Preemptions by: same cgroup {}, other cgroups {}, system {}, unknown {}",
            p.same_cgroup, p.other_cgroup, p.system, p.unknown
        )?;
        for v in s.by_victim_cgroup.iter().take(r_top(r)) {
            writeln!(out, "\n  Victims in {}:", v.cgroup)?;
            let mut t = Table::new(&["delayed by", "class", "waiting caused"])
                .left(&["delayed by", "class"]);
            for c in &v.top_delayers {
                t.row(vec![
                    format!("{} ({})", c.comm, c.cgroup),
                    c.class.into(),
                    fmt_ns(c.value),
                ]);
            }
            t.write(out)?;
            let mut t =
                Table::new(&["preempted by", "class", "times"]).left(&["preempted by", "class"]);
            for c in &v.top_preemptors {
                t.row(vec![
                    format!("{} ({})", c.comm, c.cgroup),
                    c.class.into(),
                    c.value.to_string(),
                ]);
            }
            t.write(out)?;
        }
        writeln!(out, "\n  Worst wakeups:")?;
        let mut t = Table::new(&["wakeup", "latency", "tid", "comm", "cpu", "delayed by"])
            .left(&["comm", "delayed by"]);
        for w in &s.worst {
            let by: Vec<String> = w
                .delayed_by
                .iter()
                .map(|d| format!("{}[{}] {}", d.comm, d.tid, fmt_ns(d.ns)))
                .collect();
            t.row(vec![
                rel(w.wakeup_ns, b),
                fmt_ns(w.latency_ns),
                w.tid.to_string(),
                w.comm.clone(),
                format!("{}->{}", w.target_cpu, w.cpu),
                by.join(", "),
            ]);
        }
        t.write(out)?;
    }

    heading(out, "Block I/O")?;
    if !not_recorded(&r.block, out)?
        && let Section::Ok(s) = &r.block
    {
        writeln!(
            out,
            "  {} requests completed, {} still in flight",
            s.requests, s.in_flight
        )?;
        let mut t = Table::new(&[
            "dev",
            "reqs",
            "min",
            "avg",
            "p50",
            "p99",
            "max",
            "read/s",
            "write/s",
            "depth max",
            "depth avg",
        ])
        .left(&["dev"]);
        for d in &s.devices {
            let l = lat_cells(&d.latency);
            t.row(vec![
                d.dev.clone(),
                l[0].clone(),
                l[1].clone(),
                l[2].clone(),
                l[3].clone(),
                l[4].clone(),
                l[5].clone(),
                fmt_bytes(d.read_bytes_per_s),
                fmt_bytes(d.write_bytes_per_s),
                d.max_queue_depth.to_string(),
                format!("{:.2}", d.avg_queue_depth),
            ]);
        }
        t.write(out)?;
        for d in &s.devices {
            writeln!(out)?;
            write_hist(&d.histogram, &format!("{} usecs", d.dev), out)?;
        }
        writeln!(out, "\n  Slowest requests:")?;
        let mut t = Table::new(&[
            "issue", "latency", "dev", "rwbs", "sector", "bytes", "tid", "comm",
        ])
        .left(&["dev", "rwbs", "comm"]);
        for q in &s.slowest {
            t.row(vec![
                rel(q.issue_ns, b),
                fmt_ns(q.latency_ns),
                q.dev.clone(),
                q.rwbs.clone(),
                q.sector.to_string(),
                q.bytes.to_string(),
                q.tid.to_string(),
                q.comm.clone(),
            ]);
        }
        t.write(out)?;
    }

    heading(out, "Interrupts")?;
    if !not_recorded(&r.irq, out)?
        && let Section::Ok(s) = &r.irq
    {
        let mut t = Table::new(&[
            "irq", "name", "count", "min", "avg", "p50", "p99", "max", "total",
        ])
        .left(&["name"]);
        for h in &s.hard {
            let mut row = vec![h.irq.to_string(), h.name.clone()];
            row.extend(lat_cells(&h.duration));
            t.row(row);
        }
        t.write(out)?;
        writeln!(out)?;
        let mut t = Table::new(&[
            "vec", "softirq", "count", "min", "avg", "p50", "p99", "max", "total",
        ])
        .left(&["softirq"]);
        for h in &s.soft {
            let mut row = vec![h.vec.to_string(), h.name.clone()];
            row.extend(lat_cells(&h.duration));
            t.row(row);
        }
        t.write(out)?;
    }

    heading(out, "Processes")?;
    if !not_recorded(&r.processes, out)?
        && let Section::Ok(p) = &r.processes
    {
        writeln!(
            out,
            "  {} forks, {} new threads, {} execs, {} exits, {} short-lived (forked and exited in the window)",
            p.forks, p.threads, p.execs, p.exits, p.short_lived
        )?;
        let mut t = Table::new(&["time", "event", "pid", "ppid", "comm", "parent", "detail"])
            .left(&["event", "comm", "parent", "detail"]);
        let shown = r_top(r).max(50);
        for e in p.log.iter().take(shown) {
            let detail = match (&e.filename, e.lifetime_ns) {
                (Some(f), _) => f.clone(),
                (None, Some(l)) => format!("lived {}", fmt_ns(l)),
                _ => String::new(),
            };
            t.row(vec![
                rel(e.ts_ns, b),
                e.event.into(),
                e.pid.to_string(),
                e.ppid.to_string(),
                e.comm.clone(),
                e.parent_comm.clone(),
                detail,
            ]);
        }
        t.write(out)?;
        let more = p.log.len().saturating_sub(shown) as u64 + p.truncated;
        if more > 0 {
            writeln!(out, "  ... {more} more (see --json)")?;
        }
    }
    out.flush()
}

/// The `--top` in effect, recovered from the report's list lengths is not reliable; the text
/// form shows every entry the report kept, so this only bounds the per-victim breakdowns.
fn r_top(r: &Report) -> usize {
    r.sched.ok().map_or(10, |s| s.by_process.len().max(10))
}
