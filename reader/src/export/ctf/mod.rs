//! `flightrec export --format ctf`: a CTF 1.8 trace in LTTng's kernel trace layout, read by
//! babeltrace2 (and babeltrace 1) and lttng-analyses; `docs/export-ctf.md` has the details.
//!
//! # Layout
//!
//! ```text
//! OUT/kernel/metadata        TSDL text (first line `/* CTF 1.8 */`)
//! OUT/kernel/channel0_<cpu>  one data stream per CPU of the snapshot
//! ```
//!
//! - Trace uuid: the snapshot id (32 hex digits), so exporting the same snapshot twice gives
//!   the same trace; every packet header carries it.
//! - Clock `monotonic`: the events' `CLOCK_MONOTONIC` ns, with `offset_s`/`offset` set from the
//!   manifest's `realtime_minus_monotonic_ns`, so readers show wall-clock times. Its uuid is the
//!   host's boot id (one monotonic clock per boot).
//! - `env`: `domain = "kernel"`, `tracer_name = "lttng-modules"` with version
//!   [`tsdl::TRACER_VERSION`] (what LTTng tools key on), host and kernel, and `flightrec_*`
//!   entries naming the snapshot.
//! - Packets (see [`stream`]) hold at most 256 KiB of events; their context carries `cpu_id`,
//!   the time span, sizes in bits, a sequence number, and `events_discarded` = the CPU's
//!   `records_lost` from the manifest coverage (records lost inside the window; readers report
//!   them once, with the stream's first packet). Records overwritten before the window are the
//!   normal edge of a flight recording, not a gap in it: their total is in `env` as
//!   `flightrec_records_overwritten`.
//! - Every event has the stream event context `_tid`, `_pid` (the current task, as
//!   `lttng add-context -k -t tid -t pid` gives) and a payload with the field names of
//!   `flightrec dump` prefixed with `_` (see [`events`] for the types and the few additions).
//! - The manifest's statedump becomes `lttng_statedump_start`, one
//!   `lttng_statedump_process_state` per thread and `lttng_statedump_end`, stamped at the first
//!   event of the snapshot on the lowest CPU's stream, so readers know thread names and pids
//!   from the start; with `lttng_statedump_file_descriptor` per open fd and
//!   `lttng_statedump_block_device` per disk the manifest lists.
//! - The kernel's path records of open-family calls are no event of their own: the path
//!   becomes the `filename` string of the `syscall_entry_open`/`openat` that follows.
//!
//! The export streams the snapshot one CPU at a time and holds one packet in memory. It is
//! written into a hidden directory beside `OUT` and renamed into place only when complete, so a
//! failed export leaves nothing behind.

pub mod events;
pub mod stream;
pub mod tsdl;

use std::fs::{self, File};
use std::io::{BufReader, BufWriter};
use std::path::Path;

use schemas::event::{Event, EventData};
use schemas::file::Snapshot;
use schemas::manifest::Manifest;

use super::{ExportError, ExportStats};
use stream::StreamWriter;
use tsdl::Classes;

/// Name of the directory holding the trace inside the output, as in an LTTng session.
pub const KERNEL_DIR: &str = "kernel";

/// Writes the snapshot at `input` as a CTF trace directory at `output` (which must not exist).
pub fn write(input: &Path, output: &Path) -> Result<ExportStats, ExportError> {
    super::export(input, super::Format::Ctf, output)
}

/// [`write`] against `budget` (all files of the trace together).
pub(crate) fn write_with(
    input: &Path,
    output: &Path,
    budget: &std::sync::Arc<super::Budget>,
) -> Result<ExportStats, ExportError> {
    if output.symlink_metadata().is_ok() {
        return Err(ExportError::OutputExists(output.to_path_buf()));
    }
    let snap = Snapshot::open(input)?;
    super::write_then_rename(output, |tmp| {
        fs::create_dir_all(tmp.join(KERNEL_DIR)).map_err(|source| ExportError::Write {
            path: tmp.to_path_buf(),
            source,
        })?;
        write_trace(input, &snap, &tmp.join(KERNEL_DIR), budget)
    })
}

/// 16 bytes derived from `parts` (two FNV-1a passes with different bases), for ids that must be
/// stable across exports when the manifest has no uuid to use.
fn derived_uuid(parts: &[&str]) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (half, basis) in [0xcbf2_9ce4_8422_2325u64, 0x6c62_272e_07bb_0142]
        .into_iter()
        .enumerate()
    {
        let mut h = basis;
        for p in parts {
            for b in p.bytes().chain([0]) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        out[half * 8..half * 8 + 8].copy_from_slice(&h.to_be_bytes());
    }
    out
}

