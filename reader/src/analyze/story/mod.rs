//! The story of one request: where the time of its thread went over its span.
//!
//! A hook snapshot names the slow request (URL, method, duration, request id) and, when the
//! webserver module sends them, the worker thread and the request's start; a kernel-rule
//! snapshot names the thread and the event that fired it. Without either, the slowest request
//! recognised from syscalls alone (an `accept`…`close` period on one thread, see
//! [`periods`]) is the subject. Over the subject's span the story says how long its thread ran
//! (and how much of that interrupts took), waited runnable (and who ran instead, in which
//! cgroup), and was blocked (in which syscall, on which fd or disk, woken by whom); it follows
//! a wakeup back through the threads that were themselves blocked until it, so a request
//! blocked on a lock shows the lock holder and what the holder was doing: Perfetto's
//! thread-state critical path, done automatically.

pub(crate) mod build;
pub(crate) mod periods;
pub(crate) mod text;
pub(crate) mod track;

use schemas::manifest::Manifest;
use serde::Serialize;

pub(crate) use build::build;

/// A closed time span, CLOCK_MONOTONIC ns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Span {
    /// First instant.
    pub begin: u64,
    /// Last instant.
    pub end: u64,
}

impl Span {
    /// Its length in ns.
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.begin)
    }

    /// Whether it has no length.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `ts` is inside.
    pub fn contains(&self, ts: u64) -> bool {
        (self.begin..=self.end).contains(&ts)
    }

    /// ns of `[a, b]` inside the span.
    pub fn overlap(&self, a: u64, b: u64) -> u64 {
        b.min(self.end).saturating_sub(a.max(self.begin))
    }
}

/// Which thread and span a story is about, and what told us.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    /// The thread.
    pub tid: u32,
    /// Its span.
    pub span: Span,
    /// `hook`, `rule`, `accept_close` or `thread` (asked for on the command line).
    pub source: &'static str,
    /// What the span is, in words (`GET /orders?id=1 (request id r-17)`).
    pub what: String,
}

/// Which story `analyze` tells.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum StoryChoice {
    /// The trigger's request or thread when the snapshot knows it, else the slowest
    /// `accept`…`close` period.
    #[default]
    Auto,
    /// This thread over the analysed window.
    Thread(u32),
    /// No story.
    Off,
}

/// How much later than start + duration a request reported by a hook may have ended.
const HOOK_RESOLUTION_NS: u64 = 2_000_000;

fn field_u64(m: &Manifest, key: &str) -> Option<u64> {
    let v = m.trigger.fields.get(key)?;
    v.as_u64().or_else(|| v.as_f64().map(|f| f as u64))
}

fn field_str<'a>(m: &'a Manifest, key: &str) -> Option<&'a str> {
    m.trigger.fields.get(key)?.as_str()
}

/// The subject a snapshot's trigger names, if it names one: a hook call that sent the
/// worker's thread (or single-threaded process) and the request's start, or a kernel rule
/// on a syscall or a run-queue wait.
pub fn from_trigger(m: &Manifest) -> Option<Subject> {
    match m.trigger.source.as_str() {
        "hook" => {
            let tid = field_u64(m, "tid")?;
            let start_rt = field_u64(m, "start_realtime_ns")?;
            let dur_ms = m.trigger.fields.get("duration_ms")?.as_f64()?;
            let begin = start_rt.saturating_add_signed(-m.clocks.realtime_minus_monotonic_ns);
            // Webservers report whole milliseconds (nginx's cached clock, $request_time):
            // the request may have ended up to that much later, and the wait that ended it
            // must end inside the span to name who ended it.
            let end = begin.saturating_add((dur_ms * 1e6) as u64 + HOOK_RESOLUTION_NS);
            let mut what = match (field_str(m, "method"), field_str(m, "url")) {
                (Some(method), Some(url)) => format!("{method} {url}"),
                (None, Some(url)) => url.to_owned(),
                _ => m.trigger.reason.clone(),
            };
            if let Some(id) = field_str(m, "request_id") {
                what.push_str(&format!(" (request id {id})"));
            }
            Some(Subject {
                tid: u32::try_from(tid).ok()?,
                span: Span { begin, end },
                source: "hook",
                what,
            })
        }
        "rule" => {
            let kind = field_str(m, "kind")?;
            if kind != "syscall" && kind != "runqueue" {
                return None;
            }
            let tid = u32::try_from(field_u64(m, "tid")?).ok()?;
            let begin = field_u64(m, "start_ns")?;
            let end = field_u64(m, "ts_ns")?.max(begin);
            let what = match (kind, field_str(m, "syscall")) {
                ("syscall", Some(sys)) => format!("the {sys} call that fired rule {}", rule(m)),
                _ => format!("the run-queue wait that fired rule {}", rule(m)),
            };
            Some(Subject {
                tid,
                span: Span { begin, end },
                source: "rule",
                what,
            })
        }
        _ => None,
    }
}

