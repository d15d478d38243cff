//! `flightrec analyze`: what happened in a snapshot, in the terms SREs ask about — the slowest
//! syscalls, who used the CPUs, who waited to run and who made them wait, block I/O latency,
//! interrupt cost, and the processes that came and went.
//!
//! One streaming pass over the time-ordered events feeds every analysis; memory grows with the
//! number of completed latencies kept for percentiles (8 bytes each), not with the snapshot.
//! The result is a [`Report`], printed as text tables or serialised as one JSON object whose
//! schema is documented in `docs/analyses.md`. The collector calls [`analyze`] too.

mod block;
mod cpu;
pub mod fds;
mod findings;
mod irq;
mod procs;
mod sched;
pub mod stats;
pub mod story;
mod syscalls;
mod tasks;
mod text;
pub mod waits;

use std::collections::HashMap;
use std::path::Path;

use schemas::EventKind;
use schemas::event::Event;
use schemas::file::FormatError;
use schemas::manifest::Manifest;
use serde::Serialize;

pub use block::BlockReport;
pub use cpu::CpuReport;
pub use findings::{Evidence, Finding, FindingKind};
pub use irq::IrqReport;
pub use procs::ProcessReport;
pub use sched::SchedReport;
pub use story::{Story, StoryChoice, Subject};
pub use syscalls::{InFlightCall, SyscallCall, SyscallReport};
pub use tasks::Tasks;
pub use text::render;

/// Version tag of the JSON report, bumped on incompatible changes.
pub const SCHEMA: &str = "flightrec-analyze/1";

/// Why an analysis could not run.
#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    /// The snapshot could not be read.
    #[error("reading the snapshot")]
    Snapshot(#[from] FormatError),
    /// A record could not be decoded.
    #[error("decoding an event")]
    Decode(#[from] crate::dump::ReadError),
    /// A `--begin`/`--end` value was not understood.
    #[error(
        "bad time {0:?}: use a CLOCK_MONOTONIC timestamp in ns (as in `flightrec dump --json`), \
         +DURATION from the first event or -DURATION before the last (e.g. +1.5s, -200ms, +50us)"
    )]
    BadTime(String),
    /// `--begin` is after `--end`.
    #[error("the window is empty: --begin {begin} ns is after --end {end} ns")]
    EmptyWindow {
        /// Resolved begin.
        begin: u64,
        /// Resolved end.
        end: u64,
    },
}

/// A point in time given on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeSpec {
    /// CLOCK_MONOTONIC ns, as events carry them.
    Absolute(u64),
    /// ns after the first event of the snapshot.
    FromStart(u64),
    /// ns before the last event of the snapshot.
    BeforeEnd(u64),
}

impl std::str::FromStr for TimeSpec {
    type Err = AnalyzeError;

    fn from_str(s: &str) -> Result<TimeSpec, AnalyzeError> {
        let bad = || AnalyzeError::BadTime(s.to_owned());
        let t = s.trim();
        if let Some(rest) = t.strip_prefix('+') {
            return parse_offset(rest).map(TimeSpec::FromStart).ok_or_else(bad);
        }
        if let Some(rest) = t.strip_prefix('-') {
            return parse_offset(rest).map(TimeSpec::BeforeEnd).ok_or_else(bad);
        }
        t.parse().map(TimeSpec::Absolute).map_err(|_| bad())
    }
}

impl TimeSpec {
    /// This point as CLOCK_MONOTONIC ns, for a snapshot whose events run from `first` to `last`.
    pub fn resolve(self, first: u64, last: u64) -> u64 {
        match self {
            TimeSpec::Absolute(ns) => ns,
            TimeSpec::FromStart(d) => first.saturating_add(d),
            TimeSpec::BeforeEnd(d) => last.saturating_sub(d),
        }
    }
}

