//! `flightrec dump`: every event of a snapshot in time order, merged across CPUs while
//! streaming (memory stays bounded by one decoded record per CPU).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, Write};
use std::path::Path;

use schemas::event::{DecodeError, Event};
use schemas::file::{FormatError, Snapshot, StreamReader};
use schemas::manifest::Manifest;

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

/// Writes every event of `path` to `out`, as text lines or JSON lines. Returns the number of
/// events written.
pub fn dump(path: &Path, json: bool, out: &mut impl Write) -> Result<u64, DumpError> {
    let (manifest, events) = open(path)?;
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
    use std::collections::HashMap;
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
