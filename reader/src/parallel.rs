//! The events of a snapshot in time order, with each CPU's stream decompressed and decoded on a
//! thread of its own, so a reader whose per-event work is sequential (`analyze`) spends its own
//! core on that work alone and the other cores on zstd.
//!
//! The order is exactly [`crate::dump::MergedEvents`]'s (time, then CPU-stream order, then
//! the order within a stream), and so are the errors: a damaged stream yields its error where
//! the sequential merge would, after which the iterator ends. Memory stays bounded: each
//! thread hands over batches of [`BATCH`] events through a channel of [`DEPTH`] batches, so at
//! most `(DEPTH + 2) × BATCH` events per CPU are in flight whatever the snapshot's size.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use schemas::event::Event;
use schemas::file::{FormatError, Snapshot};
use schemas::manifest::Manifest;

use crate::dump::{Item, ReadError};

/// Events a decoding thread hands over at once: large enough that the channel costs little
/// per event, small enough that a CPU's batch stays in cache.
pub const BATCH: usize = 2048;
/// Batches a decoding thread may run ahead of the merge.
pub const DEPTH: usize = 4;

/// What a decoding thread sends: decoded events (a record that does not decode is carried as
/// its error, in place), or the stream's error, after which it sends nothing more.
type Batch = Result<Vec<Result<Event, schemas::event::DecodeError>>, FormatError>;

/// One stream's side of the merge.
struct Source {
    rx: Receiver<Batch>,
    buf: VecDeque<Result<Event, schemas::event::DecodeError>>,
}

/// Iterates over the events of a snapshot in time order; see the module documentation.
pub struct ParallelEvents {
    sources: Vec<Source>,
    heap: BinaryHeap<Reverse<(u64, usize, usize)>>,
    pending: Vec<Option<Result<Event, schemas::event::DecodeError>>>,
    seq: usize,
}

/// Opens `path` and returns its manifest and a time-ordered event iterator whose streams are
/// decoded on threads of their own (one per CPU stream).
pub fn open(path: &Path) -> Result<(Manifest, ParallelEvents), FormatError> {
    let snap = Snapshot::open(path)?;
    let mut sources = Vec::with_capacity(snap.streams.len());
    for info in &snap.streams {
        // Opened here, so a file that cannot be read fails the call rather than a thread.
        let f = BufReader::new(File::open(path)?);
        let stream = Snapshot::stream(info, f)?;
        let (tx, rx) = sync_channel(DEPTH);
        std::thread::Builder::new()
            .name(format!("decode-cpu{}", info.cpu))
            .spawn(move || decode(stream, tx))?;
        sources.push(Source {
            rx,
            buf: VecDeque::new(),
        });
    }
    let mut m = ParallelEvents {
        pending: (0..sources.len()).map(|_| None).collect(),
        sources,
        heap: BinaryHeap::new(),
        seq: 0,
    };
    for i in 0..m.sources.len() {
        m.refill(i)?;
    }
    Ok((snap.manifest, m))
}

/// Decodes one stream into batches until it ends, fails, or the merge is dropped.
fn decode(
    stream: impl Iterator<Item = Result<schemas::Record, FormatError>>,
    tx: SyncSender<Batch>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    for rec in stream {
        match rec {
            Ok(r) => batch.push(Event::decode(&r)),
            Err(e) => {
                if !batch.is_empty() && tx.send(Ok(batch)).is_err() {
                    return;
                }
                let _ = tx.send(Err(e));
                return;
            }
        }
        if batch.len() == BATCH {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            if tx.send(Ok(full)).is_err() {
                // The merge was dropped: nobody wants the rest.
                return;
            }
        }
    }
    if !batch.is_empty() {
        let _ = tx.send(Ok(batch));
    }
}

impl ParallelEvents {
    /// Puts the next event of stream `i` in the heap, if it has one.
    fn refill(&mut self, i: usize) -> Result<(), FormatError> {
        let src = &mut self.sources[i];
        if src.buf.is_empty() {
            match src.rx.recv() {
                Ok(Ok(batch)) => src.buf.extend(batch),
                Ok(Err(e)) => return Err(e),
                // The thread finished the stream.
                Err(_) => return Ok(()),
            }
        }
        if let Some(ev) = src.buf.pop_front() {
            // An undecodable record sorts by the timestamp its error carries, as in the
            // sequential merge, which orders records before decoding them.
            let ts = match &ev {
                Ok(e) => e.ts_ns,
                Err(schemas::event::DecodeError::UnknownKind { ts_ns, .. }) => *ts_ns,
            };
            self.heap.push(Reverse((ts, i, self.seq)));
            self.seq += 1;
            self.pending[i] = Some(ev);
        }
        Ok(())
    }
}

impl Iterator for ParallelEvents {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        let Reverse((_, i, _)) = self.heap.pop()?;
        let ev = self.pending[i].take().expect("heap entry has an event");
        if let Err(e) = self.refill(i) {
            self.heap.clear();
            return Some(Err(e.into()));
        }
        Some(ev.map_err(ReadError::from))
    }
}