/// An offset of `--begin`/`--end` in the duration grammar of every flightrec setting
/// ([`schemas::units`]: `1.5s`, `200ms`, `50us`); a bare number is seconds, as `+2` reads.
/// Units above seconds are refused: a snapshot covers seconds, so `+1h` is a mistake.
fn parse_offset(s: &str) -> Option<u64> {
    let s = s.trim();
    if !s.ends_with('s') && !s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let with_unit;
    let text = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        with_unit = format!("{s}s");
        &with_unit
    } else {
        s
    };
    let d = schemas::units::parse_duration(text).ok()?;
    u64::try_from(d.as_nanos()).ok()
}

/// Which tasks the task-centred analyses look at. Every kind given must match (pid AND comm...);
/// within a kind any value matches. Empty: every task.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Filter {
    /// Process ids (thread group ids).
    pub pids: Vec<u32>,
    /// Thread ids.
    pub tids: Vec<u32>,
    /// Exact thread names.
    pub comms: Vec<String>,
    /// cgroup v2 paths: a task matches when its cgroup is this one or below it.
    pub cgroups: Vec<String>,
}

impl Filter {
    /// Whether no filter is set.
    pub fn is_empty(&self) -> bool {
        self.pids.is_empty()
            && self.tids.is_empty()
            && self.comms.is_empty()
            && self.cgroups.is_empty()
    }

    /// Whether thread `tid` matches, as `tasks` knows it now.
    pub fn matches(&self, tid: u32, tasks: &Tasks) -> bool {
        if self.is_empty() {
            return true;
        }
        let pid = tasks.pid_of(tid);
        (self.tids.is_empty() || self.tids.contains(&tid))
            && (self.pids.is_empty() || self.pids.contains(&pid))
            && (self.comms.is_empty() || self.comms.iter().any(|c| c == tasks.comm(tid)))
            && (self.cgroups.is_empty()
                || tasks
                    .cgroup_of(pid)
                    .is_some_and(|g| self.cgroups.iter().any(|f| cgroup_within(g, f))))
    }
}

/// Whether cgroup `path` is `parent` or below it.
fn cgroup_within(path: &str, parent: &str) -> bool {
    let parent = parent.trim_end_matches('/');
    parent.is_empty()
        || path == parent
        || path
            .strip_prefix(parent)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The analyses' settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Length of every "top" list.
    pub top: usize,
    /// Tasks to analyse.
    pub filter: Filter,
    /// Start of the window (default: the first event).
    pub begin: Option<TimeSpec>,
    /// End of the window (default: the last event).
    pub end: Option<TimeSpec>,
    /// Rank the recorder's own threads with the others (default: left out, costed apart).
    pub include_recorder: bool,
    /// Whose story to tell.
    pub story: StoryChoice,
    /// Decompress and decode each CPU's stream on a thread of its own (the default), or
    /// everything on the calling thread. The report is the same either way.
    pub decode_threads: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            top: 10,
            filter: Filter::default(),
            begin: None,
            end: None,
            include_recorder: false,
            story: StoryChoice::Auto,
            decode_threads: true,
        }
    }
}

/// A section of the report: its result, or why it could not be computed.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Section<T> {
    /// Computed.
    Ok(T),
    /// The event class it needs was not recorded in this snapshot.
    NotRecorded {
        /// Which class is missing and how to record it.
        reason: String,
    },
}

impl<T> Section<T> {
    /// The result, if computed.
    pub fn ok(&self) -> Option<&T> {
        match self {
            Section::Ok(t) => Some(t),
            Section::NotRecorded { .. } => None,
        }
    }
}

/// Identity of the analysed snapshot.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SnapshotInfo {
    /// Snapshot id.
    pub id: String,
    /// Snapshot name.
    pub name: String,
    /// Host name.
    pub hostname: String,
    /// Kernel release.
    pub kernel: String,
    /// Trigger source (`cli`, `hook`, `rule`...).
    pub trigger_source: String,
    /// Trigger reason.
    pub trigger_reason: String,
    /// Event classes recorded.
    pub classes: Vec<String>,
}

/// The time window analysed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Window {
    /// First instant (CLOCK_MONOTONIC ns).
    pub begin_ns: u64,
    /// Last instant (CLOCK_MONOTONIC ns).
    pub end_ns: u64,
    /// `end_ns - begin_ns`.
    pub duration_ns: u64,
    /// `begin_ns` on the realtime clock (ns since the epoch).
    pub begin_realtime_ns: u64,
    /// Events analysed (inside the window).
    pub events: u64,
}

