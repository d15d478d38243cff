//! `flightrec export --format tracedat`: a trace-cmd `trace.dat` file, version 6, that
//! `trace-cmd report` and KernelShark read like a trace recorded with ftrace.
//!
//! # Wire format
//!
//! All integers are little-endian; "long" is 8 bytes; pages are [`PAGE_SIZE`] bytes.
//!
//! | part | content |
//! | --- | --- |
//! | initial | `17 08 44`, `tracing`, `6\0`, endianness u8 = 0, long size u8 = 8, page size u32 |
//! | headers | `header_page\0`, u64 size, the ring-buffer page header description; `header_event\0`, u64 size, the event header description |
//! | ftrace formats | u32 count = 0 (no ftrace-internal events) |
//! | event formats | u32 systems; per system: name `\0`, u32 events, per event u64 size + `format` text |
//! | kallsyms, printk | u32 size = 0 each |
//! | cmdlines | u64 size, lines `tid comm\n` |
//! | cpus | u32 CPU count (the snapshot host's, at least one past the highest CPU with events) |
//! | options | `options  \0`, then (u16 id, u32 size, data)…, u16 0: `TRACECLOCK` (4, empty) and `UNAME` (5) |
//! | flyrecord | `flyrecord\0`, per CPU u64 offset + u64 size of its pages |
//! | trace clock | u64 size, `[mono]\n`: read because the `TRACECLOCK` option is present |
//! | CPU data | from the next page boundary, each CPU's pages in CPU order (see `pages`) |
//!
//! Events keep their `CLOCK_MONOTONIC` nanoseconds: ring-buffer timestamps are the snapshot's
//! `ts_ns` exactly, and the trace clock is named `mono` (the kernel's name for that clock), so
//! `trace-cmd report` prints the same seconds as `flightrec dump`.
//!
//! The event formats and their record layouts are in `formats`; their ids are the
//! [`EventKind`](schemas::EventKind) values.
//!
//! # Memory
//!
//! The snapshot is read twice, one CPU stream at a time: first for the comms that the cmdlines
//! table (which precedes the data) needs, then to write each CPU's pages in turn, after which
//! the per-CPU table is filled in. Memory holds one page, one record and the tid → comm table.

mod formats;
mod pages;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

use schemas::event::Event;
use schemas::file::{Snapshot, StreamInfo};
use schemas::manifest::Manifest;

use super::{ExportError, ExportStats};
use formats::{EVENTS, Encoder};
use pages::PageWriter;

/// Page size of the files written: the x86-64 one, which is also the one the page header
/// description announces.
pub const PAGE_SIZE: usize = 4096;

/// The trace clock written to the file: the kernel's `mono` clock is `CLOCK_MONOTONIC`, the
/// clock of every snapshot timestamp.
pub const TRACE_CLOCK: &str = "mono";

/// Most CPUs a file may describe: Linux's largest `NR_CPUS` on x86-64.
pub const MAX_CPUS: u32 = 8192;

const OPTION_DONE: u16 = 0;
const OPTION_TRACECLOCK: u16 = 4;
const OPTION_UNAME: u16 = 5;

/// Writes the snapshot at `input` to `output` as a trace.dat file. The file appears only when
/// complete: it is written under a temporary name beside `output` and renamed.
pub fn write(input: &Path, output: &Path) -> Result<ExportStats, ExportError> {
    super::export(input, super::Format::Tracedat, output)
}

/// [`write`] against `budget`.
pub(crate) fn write_with(
    input: &Path,
    output: &Path,
    budget: &Arc<super::Budget>,
) -> Result<ExportStats, ExportError> {
    if output.exists() {
        return Err(ExportError::OutputExists(output.to_path_buf()));
    }
    let events = super::write_then_rename(output, |tmp| {
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(tmp)
            .map_err(|source| ExportError::Write {
                path: tmp.to_path_buf(),
                source,
            })?;
        write_file(input, budget.wrap(file), tmp)
    })?;
    let bytes = std::fs::metadata(output)
        .map_err(|source| ExportError::Write {
            path: output.to_path_buf(),
            source,
        })?
        .len();
    Ok(ExportStats { events, bytes })
}

/// The streams of a snapshot grouped by CPU (file order within a CPU).
fn streams_by_cpu(snap: &Snapshot) -> BTreeMap<u32, Vec<StreamInfo>> {
    let mut by_cpu: BTreeMap<u32, Vec<StreamInfo>> = BTreeMap::new();
    for s in &snap.streams {
        by_cpu.entry(s.cpu).or_default().push(*s);
    }
    by_cpu
}

