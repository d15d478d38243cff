//! `flightrec dump`: every event of a snapshot in time order, merged across CPUs while
//! streaming (memory stays bounded by one decoded record per CPU).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fs::File;
use std::io::{BufReader, Write};
use std::path::Path;

use schemas::event::{DecodeError, Event};
use schemas::file::{FormatError, Snapshot, StreamReader};
use schemas::manifest::Manifest;

use crate::analyze::TimeSpec;

/// Iterates over the events of a snapshot file in timestamp order (ties: CPU order).
pub struct MergedEvents {
    streams: Vec<StreamReader<std::io::Take<BufReader<File>>>>,
    heap: BinaryHeap<Reverse<(u64, usize, usize)>>,
    pending: Vec<Option<schemas::Record>>,
    seq: usize,
}

/// Opens `path` and returns its manifest and a time-ordered event iterator.
pub fn open(path: &Path) -> Result<(Manifest, MergedEvents), FormatError> {
    let snap = Snapshot::open(path)?;
    let mut streams = Vec::with_capacity(snap.streams.len());
    for info in &snap.streams {
        let f = BufReader::new(File::open(path)?);
        streams.push(Snapshot::stream(info, f)?);
    }
    let mut m = MergedEvents {
        pending: vec![None; streams.len()],
        streams,
        heap: BinaryHeap::new(),
        seq: 0,
    };
    for i in 0..m.streams.len() {
        m.refill(i)?;
    }
    Ok((snap.manifest, m))
}

impl MergedEvents {
    fn refill(&mut self, i: usize) -> Result<(), FormatError> {
        if let Some(r) = self.streams[i].next().transpose()? {
            self.heap.push(Reverse((r.ts_ns, i, self.seq)));
            self.seq += 1;
            self.pending[i] = Some(r);
        }
        Ok(())
    }
}

/// Why the next event of a snapshot could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A stream of the file is damaged or truncated.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// A record was read but is not an event this reader knows.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// Why `dump` or `summary` stopped.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// The snapshot could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Writing the output failed (a closed pipe included).
    #[error("writing the output")]
    Write(#[from] std::io::Error),
}

impl From<FormatError> for DumpError {
    fn from(e: FormatError) -> Self {
        DumpError::Read(e.into())
    }
}

/// One item of [`MergedEvents`]: a record that failed to decode is reported, not skipped.
pub type Item = Result<Event, ReadError>;

impl Iterator for MergedEvents {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        let Reverse((_, i, _)) = self.heap.pop()?;
        let rec = self.pending[i].take().expect("heap entry has a record");
        if let Err(e) = self.refill(i) {
            self.heap.clear();
            return Some(Err(e.into()));
        }
        Some(Event::decode(&rec).map_err(ReadError::from))
    }
}

/// Writes the events of `path` that `filter` chooses to `out`, as text lines or JSON lines.
/// Returns the number of events written.
pub fn dump(
    path: &Path,
    json: bool,
    filter: &DumpFilter,
    out: &mut impl Write,
) -> Result<u64, DumpError> {
    let (manifest, events) = open(path)?;
    let chosen = choose(path, &manifest, filter)?;
    if !json {
        writeln!(
            out,
            "# snapshot {} \"{}\" host {} kernel {} trigger {}: {}",
            manifest.snapshot_id,
            manifest.name,
            manifest.host.host_id,
            manifest.host.kernel_release,
            manifest.trigger.source,
            manifest.trigger.reason
        )?;
        for c in &manifest.coverage {
            writeln!(
                out,
                "# cpu {}: {} records kept, {} overwritten, {} lost",
                c.cpu, c.records_kept, c.records_overwritten, c.records_lost
            )?;
        }
    }
    let mut n = 0;
    for ev in events {
        let ev = ev?;
        if ev.ts_ns < chosen.begin {
            continue;
        }
        // Events come in time order: nothing later can be in the window.
        if ev.ts_ns > chosen.end {
            break;
        }
        if !chosen.event(&ev) {
            continue;
        }
        if json {
            writeln!(out, "{}", ev.to_json())?;
        } else {
            writeln!(out, "{}", ev.to_text())?;
        }
        n += 1;
    }
    out.flush()?;
    Ok(n)
}