fn rule(m: &Manifest) -> &str {
    field_str(m, "rule").unwrap_or("?")
}

/// A thread in a story, named.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Who {
    /// Thread id.
    pub tid: u32,
    /// Process id.
    pub pid: u32,
    /// Thread name.
    pub comm: String,
    /// Its process's cgroup, when the statedump knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
}

/// Who ended a wait.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WokenBy {
    /// A thread.
    Thread(Who),
    /// A hard interrupt handler.
    Irq {
        /// Line.
        irq: u32,
        /// Handler name.
        name: String,
    },
    /// A softirq.
    Softirq {
        /// Vector name (`NET_RX`, `BLOCK`, `TIMER`...).
        name: String,
    },
    /// A wakeup from the idle task's context (a timer, an interrupt not traced) or none
    /// within the span.
    Nobody,
}

/// Block requests of a set of threads, or of a disk, over a spell.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct IoSummary {
    /// Disk (`vda`, or `major:minor`).
    pub device: String,
    /// Requests.
    pub requests: u64,
    /// Bytes.
    pub bytes: u64,
    /// The slowest request, issue to completion.
    pub max_ns: u64,
    /// From the first issue to the last completion.
    pub busy_ns: u64,
}

/// A thread on the wakeup chain, over the part of the spell before it woke the next link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Link {
    /// The thread.
    pub who: Who,
    /// From (CLOCK_MONOTONIC ns).
    pub begin_ns: u64,
    /// Until it woke the thread before it on the chain.
    pub end_ns: u64,
    /// Time on a CPU.
    pub running_ns: u64,
    /// Time runnable.
    pub runnable_ns: u64,
    /// Time blocked.
    pub blocked_ns: u64,
    /// The syscall it spent most of the time in, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syscall: Option<String>,
    /// The fd of that syscall's longest call, for syscalls whose first argument is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd: Option<i64>,
    /// The file or socket behind `fd`, when the snapshot knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd_name: Option<String>,
    /// Block requests it issued meanwhile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub io: Option<IoSummary>,
}

/// One stretch the subject was blocked.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Blocked {
    /// Start (CLOCK_MONOTONIC ns).
    pub begin_ns: u64,
    /// Length.
    pub duration_ns: u64,
    /// The syscall it blocked in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syscall: Option<String>,
    /// The fd it waited on, for syscalls whose first argument is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd: Option<i64>,
    /// The file or socket behind `fd` when the call entered (`/var/lib/db/wal`,
    /// `tcp 127.0.0.1:40312->127.0.0.1:5432`, `pipe`), when the snapshot knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd_name: Option<String>,
    /// That syscall's result, when it returned in the span.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ret: Option<i64>,
    /// The call timed out with nothing ready (`poll`, `select`, `epoll_wait`... returned 0).
    pub timed_out: bool,
    /// Who woke it.
    pub woken_by: WokenBy,
    /// The block requests the subject's call issued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub own_io: Option<IoSummary>,
    /// The busiest disk's requests meanwhile, whoever issued them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<IoSummary>,
    /// For a readiness wait (`epoll_wait`, `poll`, `select`...) that returned something: the
    /// fd it read from next, i.e. what it was waiting for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_fd: Option<i64>,
    /// The file or socket behind `ready_fd`, when the snapshot knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_fd_name: Option<String>,
    /// `ready_fd` is a connection the subject opened with `connect` earlier in its span: an
    /// upstream, a database, a resolver, rather than its client.
    pub ready_fd_connected: bool,
    /// The wakeup chain back from the waker (the lock holder first).
    pub chain: Vec<Link>,
}

