//! From the tracked intervals to the [`Story`]: totals, blocked stretches with their wakers
//! and wakeup chains, who ran instead, interrupt time, and the one-sentence verdict.

use std::collections::HashMap;

use schemas::event::syscall_name;

use super::track::{IrqTime, State, Tracker, Waker};
use super::{
    Blocked, CallTime, IoSummary, Link, RanInstead, RanInsteadGroup, Segment, Span, Stolen, Story,
    Subject, Who, WokenBy,
};
use crate::analyze::irq::SOFTIRQ_NAMES;
use crate::analyze::text::fmt_ns;
use crate::analyze::{Disks, Tasks};

/// Most timeline stretches kept.
pub const MAX_SEGMENTS: usize = 2000;
/// Most blocked stretches listed.
const MAX_BLOCKED: usize = 5;
/// Longest wakeup chain followed.
const MAX_CHAIN: usize = 4;

use crate::analyze::fds::{FD_FIRST, FdNames, fd_arg, fd_label};

/// Syscalls that read from the fd in their first argument.
const READS: &[&str] = &[
    "read", "readv", "pread64", "preadv", "preadv2", "recvfrom", "recvmsg", "recvmmsg",
];

/// What a readiness wait that ended at `end` waited for: the fd the subject read from next,
/// and whether it had connected that fd itself earlier in the span.
fn ready(t: &Tracker, end: u64) -> (Option<i64>, bool) {
    let fd = t
        .calls
        .iter()
        .filter(|c| c.entry_ns >= end)
        .min_by_key(|c| c.entry_ns)
        .filter(|c| READS.contains(&name_of(c.nr).as_str()))
        .map(|c| c.arg0 as i64);
    let connected = fd.is_some_and(|fd| {
        t.calls
            .iter()
            .any(|c| c.entry_ns < end && c.arg0 as i64 == fd && name_of(c.nr) == "connect")
    });
    (fd, connected)
}

/// Readiness waits that return 0 on a timeout.
const TIMEOUT_ZERO: &[&str] = &[
    "poll",
    "ppoll",
    "select",
    "pselect6",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
];

fn name_of(nr: u64) -> String {
    syscall_name(nr).map_or_else(|| format!("syscall_{nr}"), str::to_owned)
}

fn pct(part: u64, whole: u64) -> u64 {
    (part * 100).checked_div(whole).unwrap_or(0)
}

/// What the story needs besides the tracker.
pub(crate) struct Inputs<'a> {
    pub tasks: &'a Tasks,
    pub disks: &'a Disks,
    pub realtime_minus_monotonic_ns: i64,
    pub periods: u64,
    pub fds: &'a FdNames,
}

fn who(tasks: &Tasks, tid: u32) -> Who {
    let pid = tasks.pid_of(tid);
    Who {
        tid,
        pid,
        comm: tasks.comm(tid).to_owned(),
        cgroup: tasks.cgroup_of(pid).map(str::to_owned),
    }
}

fn woken_by(t: &Tracker, tasks: &Tasks, w: Option<Waker>) -> WokenBy {
    match w {
        Some(Waker::Thread(0)) | None => WokenBy::Nobody,
        Some(Waker::Thread(tid)) => WokenBy::Thread(who(tasks, tid)),
        Some(Waker::Irq(irq)) => WokenBy::Irq {
            irq,
            name: t.irq_names.get(&irq).cloned().unwrap_or_default(),
        },
        Some(Waker::Softirq(v)) => WokenBy::Softirq {
            name: SOFTIRQ_NAMES
                .get(v as usize)
                .map_or_else(|| format!("vec {v}"), |s| (*s).to_owned()),
        },
    }
}