/// Writes a summary of `path`: trigger, host, per-CPU coverage, event counts by name and the
/// busiest threads. Returns the number of events read.
pub fn summary(path: &Path, out: &mut impl Write) -> Result<u64, DumpError> {
    let (m, events) = open(path)?;
    let mut by_name: HashMap<String, u64> = HashMap::new();
    let mut by_tid: HashMap<(u32, u32), u64> = HashMap::new();
    // Comms seen in the events themselves cover threads gone before the statedump.
    let mut seen_comm: HashMap<u32, String> = HashMap::new();
    let (mut first, mut last, mut n) = (u64::MAX, 0u64, 0u64);
    for ev in events {
        let ev = ev?;
        *by_name.entry(ev.name()).or_default() += 1;
        *by_tid.entry((ev.pid, ev.tid)).or_default() += 1;
        use schemas::cstr_lossy;
        use schemas::event::EventData as D;
        match ev.data {
            D::SchedSwitch(s) => {
                seen_comm.insert(ev.tid, cstr_lossy(&s.prev_comm));
                seen_comm.insert(s.next_tid, cstr_lossy(&s.next_comm));
            }
            D::SchedWakeup(w) | D::SchedWakeupNew(w) => {
                seen_comm.insert(w.tid, cstr_lossy(&w.comm));
            }
            D::ProcessExit(x) => {
                seen_comm.insert(x.tid, cstr_lossy(&x.comm));
            }
            _ => {}
        }
        first = first.min(ev.ts_ns);
        last = last.max(ev.ts_ns);
        n += 1;
    }
    let comm_of = |tid: u32| {
        m.statedump
            .processes
            .iter()
            .flat_map(|p| p.threads.iter())
            .find(|t| t.tid == tid)
            .map(|t| t.comm.clone())
            .or_else(|| seen_comm.get(&tid).cloned())
            .unwrap_or_else(|| "?".into())
    };
    writeln!(out, "snapshot   {} ({})", m.snapshot_id, m.name)?;
    writeln!(
        out,
        "host       {} kernel {} ({} CPUs)",
        m.host.host_id, m.host.kernel_release, m.host.ncpu
    )?;
    writeln!(out, "trigger    {}: {}", m.trigger.source, m.trigger.reason)?;
    if n > 0 {
        writeln!(
            out,
            "window     {:.3} s of events ({} events)",
            (last - first) as f64 / 1e9,
            n
        )?;
    }
    for c in &m.coverage {
        writeln!(
            out,
            "cpu {:<3}    {} kept, {} overwritten, {} lost",
            c.cpu, c.records_kept, c.records_overwritten, c.records_lost
        )?;
    }
    let mut names: Vec<_> = by_name.into_iter().collect();
    names.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    writeln!(out, "\n{:>10}  event", "count")?;
    for (name, count) in names.iter().take(20) {
        writeln!(out, "{count:>10}  {name}")?;
    }
    if names.len() > 20 {
        writeln!(out, "{:>10}  ({} more event names)", "", names.len() - 20)?;
    }
    let mut tids: Vec<_> = by_tid.into_iter().collect();
    tids.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    writeln!(out, "\n{:>10}  {:>8} {:>8}  comm", "events", "pid", "tid")?;
    for ((pid, tid), count) in tids.iter().take(10) {
        writeln!(out, "{count:>10}  {pid:>8} {tid:>8}  {}", comm_of(*tid))?;
    }
    out.flush()?;
    Ok(n)
}

/// The oldest and newest event timestamps the manifest's coverage records (0 when it has none).
pub fn coverage_span(manifest: &Manifest) -> (u64, u64) {
    let cov = &manifest.coverage;
    let oldest = cov.iter().filter_map(|c| c.oldest_ts_ns).min();
    let newest = cov.iter().filter_map(|c| c.newest_ts_ns).max();
    (oldest.unwrap_or(0), newest.unwrap_or(0))
}

/// Which events `dump` prints. Threads are chosen by every kind given (pid AND comm...), any
/// value within a kind; an event is printed when its own thread is chosen, or the thread it
/// switches to, wakes or forks. Empty: every event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DumpFilter {
    /// Process ids (thread group ids).
    pub pids: Vec<u32>,
    /// Thread ids.
    pub tids: Vec<u32>,
    /// Thread names: a thread matches when any name it had (in the statedump or in the events,
    /// before or after an exec) is one of these.
    pub comms: Vec<String>,
    /// First event time printed.
    pub begin: Option<TimeSpec>,
    /// Last event time printed.
    pub end: Option<TimeSpec>,
}