/// How complete the recorded history is: rings overwrite their oldest records.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Completeness {
    /// No record overwritten or lost on any CPU: the window holds every event of its classes.
    pub complete: bool,
    /// From this instant on, every CPU's history is present (the latest of the CPUs' oldest
    /// events); earlier, some CPUs' records were overwritten.
    pub all_cpus_from_ns: u64,
    /// Records overwritten before the freeze, all CPUs.
    pub overwritten: u64,
    /// Records lost (reserved but not complete at the freeze), all CPUs.
    pub lost: u64,
    /// Per CPU.
    pub cpus: Vec<CpuCompleteness>,
}

/// One CPU's completeness.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CpuCompleteness {
    /// CPU.
    pub cpu: u32,
    /// Records in the snapshot.
    pub kept: u64,
    /// Records overwritten.
    pub overwritten: u64,
    /// Records lost.
    pub lost: u64,
    /// Oldest event.
    pub oldest_ns: Option<u64>,
    /// Newest event.
    pub newest_ns: Option<u64>,
}

/// What the recorder itself cost in the window.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RecorderCost {
    /// Its process ids (processes whose main thread is named `flightrec`).
    pub pids: Vec<u32>,
    /// Whether its threads are ranked with the others (`include_recorder`).
    pub included: bool,
    /// Events its threads recorded in the window.
    pub events: u64,
    /// Time its threads ran, when scheduling was recorded.
    pub on_cpu_ns: Option<u64>,
}

/// Everything `flightrec analyze` computes from one snapshot.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// The story of the request (or thread) the trigger names, or of the slowest request
    /// recognised from `accept`…`close`: where its time went.
    pub story: Option<Story>,
    /// What to look at first, most of the window first (at most [`findings::MAX_FINDINGS`]).
    pub findings: Vec<Finding>,
    /// [`SCHEMA`].
    pub schema: &'static str,
    /// The snapshot.
    pub snapshot: SnapshotInfo,
    /// The window analysed.
    pub window: Window,
    /// Completeness of the recorded history.
    pub completeness: Completeness,
    /// The task filter applied.
    pub filter: Filter,
    /// Filter values that match no task of the snapshot (a typo, or a task gone before the
    /// window): the figures below then leave it out without saying so otherwise.
    pub warnings: Vec<String>,
    /// The recorder's own cost, and whether it is ranked.
    pub recorder: RecorderCost,
    /// Syscall latencies.
    pub syscalls: Section<SyscallReport>,
    /// CPU usage.
    pub cpu: Section<CpuReport>,
    /// Scheduling latency and preemption attribution.
    pub sched: Section<SchedReport>,
    /// Block I/O.
    pub block: Section<BlockReport>,
    /// Hard and soft interrupts.
    pub irq: Section<IrqReport>,
    /// Process lifecycle.
    pub processes: Section<ProcessReport>,
}

/// Shared context handed to every analysis.
pub(crate) struct Ctx<'a> {
    pub opts: &'a Options,
    pub begin: u64,
    pub end: u64,
    pub disks: Disks,
}

impl Ctx<'_> {
    /// Whether thread `tid` is analysed: it matches the filter, and it is not the recorder's
    /// unless asked for.
    pub fn selects(&self, tid: u32, tasks: &Tasks) -> bool {
        self.opts.filter.matches(tid, tasks)
            && (self.opts.include_recorder || !tasks.is_recorder(tid))
    }
}

/// The events of `path` in time order, decoded on a thread per CPU stream or on this one.
fn open_events(
    path: &Path,
    threads: bool,
) -> Result<(Manifest, Box<dyn Iterator<Item = crate::dump::Item>>), FormatError> {
    Ok(if threads {
        let (m, e) = crate::parallel::open(path)?;
        (m, Box::new(e))
    } else {
        let (m, e) = crate::dump::open(path)?;
        (m, Box::new(e))
    })
}