/// Calls `f` with every event of `streams`, in stream order.
fn for_each_event(
    input: &Path,
    streams: &[StreamInfo],
    mut f: impl FnMut(&Event) -> Result<(), ExportError>,
) -> Result<(), ExportError> {
    for info in streams {
        let file = BufReader::new(File::open(input).map_err(schemas::file::FormatError::from)?);
        for rec in Snapshot::stream(info, file)? {
            let ev = Event::decode(&rec?).map_err(|e| ExportError::Decode(e.to_string()))?;
            if matches!(ev.data, schemas::event::EventData::SyscallPath(..)) {
                // ftrace has no such event: the path is an argument of the entry that follows.
                continue;
            }
            f(&ev)?;
        }
    }
    Ok(())
}

/// The cmdlines table: statedump threads first (their comms are the newest), then the newest
/// comm events name for threads gone before the statedump. tid 0 is left to the reader
/// (`<idle>`).
fn cmdlines(manifest: &Manifest, seen: BTreeMap<u32, String>) -> String {
    let mut comms = seen;
    for p in &manifest.statedump.processes {
        comms.insert(p.pid, p.comm.clone());
        for t in &p.threads {
            comms.insert(t.tid, t.comm.clone());
        }
    }
    let mut s = String::new();
    for (tid, comm) in comms {
        if tid == 0 || comm.is_empty() {
            continue;
        }
        // One line per task: a newline in a comm would split it.
        let comm = comm.replace('\n', " ");
        s.push_str(&format!("{tid} {comm}\n"));
    }
    s
}

/// The `header_page` description: the page header trace-cmd's parser reads offsets and sizes
/// from (`commit` is 8 bytes: a 64-bit kernel's `local_t`).
fn header_page_text() -> String {
    let data = PAGE_SIZE - pages::PAGE_HEADER_LEN;
    format!(
        "\tfield: u64 timestamp;\toffset:0;\tsize:8;\tsigned:0;\n\
         \tfield: local_t commit;\toffset:8;\tsize:8;\tsigned:1;\n\
         \tfield: int overwrite;\toffset:8;\tsize:1;\tsigned:1;\n\
         \tfield: char data;\toffset:16;\tsize:{data};\tsigned:1;\n"
    )
}

/// The `header_event` description of the event header word (informational for readers).
const HEADER_EVENT: &str = "# compressed entry header\n\
    \ttype_len    :    5 bits\n\
    \ttime_delta  :   27 bits\n\
    \tarray       :   32 bits\n\
    \n\
    \tpadding     : type == 29\n\
    \ttime_extend : type == 30\n\
    \ttime_stamp : type == 31\n\
    \tdata max type_len  == 28\n";

/// Accumulates the file header in memory (it is small: formats, cmdlines, options).
#[derive(Default)]
struct Header(Vec<u8>);