/// Block requests matching `keep` and overlapping `[a, b]`, on their busiest device.
fn io_summary(
    t: &Tracker,
    a: u64,
    b: u64,
    disks: &Disks,
    keep: impl Fn(u32) -> bool,
) -> Option<IoSummary> {
    // Per device: the summary, and the first issue and last completion.
    let mut per_dev: HashMap<u32, (IoSummary, u64, u64)> = HashMap::new();
    for io in &t.ios {
        if !keep(io.tid) || io.complete_ns < a || io.issue_ns > b {
            continue;
        }
        let (s, first, last) =
            per_dev
                .entry(io.dev)
                .or_insert((IoSummary::default(), io.issue_ns, io.complete_ns));
        s.requests += 1;
        s.bytes += u64::from(io.bytes);
        s.max_ns = s.max_ns.max(io.complete_ns - io.issue_ns);
        *first = (*first).min(io.issue_ns);
        *last = (*last).max(io.complete_ns);
    }
    let (dev, (mut s, first, last)) = per_dev
        .into_iter()
        .max_by_key(|(d, (s, _, _))| (s.max_ns, *d))?;
    s.busy_ns = last - first;
    s.device = disks.name(dev);
    Some(s)
}

/// The chain of wakers back from `waker`, over `[begin, end]`.
fn chain(
    t: &Tracker,
    by_tid: &HashMap<u32, Vec<usize>>,
    inp: &Inputs,
    subject: u32,
    mut waker: Option<Waker>,
    begin: u64,
    mut end: u64,
) -> Vec<Link> {
    let mut out: Vec<Link> = Vec::new();
    while out.len() < MAX_CHAIN {
        let Some(Waker::Thread(tid)) = waker else {
            break;
        };
        if tid == 0 || tid == subject || out.iter().any(|l| l.who.tid == tid) || end <= begin {
            break;
        }
        let span = Span { begin, end };
        let (mut run, mut rq, mut blk) = (0, 0, 0);
        // Per syscall: time, and the entry and first argument of its call that took most.
        let mut calls: HashMap<u64, (u64, u64, u64, u64)> = HashMap::new();
        let mut longest: Option<usize> = None;
        for &i in by_tid.get(&tid).map(Vec::as_slice).unwrap_or(&[]) {
            let iv = &t.intervals[i];
            let ns = span.overlap(iv.start, iv.end);
            if ns == 0 {
                continue;
            }
            match iv.state {
                State::Running => run += ns,
                State::Runnable => rq += ns,
                State::Blocked => {
                    blk += ns;
                    if longest.is_none_or(|l| t.intervals[l].end - t.intervals[l].start < ns) {
                        longest = Some(i);
                    }
                }
            }
            if let Some(c) = iv.call {
                let e = calls.entry(c.nr).or_default();
                e.0 += ns;
                if ns > e.1 {
                    *e = (e.0, ns, c.entry_ns, c.arg0);
                }
            }
        }
        let top = calls
            .into_iter()
            .max_by_key(|&(nr, (ns, ..))| (ns, nr))
            .map(|(nr, (_, _, entry, arg0))| (name_of(nr), entry, arg0));
        let fd = top.as_ref().and_then(|(n, _, arg0)| fd_arg(n, *arg0));
        let fd_name = match (&top, fd) {
            (Some((_, entry, _)), Some(fd)) => inp.fds.name_at(inp.tasks.pid_of(tid), fd, *entry),
            _ => None,
        };
        let syscall = top.map(|(n, ..)| n);
        if run + rq + blk == 0 {
            // A thread with no scheduling events in the span (a kernel worker that woke it
            // from a context the trace does not show): nothing more to tell.
            break;
        }
        let io = io_summary(t, begin, end, inp.disks, |x| x == tid);
        out.push(Link {
            who: who(inp.tasks, tid),
            begin_ns: begin,
            end_ns: end,
            running_ns: run,
            runnable_ns: rq,
            blocked_ns: blk,
            syscall,
            fd,
            fd_name,
            io,
        });
        // Follow on only while this link itself mostly waited for someone else.
        match longest {
            Some(l) if blk * 2 >= span.len() => {
                waker = t.intervals[l].waker;
                end = t.intervals[l].end;
            }
            _ => break,
        }
    }
    out
}