impl DumpFilter {
    fn picks_threads(&self) -> bool {
        !(self.pids.is_empty() && self.tids.is_empty() && self.comms.is_empty())
    }
}

/// The filter made ready for one file: the time bounds resolved and, for `--comm`, the names
/// every thread had.
struct Chosen<'a> {
    filter: &'a DumpFilter,
    begin: u64,
    end: u64,
    names: HashMap<u32, Vec<String>>,
}

impl Chosen<'_> {
    fn thread(&self, pid: u32, tid: u32) -> bool {
        let f = self.filter;
        (f.tids.is_empty() || f.tids.contains(&tid))
            && (f.pids.is_empty() || f.pids.contains(&pid))
            && (f.comms.is_empty()
                || self
                    .names
                    .get(&tid)
                    .is_some_and(|n| n.iter().any(|c| f.comms.contains(c))))
    }

    fn event(&self, ev: &Event) -> bool {
        if !self.filter.picks_threads() {
            return true;
        }
        self.thread(ev.pid, ev.tid)
            || other_thread(ev).is_some_and(|(pid, tid, _)| self.thread(pid, tid))
    }
}

/// The thread an event names besides its own: the one switched to, woken or forked, with the
/// name the event gives it.
fn other_thread(ev: &Event) -> Option<(u32, u32, [u8; schemas::COMM_LEN])> {
    use schemas::event::EventData as D;
    match &ev.data {
        D::SchedSwitch(s) => Some((s.next_pid, s.next_tid, s.next_comm)),
        D::SchedWakeup(w) | D::SchedWakeupNew(w) => Some((w.pid, w.tid, w.comm)),
        D::ProcessFork(f) => Some((f.child_pid, f.child_tid, f.child_comm)),
        _ => None,
    }
}

/// The name an event gives its own thread, if any.
fn own_name(ev: &Event) -> Option<[u8; schemas::COMM_LEN]> {
    use schemas::event::EventData as D;
    match &ev.data {
        D::SchedSwitch(s) => Some(s.prev_comm),
        D::ProcessFork(f) => Some(f.parent_comm),
        D::ProcessExit(x) => Some(x.comm),
        _ => None,
    }
}

/// Prepares `filter` for `path`: resolves the time bounds and, when threads are chosen by
/// name, reads the file once to learn every name each thread had.
fn choose<'a>(
    path: &Path,
    manifest: &Manifest,
    filter: &'a DumpFilter,
) -> Result<Chosen<'a>, DumpError> {
    let (first, last) = coverage_span(manifest);
    let begin = filter.begin.map_or(0, |t| t.resolve(first, last));
    let end = filter.end.map_or(u64::MAX, |t| t.resolve(first, last));
    let mut names: HashMap<u32, Vec<String>> = HashMap::new();
    let mut add = |tid: u32, name: String| {
        let v = names.entry(tid).or_default();
        if !v.contains(&name) {
            v.push(name);
        }
    };
    if !filter.comms.is_empty() {
        for t in manifest.statedump.processes.iter().flat_map(|p| &p.threads) {
            add(t.tid, t.comm.clone());
        }
        let (_, events) = open(path)?;
        for ev in events {
            let ev = ev?;
            if let Some(c) = own_name(&ev) {
                add(ev.tid, schemas::cstr_lossy(&c));
            }
            if let Some((_, tid, c)) = other_thread(&ev) {
                add(tid, schemas::cstr_lossy(&c));
            }
            if let schemas::event::EventData::ProcessExec(x) = &ev.data {
                add(ev.tid, exec_comm(&schemas::cstr_lossy(&x.filename)));
            }
        }
    }
    Ok(Chosen {
        filter,
        begin,
        end,
        names,
    })
}

/// The name the kernel gives a thread that execs `filename`: its last component, cut to the
/// 15 bytes a comm holds.
fn exec_comm(filename: &str) -> String {
    let base = filename.rsplit('/').next().unwrap_or(filename);
    let mut end = base.len().min(schemas::COMM_LEN - 1);
    while !base.is_char_boundary(end) {
        end -= 1;
    }
    base[..end].to_owned()
}