/// Analyses the snapshot at `path`. When the trigger names no request, the slowest request
/// recognised from `accept`…`close` gets its story from a second pass over the file.
pub fn analyze(path: &Path, opts: &Options) -> Result<Report, AnalyzeError> {
    // Each CPU's stream is decompressed and decoded on a thread of its own: the analysis is
    // sequential, and zstd then runs on the other cores.
    let (manifest, events) = open_events(path, opts.decode_threads)?;
    let mut pass = analyze_pass(
        &manifest,
        events.map(|e| e.map_err(AnalyzeError::Decode)),
        opts,
    )?;
    if pass.report.story.is_none()
        && let Some(p) = pass.periods.first()
    {
        let subject = Subject {
            tid: p.tid,
            span: p.span,
            source: "accept_close",
            what: format!(
                "the slowest of {} connections served ({})",
                pass.period_count,
                fds::fd_label(
                    p.fd,
                    pass.fds
                        .name_at(pass.tasks.pid_of(p.tid), p.fd, p.span.begin)
                        .as_deref()
                )
            ),
        };
        let (_, events) = open_events(path, opts.decode_threads)?;
        let mut tracker = story::track::Tracker::new(subject.span, subject.tid);
        for ev in events {
            let ev = ev?;
            if tracker.done(ev.ts_ns) {
                break;
            }
            tracker.event(&ev);
        }
        tracker.finish();
        pass.report.story = Some(tell(
            &tracker,
            &subject,
            &manifest,
            &pass.tasks,
            &pass.disks,
            &pass.fds,
            pass.period_count,
        ));
    }
    Ok(pass.finish())
}

/// Analyses `events` (time-ordered) of a snapshot described by `manifest`, in one pass: the
/// story is told when the trigger names its subject (a hook request with its thread, a rule
/// on a thread) or one is asked for.
pub fn analyze_events(
    manifest: &Manifest,
    events: impl Iterator<Item = Result<Event, AnalyzeError>>,
    opts: &Options,
) -> Result<Report, AnalyzeError> {
    Ok(analyze_pass(manifest, events, opts)?.finish())
}

/// The story of `subject` from a finished tracker.
fn tell(
    tracker: &story::track::Tracker,
    subject: &Subject,
    manifest: &Manifest,
    tasks: &Tasks,
    disks: &Disks,
    fds: &fds::FdNames,
    periods: u64,
) -> Story {
    story::build(
        tracker,
        subject,
        &story::build::Inputs {
            tasks,
            disks,
            realtime_minus_monotonic_ns: manifest.clocks.realtime_minus_monotonic_ns,
            periods,
            fds,
        },
    )
}

/// Disk names by device number, from the snapshot's statedump (`major:minor` for devices it
/// does not list, and in snapshots of recorders that did not record them).
pub(crate) struct Disks(HashMap<u32, String>);

impl Disks {
    pub fn new(m: &Manifest) -> Disks {
        Disks(
            m.statedump
                .disks
                .iter()
                .map(|d| (d.dev, d.name.clone()))
                .collect(),
        )
    }

    pub fn name(&self, dev: u32) -> String {
        self.0
            .get(&dev)
            .cloned()
            .unwrap_or_else(|| schemas::event::dev_name(dev))
    }
}

/// One pass's results, before the findings are drawn from them.
struct Pass {
    report: Report,
    work: HashMap<(u32, u64), syscalls::WorkAcc>,
    tasks: Tasks,
    disks: Disks,
    fds: fds::FdNames,
    periods: Vec<story::periods::Period>,
    period_count: u64,
}

impl Pass {
    fn finish(mut self) -> Report {
        fds::name_calls(&mut self.report, &self.fds);
        let mut f = findings::find(&self.report, &self.work, &self.tasks, &self.fds);
        if let Some(s) = &self.report.story {
            f.insert(0, findings::of_story(s, self.report.window.duration_ns));
            f.truncate(findings::MAX_FINDINGS);
        }
        self.report.findings = f;
        self.report
    }
}