/// Builds the story of `subject` from a finished tracker.
pub(crate) fn build(t: &Tracker, subject: &Subject, inp: &Inputs) -> Story {
    let span = subject.span;
    let mut by_tid: HashMap<u32, Vec<usize>> = HashMap::new();
    let mut by_cpu: HashMap<u32, Vec<usize>> = HashMap::new();
    for (i, iv) in t.intervals.iter().enumerate() {
        by_tid.entry(iv.tid).or_default().push(i);
        if iv.state == State::Running {
            by_cpu.entry(iv.cpu).or_default().push(i);
        }
    }
    let mine: Vec<usize> = by_tid.get(&subject.tid).cloned().unwrap_or_default();
    let (mut running, mut runnable, mut blocked) = (0u64, 0u64, 0u64);
    let mut irq = IrqTime::default();
    let mut waited_irq = IrqTime::default();
    let mut timeline = Vec::new();
    let mut instead: HashMap<u32, u64> = HashMap::new();
    for (k, &i) in mine.iter().enumerate() {
        let iv = &t.intervals[i];
        let ns = iv.end - iv.start;
        match iv.state {
            State::Running => {
                running += ns;
                irq.add(&iv.irq);
            }
            State::Runnable => {
                runnable += ns;
                // The CPU it got next is the one it queued on.
                let cpu = mine[k + 1..]
                    .iter()
                    .map(|&j| &t.intervals[j])
                    .find(|j| j.state == State::Running)
                    .map_or(iv.cpu, |j| j.cpu);
                for &j in by_cpu.get(&cpu).map(Vec::as_slice).unwrap_or(&[]) {
                    let o = &t.intervals[j];
                    let ov = Span {
                        begin: iv.start,
                        end: iv.end,
                    }
                    .overlap(o.start, o.end);
                    if ov > 0 && o.tid != subject.tid {
                        *instead.entry(o.tid).or_default() += ov;
                        // The interrupts in that thread's run, pro rata of the overlap.
                        waited_irq.add_share(&o.irq, ov, o.end - o.start);
                    }
                }
            }
            State::Blocked => blocked += ns,
        }
        if timeline.len() < MAX_SEGMENTS {
            timeline.push(Segment {
                state: match iv.state {
                    State::Running => "running",
                    State::Runnable => "runnable",
                    State::Blocked => "blocked",
                },
                begin_ns: iv.start,
                end_ns: iv.end,
                cpu: iv.cpu,
                syscall: iv.call.map(|c| name_of(c.nr)),
            });
        }
    }

    // The blocked stretches, longest first.
    let mut spells: Vec<usize> = mine
        .iter()
        .copied()
        .filter(|&i| t.intervals[i].state == State::Blocked)
        .collect();
    spells.sort_by_key(|&i| std::cmp::Reverse(t.intervals[i].end - t.intervals[i].start));
    let blocked_list: Vec<Blocked> = spells
        .iter()
        .take(MAX_BLOCKED)
        .map(|&i| {
            let iv = &t.intervals[i];
            let name = iv.call.map(|c| name_of(c.nr));
            let call = iv.call.and_then(|c| {
                t.calls
                    .iter()
                    .find(|d| d.entry_ns == c.entry_ns && d.nr == c.nr)
            });
            let ret = call.map(|c| c.ret);
            let timed_out =
                ret == Some(0) && name.as_deref().is_some_and(|n| TIMEOUT_ZERO.contains(&n));
            let fd = match (&name, iv.call) {
                (Some(n), Some(c)) if FD_FIRST.contains(&n.as_str()) => Some(c.arg0 as i64),
                _ => None,
            };
            let from = iv.call.map_or(iv.start, |c| c.entry_ns);
            let readiness = name.as_deref().is_some_and(|n| TIMEOUT_ZERO.contains(&n));
            let (ready_fd, ready_fd_connected) = match ret {
                Some(n) if readiness && n > 0 => ready(t, iv.end),
                _ => (None, false),
            };
            let pid = inp.tasks.pid_of(subject.tid);
            let fd_name = fd.and_then(|fd| inp.fds.name_at(pid, fd, from));
            let ready_fd_name = ready_fd.and_then(|fd| inp.fds.name_at(pid, fd, iv.end));
            Blocked {
                begin_ns: iv.start,
                duration_ns: iv.end - iv.start,
                syscall: name,
                fd,
                fd_name,
                ret,
                timed_out,
                woken_by: woken_by(t, inp.tasks, iv.waker),
                own_io: io_summary(t, from, iv.end, inp.disks, |x| x == subject.tid),
                disk: io_summary(t, iv.start, iv.end, inp.disks, |_| true),
                ready_fd,
                ready_fd_name,
                ready_fd_connected,
                chain: chain(t, &by_tid, inp, subject.tid, iv.waker, iv.start, iv.end),
            }
        })
        .collect();

    let ran_instead_groups = groups(t, inp.tasks, subject.tid, &instead);
    let mut ran_instead: Vec<RanInstead> = instead
        .into_iter()
        .map(|(tid, ns)| RanInstead {
            who: who(inp.tasks, tid),
            ns,
        })
        .collect();
    ran_instead.sort_by_key(|r| (std::cmp::Reverse(r.ns), r.who.tid));
    ran_instead.truncate(5);

    let mut stolen = Vec::new();
    let waited_interrupts_ns = waited_irq.total();
    irq.add(&waited_irq);
    if irq.hard_ns > 0 {
        let names: Vec<&str> = t.irq_names.values().map(String::as_str).collect();
        stolen.push(Stolen {
            name: if names.len() == 1 {
                format!("hard irqs ({})", names[0])
            } else {
                "hard irqs".into()
            },
            ns: irq.hard_ns,
        });
    }
    for (v, &ns) in irq.soft_ns.iter().enumerate() {
        if ns > 0 {
            stolen.push(Stolen {
                name: format!("softirq {}", SOFTIRQ_NAMES[v]),
                ns,
            });
        }
    }
    stolen.sort_by_key(|s| std::cmp::Reverse(s.ns));

    let mut per_call: HashMap<u64, CallTime> = HashMap::new();
    for c in &t.calls {
        let ns = span.overlap(c.entry_ns, c.exit_ns);
        let e = per_call.entry(c.nr).or_insert_with(|| CallTime {
            syscall: name_of(c.nr),
            count: 0,
            total_ns: 0,
            max_ns: 0,
        });
        e.count += 1;
        e.total_ns += ns;
        e.max_ns = e.max_ns.max(ns);
    }
    let mut calls: Vec<CallTime> = per_call.into_values().collect();
    calls.sort_by_key(|c| (std::cmp::Reverse(c.total_ns), c.syscall.clone()));
    calls.truncate(8);

    let seen = running + runnable + blocked;
    let mut story = Story {
        verdict: String::new(),
        source: subject.source.to_owned(),
        what: subject.what.clone(),
        who: who(inp.tasks, subject.tid),
        begin_ns: span.begin,
        begin_realtime_ns: span
            .begin
            .saturating_add_signed(inp.realtime_minus_monotonic_ns),
        end_ns: span.end,
        duration_ns: span.len(),
        running_ns: running,
        interrupted_ns: irq.total() - waited_interrupts_ns,
        waited_interrupts_ns,
        runnable_ns: runnable,
        blocked_ns: blocked,
        unknown_ns: span.len().saturating_sub(seen),
        blocked: blocked_list,
        ran_instead,
        ran_instead_groups,
        stolen,
        calls,
        forks: t.forks,
        timeline,
        timeline_truncated: mine.len() > MAX_SEGMENTS,
        periods: inp.periods,
    };
    story.verdict = verdict(&story);
    story
}

