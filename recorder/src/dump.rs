//! `flightrec dump`: every event of a snapshot in time order, merged across CPUs while
//! streaming (memory stays bounded by one decoded record per CPU).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, Write};
use std::path::Path;

use schemas::event::Event;
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

/// One item of [`MergedEvents`]: a record that failed to decode is reported, not skipped.
pub type Item = Result<Event, String>;

impl Iterator for MergedEvents {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        let Reverse((_, i, _)) = self.heap.pop()?;
        let rec = self.pending[i].take().expect("heap entry has a record");
        if let Err(e) = self.refill(i) {
            self.heap.clear();
            return Some(Err(e.to_string()));
        }
        Some(Event::decode(&rec).map_err(|e| e.to_string()))
    }
}

/// Writes every event of `path` to `out`, as text lines or JSON lines. Returns the number of
/// events written.
pub fn dump(path: &Path, json: bool, out: &mut impl Write) -> anyhow::Result<u64> {
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
        let ev = ev.map_err(anyhow::Error::msg)?;
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