/// Who ran on the subject's CPU while it was runnable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RanInstead {
    /// The thread.
    pub who: Who,
    /// ns it ran while the subject waited.
    pub ns: u64,
}

/// Threads that ran while the subject was runnable, together: those of another cgroup, or
/// the processes one parent started during the span (a burst of short-lived commands).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RanInsteadGroup {
    /// `cgroup` or `children`.
    pub kind: &'static str,
    /// The cgroup's path, or the parent as `comm[pid]`.
    pub name: String,
    /// Threads of the group that ran.
    pub threads: u64,
    /// ns they ran while the subject waited.
    pub ns: u64,
}

/// Interrupt time taken out of the subject's time on a CPU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Stolen {
    /// `irq 24 (virtio0-requests)` or `softirq NET_RX`.
    pub name: String,
    /// ns.
    pub ns: u64,
}

/// The subject's syscalls by name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CallTime {
    /// Syscall.
    pub syscall: String,
    /// Calls completed in the span.
    pub count: u64,
    /// Their time inside the span.
    pub total_ns: u64,
    /// The longest.
    pub max_ns: u64,
}

/// One stretch of the subject's timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Segment {
    /// `running`, `runnable` or `blocked`.
    pub state: &'static str,
    /// Start.
    pub begin_ns: u64,
    /// End.
    pub end_ns: u64,
    /// CPU.
    pub cpu: u32,
    /// Syscall it was in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syscall: Option<String>,
}

/// The story of one request.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Story {
    /// The answer in one sentence.
    pub verdict: String,
    /// `hook`, `rule`, `accept_close` or `thread`.
    pub source: String,
    /// What the span is.
    pub what: String,
    /// The thread.
    pub who: Who,
    /// Span start (CLOCK_MONOTONIC ns).
    pub begin_ns: u64,
    /// Span start on the realtime clock.
    pub begin_realtime_ns: u64,
    /// Span end.
    pub end_ns: u64,
    /// Span length.
    pub duration_ns: u64,
    /// On a CPU (interrupts included).
    pub running_ns: u64,
    /// Of which interrupts.
    pub interrupted_ns: u64,
    /// Interrupt time on its CPU while it waited there to run: handlers and softirqs, in
    /// `ksoftirqd` or in whichever thread ran instead of it.
    pub waited_interrupts_ns: u64,
    /// Runnable, waiting for a CPU.
    pub runnable_ns: u64,
    /// Blocked.
    pub blocked_ns: u64,
    /// Not seen (before its first event, or the thread's events were overwritten).
    pub unknown_ns: u64,
    /// Longest blocked stretches, longest first.
    pub blocked: Vec<Blocked>,
    /// Who ran while it was runnable, most first.
    pub ran_instead: Vec<RanInstead>,
    /// The same, by another cgroup than the subject's and by the parent of processes started
    /// during the span, most first.
    pub ran_instead_groups: Vec<RanInsteadGroup>,
    /// Interrupt time while it ran or waited to run on that CPU, most first.
    pub stolen: Vec<Stolen>,
    /// Its syscalls, most time first.
    pub calls: Vec<CallTime>,
    /// Processes it forked in the span.
    pub forks: u64,
    /// Its timeline (at most [`build::MAX_SEGMENTS`] stretches).
    pub timeline: Vec<Segment>,
    /// The timeline was cut at [`build::MAX_SEGMENTS`].
    pub timeline_truncated: bool,
    /// Other requests recognised on server threads, when the story is of one of them.
    pub periods: u64,
}