/// The trace uuid of a snapshot: its id when that is 32 hex digits (it always is for
/// snapshots flightrec writes).
pub fn trace_uuid(m: &Manifest) -> [u8; 16] {
    tsdl::parse_uuid(&m.snapshot_id)
        .unwrap_or_else(|| derived_uuid(&["flightrec-trace", &m.snapshot_id]))
}

fn clock_uuid(m: &Manifest) -> [u8; 16] {
    tsdl::parse_uuid(&m.host.boot_id)
        .unwrap_or_else(|| derived_uuid(&["flightrec-clock", &m.host.host_id, &m.host.boot_id]))
}

fn write_trace(
    input: &Path,
    snap: &Snapshot,
    dir: &Path,
    budget: &std::sync::Arc<super::Budget>,
) -> Result<ExportStats, ExportError> {
    let m = &snap.manifest;
    let uuid = trace_uuid(m);
    let open = || -> Result<BufReader<File>, ExportError> {
        Ok(BufReader::new(
            File::open(input).map_err(schemas::file::FormatError::from)?,
        ))
    };

    let mut streams = snap.streams.clone();
    streams.sort_by_key(|s| s.cpu);
    // The statedump is stamped with the earliest event, which only the streams' first records
    // tell for sure.
    let mut first_ts: Option<u64> = None;
    for info in &streams {
        if let Some(r) = Snapshot::stream(info, open()?)?.next().transpose()? {
            first_ts = Some(first_ts.map_or(r.ts_ns, |t| t.min(r.ts_ns)));
        }
    }
    let begin = first_ts.unwrap_or(m.frozen_monotonic_ns);
    let end = m.frozen_monotonic_ns.max(begin);
    // A snapshot without sections still gets a stream for its statedump.
    let cpus: Vec<(u32, Option<&schemas::file::StreamInfo>)> = if streams.is_empty() {
        vec![(0, None)]
    } else {
        streams.iter().map(|s| (s.cpu, Some(s))).collect()
    };

    let mut classes = Classes::default();
    let mut stats = ExportStats::default();
    let mut fields = Vec::new();
    for (i, (cpu, info)) in cpus.into_iter().enumerate() {
        let path = dir.join(format!("channel0_{cpu}"));
        let werr = |source| ExportError::Write {
            path: path.clone(),
            source,
        };
        let file =
            BufWriter::with_capacity(1 << 20, budget.wrap(File::create(&path).map_err(werr)?));
        let discarded = m
            .coverage
            .iter()
            .find(|c| c.cpu == cpu)
            .map_or(0, |c| c.records_lost);
        let mut w = StreamWriter::new(file, cpu, uuid, discarded);
        if i == 0 {
            for (name, f) in events::statedump(m) {
                let id = classes.id(name, &f);
                w.event(id, begin, 0, 0, &f).map_err(werr)?;
            }
        }
        if let Some(info) = info {
            let mut prev = 0;
            // The last path record: (tid, ts, syscall, path).
            let mut path: Option<(u32, u64, u64, String)> = None;
            for rec in Snapshot::stream(info, open()?)? {
                let ev = Event::decode(&rec?).map_err(|e| ExportError::Decode(e.to_string()))?;
                if let EventData::SyscallPath(p, cut) = &ev.data {
                    // LTTng has no such event; the path is the `filename` of the entry that
                    // follows on this CPU (same thread, same time).
                    let mut s = schemas::cstr_lossy(&p.path);
                    if *cut {
                        s.push('…');
                    }
                    path = Some((ev.tid, ev.ts_ns, p.id, s));
                    continue;
                }
                if ev.ts_ns < prev {
                    return Err(ExportError::Decode(format!(
                        "cpu {cpu}: an event at {} ns follows one at {prev} ns; a snapshot's \
                         streams must be in time order",
                        ev.ts_ns
                    )));
                }
                prev = ev.ts_ns;
                let this_path = match (&ev.data, path.take()) {
                    (EventData::SyscallEntry(e), Some((tid, ts, id, p)))
                        if tid == ev.tid && ts == ev.ts_ns && id == e.id =>
                    {
                        Some(p)
                    }
                    _ => None,
                };
                events::fields_with_path(&ev, this_path.as_deref(), &mut fields);
                let id = classes.id(&ev.name(), &fields);
                w.event(id, ev.ts_ns, ev.tid, ev.pid, &fields)
                    .map_err(werr)?;
            }
        }
        let (n, bytes) = w.finish(begin, end).map_err(werr)?;
        stats.events += n;
        stats.bytes += bytes;
    }

    let text = tsdl::metadata(m, &uuid, &clock_uuid(m), &classes);
    let path = dir.join("metadata");
    fs::write(&path, &text).map_err(|source| ExportError::Write { path, source })?;
    stats.bytes += text.len() as u64;
    Ok(stats)
}