/// Who ran instead of `subject`, by group: the cgroups other than the subject's, and the
/// parents of processes started during the span. Many threads of one neighbour, or many
/// short-lived commands of one parent, each run a little; together they are the cause.
fn groups(
    t: &Tracker,
    tasks: &Tasks,
    subject: u32,
    instead: &HashMap<u32, u64>,
) -> Vec<RanInsteadGroup> {
    let own = tasks.cgroup_of(tasks.pid_of(subject));
    let mut acc: HashMap<(&'static str, String), (u64, u64)> = HashMap::new();
    for (&tid, &ns) in instead {
        let pid = tasks.pid_of(tid);
        if let Some(cg) = tasks.cgroup_of(pid)
            && Some(cg) != own
        {
            let e = acc.entry(("cgroup", cg.to_owned())).or_default();
            e.0 += 1;
            e.1 += ns;
        }
        if let Some(&parent) = t.born.get(&pid) {
            let name = format!("{}[{parent}]", tasks.proc_comm(parent));
            let e = acc.entry(("children", name)).or_default();
            e.0 += 1;
            e.1 += ns;
        }
    }
    let mut out: Vec<RanInsteadGroup> = acc
        .into_iter()
        .map(|((kind, name), (threads, ns))| RanInsteadGroup {
            kind,
            name,
            threads,
            ns,
        })
        .collect();
    out.sort_by(|a, b| b.ns.cmp(&a.ns).then(a.name.cmp(&b.name)));
    out.truncate(5);
    out
}

/// Who the subject waited behind, in words: the group of threads that ran the most instead
/// of it when several of them together ran longer than any one thread, else that thread.
fn behind(s: &Story) -> String {
    let Some(top) = s.ran_instead.first() else {
        return String::new();
    };
    if let Some(g) = s
        .ran_instead_groups
        .iter()
        .find(|g| g.threads >= 2 && g.ns > top.ns)
    {
        return match g.kind {
            "cgroup" => format!(
                ", behind {} threads of cgroup {} for {} (the most {} ({}) {})",
                g.threads,
                g.name,
                fmt_ns(g.ns),
                top.who.comm,
                top.who.tid,
                fmt_ns(top.ns)
            ),
            _ => format!(
                ", behind {} processes that {} started during it, for {}",
                g.threads,
                g.name,
                fmt_ns(g.ns)
            ),
        };
    }
    let cg = top
        .who
        .cgroup
        .as_deref()
        .map_or(String::new(), |c| format!(" in cgroup {c}"));
    format!(
        ", behind {} ({}){cg} for {}",
        top.who.comm,
        top.who.tid,
        fmt_ns(top.ns)
    )
}

/// What took the time, in one sentence: the largest of on-CPU work, interrupts, waiting to
/// run, and being blocked (in the syscall of the longest stretch).
fn verdict(s: &Story) -> String {
    let total = s.duration_ns;
    let who = format!("{} ({})", s.who.comm, s.who.tid);
    let head = format!("{} took {} on {who}", s.what, fmt_ns(total));
    let work = s.running_ns.saturating_sub(s.interrupted_ns);
    let mut parts: Vec<(u64, String)> = Vec::new();
    if let Some(b) = s.blocked.first() {
        parts.push((s.blocked_ns, blocked_words(s, b)));
    }
    if s.runnable_ns > 0 {
        let behind = behind(s);
        parts.push((
            s.runnable_ns,
            format!(
                "waited {} ({}%) to run{behind}",
                fmt_ns(s.runnable_ns),
                pct(s.runnable_ns, total)
            ),
        ));
    }
    let lost = s.interrupted_ns + s.waited_interrupts_ns;
    if lost > 0 {
        let what = s.stolen.first().map_or("interrupts", |x| x.name.as_str());
        let waiting = if s.waited_interrupts_ns > 0 {
            format!(
                " ({} of it while it waited to run)",
                fmt_ns(s.waited_interrupts_ns)
            )
        } else {
            String::new()
        };
        parts.push((
            lost,
            format!(
                "lost {} ({}%) of its CPU to interrupts{waiting}, most to {what}",
                fmt_ns(lost),
                pct(lost, total)
            ),
        ));
    }
    if work > 0 {
        let forks = if s.forks > 0 {
            format!(", starting {} processes", s.forks)
        } else {
            String::new()
        };
        parts.push((
            work,
            format!("ran {} ({}%){forks}", fmt_ns(work), pct(work, total)),
        ));
    }
    // Time the snapshot does not cover (the rings overwrote it, or the thread had not
    // started): said, so that a verdict on a tenth of the span does not pass for the whole.
    if s.unknown_ns * 10 >= total && s.unknown_ns > 0 {
        parts.push((
            s.unknown_ns,
            format!(
                "was not seen for {} ({}%): the snapshot does not hold that part of the span",
                fmt_ns(s.unknown_ns),
                pct(s.unknown_ns, total)
            ),
        ));
    }
    parts.sort_by_key(|(ns, _)| std::cmp::Reverse(*ns));
    let body: Vec<String> = parts.into_iter().map(|(_, p)| p).collect();
    if body.is_empty() {
        return format!("{head}: its thread has no events in the span");
    }
    format!("{head}: {}", body.join("; "))
}

fn blocked_words(s: &Story, b: &Blocked) -> String {
    let total = s.duration_ns;
    let mut w = format!(
        "blocked {} ({}%)",
        fmt_ns(s.blocked_ns),
        pct(s.blocked_ns, total)
    );
    let Some(sys) = &b.syscall else {
        return w;
    };
    // A call blocks in several stretches (an fdatasync waits for each batch of writes): say
    // how much of the blocked time the syscall of the longest took in all.
    let in_sys: u64 = s
        .timeline
        .iter()
        .filter(|g| g.state == "blocked" && g.syscall.as_deref() == Some(sys.as_str()))
        .map(|g| g.end_ns - g.begin_ns)
        .sum();
    if in_sys > b.duration_ns + b.duration_ns / 10 {
        w.push_str(&format!(
            ", {} of it in {sys} (the longest stretch {})",
            fmt_ns(in_sys),
            fmt_ns(b.duration_ns)
        ));
    } else {
        w.push_str(&format!(", the longest {} in {sys}", fmt_ns(b.duration_ns)));
    }
    if let Some(fd) = b.fd {
        w.push_str(&format!(" on {}", fd_label(fd, b.fd_name.as_deref())));
    }
    match (b.ready_fd, b.ready_fd_connected) {
        (Some(fd), true) => w.push_str(&format!(
            " until the answer on {}, a connection it had opened (connect) in its span",
            fd_label(fd, b.ready_fd_name.as_deref())
        )),
        (Some(fd), false) => w.push_str(&format!(
            " until {} had data",
            fd_label(fd, b.ready_fd_name.as_deref())
        )),
        _ => {}
    }
    if b.timed_out {
        w.push_str(" until its timeout: nothing answered");
    } else {
        match &b.woken_by {
            WokenBy::Thread(x) => w.push_str(&format!(", woken by {} ({})", x.comm, x.tid)),
            WokenBy::Irq { irq, name } => w.push_str(&format!(", woken by irq {irq} ({name})")),
            WokenBy::Softirq { name } => w.push_str(&format!(", woken by softirq {name}")),
            WokenBy::Nobody => {}
        }
    }
    if let Some(io) = &b.own_io {
        w.push_str(&format!(
            "; its {} requests on {} took up to {}",
            io.requests,
            io.device,
            fmt_ns(io.max_ns)
        ));
    }
    if let Some(l) = b.chain.first() {
        let on = l.fd.map_or(String::new(), |fd| {
            format!(" on {}", fd_label(fd, l.fd_name.as_deref()))
        });
        let doing = match (&l.syscall, &l.io) {
            (Some(sys), Some(io)) => format!(
                "in {sys}{on}, with {} requests on {} of up to {}",
                io.requests,
                io.device,
                fmt_ns(io.max_ns)
            ),
            (Some(sys), None) => format!("mostly in {sys}{on}"),
            (None, _) => format!("running {}", fmt_ns(l.running_ns)),
        };
        w.push_str(&format!(
            "; meanwhile {} ({}) was {doing}",
            l.who.comm, l.who.tid
        ));
    }
    w
}