impl Header {
    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
    fn u16(&mut self, v: u16) {
        self.bytes(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
    /// A text preceded by its u64 size.
    fn sized8(&mut self, text: &str) {
        self.u64(text.len() as u64);
        self.bytes(text.as_bytes());
    }
    fn option(&mut self, id: u16, data: &[u8]) {
        self.u16(id);
        self.u32(data.len() as u32);
        self.bytes(data);
    }
}

/// Everything before the CPU offset table.
fn header(manifest: &Manifest, cmdlines: &str, ncpu: u32) -> Vec<u8> {
    let mut h = Header::default();
    h.bytes(&[0x17, 0x08, 0x44]);
    h.bytes(b"tracing6\0");
    h.bytes(&[0, 8]); // little-endian, 8-byte long
    h.u32(PAGE_SIZE as u32);

    h.bytes(b"header_page\0");
    h.sized8(&header_page_text());
    h.bytes(b"header_event\0");
    h.sized8(HEADER_EVENT);

    h.u32(0); // ftrace-internal event formats

    let mut systems: Vec<&str> = Vec::new();
    for e in &EVENTS {
        if !systems.contains(&e.system) {
            systems.push(e.system);
        }
    }
    h.u32(systems.len() as u32);
    for system in systems {
        h.bytes(system.as_bytes());
        h.bytes(b"\0");
        let events: Vec<_> = EVENTS.iter().filter(|e| e.system == system).collect();
        h.u32(events.len() as u32);
        for e in events {
            h.sized8(&e.text());
        }
    }

    h.u32(0); // kallsyms
    h.u32(0); // printk formats
    h.sized8(cmdlines);
    h.u32(ncpu);

    h.bytes(b"options  \0");
    h.option(OPTION_TRACECLOCK, &[]);
    let host = &manifest.host;
    let uname = format!(
        "Linux {} {} {} {}\0",
        host.hostname, host.kernel_release, host.kernel_version, host.machine
    );
    h.option(OPTION_UNAME, uname.as_bytes());
    h.u16(OPTION_DONE);

    h.bytes(b"flyrecord\0");
    h.0
}

fn write_file(input: &Path, file: super::Capped<File>, path: &Path) -> Result<u64, ExportError> {
    let werr = |source: std::io::Error| ExportError::Write {
        path: path.to_path_buf(),
        source,
    };
    let snap = Snapshot::open(input)?;
    let by_cpu = streams_by_cpu(&snap);

    // Pass 1: the comms events name, for the cmdlines table written before the data. CPUs are
    // read one after the other, so the newest name of a thread is chosen by time.
    let mut seen: BTreeMap<u32, (u64, String)> = BTreeMap::new();
    for streams in by_cpu.values() {
        for_each_event(input, streams, |ev| {
            for (tid, comm) in formats::comms_of(ev) {
                match seen.get(&tid) {
                    Some((ts, _)) if *ts > ev.ts_ns => {}
                    _ => {
                        seen.insert(tid, (ev.ts_ns, comm));
                    }
                }
            }
            Ok(())
        })?;
    }
    let seen = seen.into_iter().map(|(tid, (_, c))| (tid, c)).collect();
    // The CPU table is sized by CPU numbers read from the file: bound them, so a corrupt number
    // cannot ask for gigabytes of table.
    let highest = by_cpu.keys().next_back().copied();
    if let Some(cpu) = highest.filter(|&c| c >= MAX_CPUS) {
        return Err(ExportError::Decode(format!(
            "cpu {cpu} is beyond the {MAX_CPUS} CPUs a kernel can have"
        )));
    }
    let host_ncpu = snap.manifest.host.ncpu;
    let ncpu = highest
        .map_or(1, |c| c + 1)
        .max(if host_ncpu <= MAX_CPUS { host_ncpu } else { 0 });

    let head = header(&snap.manifest, &cmdlines(&snap.manifest, seen), ncpu);
    let table_at = head.len() as u64;
    let clock = format!("[{TRACE_CLOCK}]\n");
    let clock_end = table_at + 16 * u64::from(ncpu) + 8 + clock.len() as u64;
    let data_start = clock_end.next_multiple_of(PAGE_SIZE as u64);

    let mut out = BufWriter::new(file);
    out.write_all(&head).map_err(werr)?;
    // The table is filled in once each CPU's size is known.
    out.write_all(&vec![0; 16 * ncpu as usize]).map_err(werr)?;
    out.write_all(&(clock.len() as u64).to_le_bytes())
        .map_err(werr)?;
    out.write_all(clock.as_bytes()).map_err(werr)?;
    out.write_all(&vec![0; (data_start - clock_end) as usize])
        .map_err(werr)?;

    // Pass 2: each CPU's pages, one CPU after the other.
    let encoder = Encoder::default();
    let mut record = Vec::with_capacity(256);
    let mut table = vec![(data_start, 0u64); ncpu as usize];
    let mut offset = data_start;
    let mut events = 0u64;
    for (&cpu, streams) in &by_cpu {
        let mut pages = PageWriter::new(out, PAGE_SIZE);
        for_each_event(input, streams, |ev| {
            encoder.encode(ev, &mut record);
            events += 1;
            pages.push(ev.ts_ns, &record).map_err(werr)
        })?;
        let (o, n) = pages.finish().map_err(werr)?;
        out = o;
        let size = n * PAGE_SIZE as u64;
        table[cpu as usize] = (offset, size);
        offset += size;
    }

    let mut file = out.into_inner().map_err(|e| werr(e.into_error()))?;
    file.seek(SeekFrom::Start(table_at)).map_err(werr)?;
    let mut t = Vec::with_capacity(table.len() * 16);
    for (off, size) in table {
        t.extend_from_slice(&off.to_le_bytes());
        t.extend_from_slice(&size.to_le_bytes());
    }
    file.write_all(&t).map_err(werr)?;
    file.get_ref().sync_all().map_err(werr)?;
    Ok(events)
}