fn analyze_pass(
    manifest: &Manifest,
    events: impl Iterator<Item = Result<Event, AnalyzeError>>,
    opts: &Options,
) -> Result<Pass, AnalyzeError> {
    let (first, last) = crate::dump::coverage_span(manifest);
    let resolve = |t: TimeSpec| t.resolve(first, last);
    let begin = opts.begin.map(resolve).unwrap_or(first).max(first);
    let end = opts.end.map(resolve).unwrap_or(last).min(last);
    if begin > end && (opts.begin.is_some() || opts.end.is_some()) {
        return Err(AnalyzeError::EmptyWindow { begin, end });
    }
    let ctx = Ctx {
        opts,
        begin,
        end,
        disks: Disks::new(manifest),
    };

    let has = |class: &str| manifest.recorder.classes.iter().any(|c| c == class);
    let subject = match opts.story {
        StoryChoice::Off => None,
        StoryChoice::Thread(tid) => Some(Subject {
            tid,
            span: story::Span { begin, end },
            source: "thread",
            what: format!("thread {tid} over the window"),
        }),
        StoryChoice::Auto => story::from_trigger(manifest),
    };
    let mut tracker = subject
        .as_ref()
        .filter(|_| has("sched"))
        .map(|s| story::track::Tracker::new(s.span, s.tid));
    let mut periods = (opts.story == StoryChoice::Auto && subject.is_none() && has("syscalls"))
        .then(story::periods::Periods::default);
    let mut tasks = Tasks::from_statedump(&manifest.statedump);
    let mut fd_names = fds::FdNames::from_statedump(&manifest.statedump);
    let mut sys = has("syscalls").then(syscalls::Syscalls::default);
    let mut cpu = has("sched").then(|| cpu::Cpu::new(&ctx));
    let mut sch = has("sched").then(sched::Sched::default);
    let mut blk = has("block").then(|| block::Block::new(&ctx));
    let mut irq = has("irq").then(irq::Irq::default);
    let mut prc = has("process").then(procs::Procs::default);

    let mut n = 0u64;
    let mut recorder_events = 0u64;
    for ev in events {
        let ev = ev?;
        // Names and parents are learnt from every event, inside the window or not.
        tasks.observe(&ev);
        fd_names.observe(&ev);
        if let Some(t) = tracker.as_mut()
            && !t.done(ev.ts_ns)
        {
            t.event(&ev);
        }
        if ev.ts_ns < begin || ev.ts_ns > end {
            continue;
        }
        n += 1;
        if let Some(p) = periods.as_mut()
            && ctx.selects(ev.tid, &tasks)
        {
            p.event(&ev);
        }
        recorder_events += u64::from(tasks.is_recorder(ev.tid));
        match ev.kind() {
            EventKind::SyscallEntry | EventKind::SyscallExit => {
                if let Some(a) = sys.as_mut() {
                    a.event(&ev, &tasks, &ctx);
                }
            }
            EventKind::SchedSwitch | EventKind::SchedWakeup | EventKind::SchedWakeupNew => {
                if let Some(a) = cpu.as_mut() {
                    a.event(&ev, &ctx);
                }
                if let Some(a) = sch.as_mut() {
                    a.event(&ev, &tasks, &ctx);
                }
            }
            EventKind::ProcessFork | EventKind::ProcessExec | EventKind::ProcessExit => {
                if let Some(a) = prc.as_mut() {
                    a.event(&ev, &tasks, &ctx);
                }
            }
            EventKind::BlockRqIssue | EventKind::BlockRqComplete => {
                if let Some(a) = blk.as_mut() {
                    a.event(&ev, &tasks, &ctx);
                }
            }
            EventKind::IrqHandlerEntry
            | EventKind::IrqHandlerExit
            | EventKind::SoftirqEntry
            | EventKind::SoftirqExit => {
                if let Some(a) = irq.as_mut() {
                    a.event(&ev);
                }
            }
            // The fd tables read these; no table counts them.
            EventKind::SyscallPath => {}
        }
        // The CPU analysis needs the running task of CPUs that never switch in the window.
        if let Some(a) = cpu.as_mut() {
            a.seen(&ev);
        }
    }

    let coverage = &manifest.coverage;
    let completeness = Completeness {
        complete: coverage
            .iter()
            .all(|c| c.records_overwritten == 0 && c.records_lost == 0),
        all_cpus_from_ns: coverage
            .iter()
            .filter_map(|c| c.oldest_ts_ns)
            .max()
            .unwrap_or(0),
        overwritten: coverage.iter().map(|c| c.records_overwritten).sum(),
        lost: coverage.iter().map(|c| c.records_lost).sum(),
        cpus: coverage
            .iter()
            .map(|c| CpuCompleteness {
                cpu: c.cpu,
                kept: c.records_kept,
                overwritten: c.records_overwritten,
                lost: c.records_lost,
                oldest_ns: c.oldest_ts_ns,
                newest_ns: c.newest_ts_ns,
            })
            .collect(),
    };
    let (wb, we) = if n == 0 { (begin, begin) } else { (begin, end) };
    let cpu = cpu.map(|a| a.finish(&tasks, &ctx));
    let recorder = RecorderCost {
        pids: tasks.recorder_pids(),
        included: opts.include_recorder,
        events: recorder_events,
        on_cpu_ns: cpu.as_ref().map(|c| c.recorder_on_cpu_ns),
    };
    let work = sys.as_ref().map(|a| a.work().clone()).unwrap_or_default();
    let mut warnings = Vec::new();
    for c in &opts.filter.comms {
        if !tasks.has_comm(c) {
            warnings.push(format!(
                "--comm {c:?} matches no thread of the snapshot (names are the kernel's, at \
                 most 15 bytes; `flightrec dump --summary` lists them)"
            ));
        }
    }
    for p in &opts.filter.pids {
        if !tasks.has_pid(*p) {
            warnings.push(format!("--pid {p} matches no process of the snapshot"));
        }
    }
    let period_count = periods.as_ref().map_or(0, |p| p.count);
    let story = match (tracker.as_mut(), subject.as_ref()) {
        (Some(t), Some(s)) => {
            t.finish();
            Some(tell(
                t,
                s,
                manifest,
                &tasks,
                &ctx.disks,
                &fd_names,
                period_count,
            ))
        }
        _ => None,
    };
    let report = Report {
        story,
        findings: Vec::new(),
        schema: SCHEMA,
        snapshot: SnapshotInfo {
            id: manifest.snapshot_id.clone(),
            name: manifest.name.clone(),
            hostname: manifest.host.hostname.clone(),
            kernel: manifest.host.kernel_release.clone(),
            trigger_source: manifest.trigger.source.clone(),
            trigger_reason: manifest.trigger.reason.clone(),
            classes: manifest.recorder.classes.clone(),
        },
        window: Window {
            begin_ns: wb,
            end_ns: we,
            duration_ns: we - wb,
            begin_realtime_ns: wb
                .saturating_add_signed(manifest.clocks.realtime_minus_monotonic_ns),
            events: n,
        },
        completeness,
        filter: opts.filter.clone(),
        warnings,
        recorder,
        syscalls: section(
            sys.map(|a| a.finish(&tasks, &ctx)),
            "syscalls",
            "the syscall analysis",
        ),
        cpu: section(cpu, "sched", "the CPU analysis"),
        sched: section(
            sch.map(|a| a.finish(&tasks, &ctx)),
            "sched",
            "the scheduling latency analysis",
        ),
        block: section(
            blk.map(|a| a.finish(&tasks, &ctx)),
            "block",
            "the block I/O analysis",
        ),
        irq: section(irq.map(|a| a.finish(&ctx)), "irq", "the interrupt analysis"),
        processes: section(prc.map(|a| a.finish(&ctx)), "process", "the process log"),
    };
    Ok(Pass {
        report,
        work,
        tasks,
        disks: ctx.disks,
        fds: fd_names,
        periods: periods.map(|p| p.slowest()).unwrap_or_default(),
        period_count,
    })
}

/// The section of an analysis that ran, or why it could not.
fn section<T>(result: Option<T>, class: &str, what: &str) -> Section<T> {
    match result {
        Some(r) => Section::Ok(r),
        None => Section::NotRecorded {
            reason: format!(
                "{what} needs the `{class}` event class, which was not recorded in this snapshot \
                 (enable events.{class} in the recorder's config)"
            ),
        },
    }
}

/// Keeps the `n` largest items by key, in a bounded heap.
pub(crate) struct TopN<T> {
    n: usize,
    seq: u64,
    heap: std::collections::BinaryHeap<std::cmp::Reverse<(u64, u64, Keyed<T>)>>,
}

/// Wraps an item so the heap orders by key and arrival only.
pub(crate) struct Keyed<T>(T);

impl<T> PartialEq for Keyed<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl<T> Eq for Keyed<T> {}
impl<T> PartialOrd for Keyed<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Keyed<T> {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl<T> TopN<T> {
    /// Keeps up to `n` items.
    pub fn new(n: usize) -> Self {
        TopN {
            n,
            seq: 0,
            heap: Default::default(),
        }
    }

    /// Offers `item` with `key`; ties keep the earlier item.
    pub fn push(&mut self, key: u64, item: T) {
        self.push_with(key, || item);
    }

    /// Offers the item `make` builds with `key`, building it only if it is kept: most offers
    /// are not, and the hot loops then allocate nothing.
    pub fn push_with(&mut self, key: u64, make: impl FnOnce() -> T) {
        if self.n == 0 {
            return;
        }
        // Later arrivals rank lower on ties: the heap's minimum is evicted first.
        self.seq += 1;
        let rank = (key, u64::MAX - self.seq);
        let full = self.heap.len() >= self.n;
        if full
            && self
                .heap
                .peek()
                .is_some_and(|min| rank <= (min.0.0, min.0.1))
        {
            return;
        }
        if full {
            self.heap.pop();
        }
        self.heap
            .push(std::cmp::Reverse((rank.0, rank.1, Keyed(make()))));
    }

    /// The kept items, largest key first (ties: earliest first).
    pub fn into_sorted(self) -> Vec<T> {
        let mut v: Vec<_> = self.heap.into_iter().map(|r| r.0).collect();
        v.sort_by_key(|e| std::cmp::Reverse((e.0, e.1)));
        v.into_iter().map(|(_, _, k)| k.0).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_specs() {
        assert_eq!("123".parse::<TimeSpec>().unwrap(), TimeSpec::Absolute(123));
        assert_eq!(
            "+1.5s".parse::<TimeSpec>().unwrap(),
            TimeSpec::FromStart(1_500_000_000)
        );
        assert_eq!(
            "-200ms".parse::<TimeSpec>().unwrap(),
            TimeSpec::BeforeEnd(200_000_000)
        );
        assert_eq!(
            "+50us".parse::<TimeSpec>().unwrap(),
            TimeSpec::FromStart(50_000)
        );
        assert_eq!(
            "+2".parse::<TimeSpec>().unwrap(),
            TimeSpec::FromStart(2_000_000_000)
        );
        assert!("soon".parse::<TimeSpec>().is_err());
        assert!("+1h".parse::<TimeSpec>().is_err());
        assert!("+-1s".parse::<TimeSpec>().is_err());
    }

    #[test]
    fn cgroup_prefixes() {
        assert!(cgroup_within("/a/b", "/a"));
        assert!(cgroup_within("/a", "/a/"));
        assert!(!cgroup_within("/ab", "/a"));
        assert!(cgroup_within("/x", "/"));
    }

    #[test]
    fn top_n_keeps_largest_and_earliest_on_ties() {
        let mut t = TopN::new(3);
        for (k, v) in [(5, 'a'), (1, 'b'), (9, 'c'), (5, 'd'), (7, 'e'), (9, 'f')] {
            t.push(k, v);
        }
        assert_eq!(t.into_sorted(), vec!['c', 'f', 'e']);
        let mut t = TopN::new(2);
        for (k, v) in [(5, 'a'), (5, 'b'), (5, 'c')] {
            t.push(k, v);
        }
        assert_eq!(t.into_sorted(), vec!['a', 'b']);
    }
}
