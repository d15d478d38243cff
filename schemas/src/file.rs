//! Snapshot files (`*.frs`), format version 2; version 1 files are read too.
//!
//! # Wire format
//!
//! All integers are little-endian.
//!
//! ```text
//! header     magic "FLTRSNAP" (8) | version u32 = 2 (or 1) | flags u32 = 0 | manifest_len u64
//! manifest   manifest_len bytes of UTF-8 JSON (see `manifest::Manifest`), at most 64 MiB; the
//!            JSON may be followed by spaces (room a writer kept to rewrite it)
//! section*   tag u32 = 1 | cpu u32 | record_count u64 | compressed_len u64 | uncompressed_len u64
//!            followed by compressed_len bytes: one zstd frame (with content checksum) holding
//!            record_count records of 96 bytes (`Record`), in time order;
//!            uncompressed_len == record_count * 96
//! packets*   (version 2) the same header with tag u32 = 2: the zstd frame holds
//!            uncompressed_len / 4096 packets of the compact ring format (`compact`), numbered
//!            0, 1, … with lap tag 0, padded after their last record, holding record_count
//!            records in ring order, each within `compact::Reorder::WINDOW` records of time order
//! trailer    tag u32 = 0xFFFF_FFFF | section_count u32 | file_len u64 (bytes before the trailer)
//!            | meta_crc u32 | reserved u32 = 0
//! ```
//!
//! `meta_crc` is the CRC-32 (IEEE) of every byte outside the compressed data and the trailer:
//! the header, the manifest and the section headers. The compressed data is covered by the
//! zstd frames' own checksums, so every byte of a file is checked.
//!
//! Decoding is streaming and bounded: no length field read from a file is used to size an
//! allocation except the manifest's, which is capped; a zstd stream that inflates past its
//! declared size is an error, as are a missing trailer, a section count or file length that do
//! not match, and anything after the trailer. A packet stream is put in time order with the
//! same bounded buffer the recorder uses; a damaged packet, or records further out of order,
//! are errors.

use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};

use crate::compact::{self, PACKET_SIZE};
use crate::manifest::Manifest;
use crate::{RECORD_SIZE, Record};

/// First bytes of every snapshot file.
pub const MAGIC: [u8; 8] = *b"FLTRSNAP";
/// Format version written by this crate.
pub const FORMAT_VERSION: u32 = 2;
/// Oldest format version this crate reads.
pub const OLDEST_FORMAT_VERSION: u32 = 1;
/// Largest manifest accepted.
pub const MAX_MANIFEST_LEN: u64 = 64 << 20;
/// Largest number of sections accepted.
pub const MAX_SECTIONS: u32 = 65_536;
/// Largest record count accepted in one section (2^32 records = 384 GiB of rings).
pub const MAX_RECORDS_PER_SECTION: u64 = 1 << 32;
/// Conventional file name extension.
pub const EXTENSION: &str = "frs";

const TAG_STREAM: u32 = 1;
const TAG_PACKETS: u32 = 2;
/// Largest packet count accepted in one section (2^24 packets = 64 GiB of rings).
const MAX_PACKETS_PER_SECTION: u64 = 1 << 24;
const TAG_END: u32 = 0xFFFF_FFFF;
const HEADER_LEN: u64 = 24;
const SECTION_HEADER_LEN: u64 = 32;
const TRAILER_LEN: u64 = 24;

/// Why a snapshot file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The underlying reader or writer failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The file does not start with the snapshot magic.
    #[error("not a flightrec snapshot (bad magic)")]
    BadMagic,
    /// The file is of a format version this build cannot read.
    #[error(
        "unsupported snapshot format version {0} (this build reads versions \
         {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION})"
    )]
    UnsupportedVersion(u32),
    /// The file ends before a structure it announces.
    #[error("snapshot is truncated: {0}")]
    Truncated(&'static str),
    /// A length or count is outside what the format allows.
    #[error("snapshot is corrupt: {0}")]
    Corrupt(String),
    /// The manifest is not valid JSON of the expected shape.
    #[error("snapshot manifest is invalid: {0}")]
    Manifest(#[from] serde_json::Error),
}

fn read_exact_or(r: &mut impl Read, buf: &mut [u8], what: &'static str) -> Result<(), FormatError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => FormatError::Truncated(what),
        _ => FormatError::Io(e),
    })
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Writes a snapshot file: header and manifest first, then one section per CPU stream.
pub struct SnapshotWriter<W: Write> {
    out: CountingWriter<W>,
    book: Book,
}

/// What the trailer needs, kept apart from the output so a [`StreamWriter`] can borrow both.
struct Book {
    sections: u32,
    level: i32,
    /// Header and manifest (with its padding) as written: the start of the checksummed bytes.
    head: Vec<u8>,
    /// CRC-32 of the section headers, in file order.
    sections_crc: crc32fast::Hasher,
}

struct CountingWriter<W> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write + Seek> CountingWriter<W> {
    /// Overwrites `bytes` at `pos` (already written) and comes back to the end.
    fn patch(&mut self, pos: u64, bytes: &[u8]) -> io::Result<()> {
        self.inner.seek(SeekFrom::Start(pos))?;
        self.inner.write_all(bytes)?;
        self.inner.seek(SeekFrom::Start(self.written))?;
        Ok(())
    }
}

/// The bytes of `records`, as they are stored in a stream.
fn records_as_bytes(records: &[Record]) -> &[u8] {
    // SAFETY: `Record` is `repr(C)`, made of integers only, without padding (its size is checked
    // against the sum of its fields by a const assert in the crate root), so every byte of a
    // slice of records is initialised.
    unsafe { std::slice::from_raw_parts(records.as_ptr() as *const u8, size_of_val(records)) }
}

fn section_header(
    cpu: u32,
    records: u64,
    compressed_len: u64,
) -> [u8; SECTION_HEADER_LEN as usize] {
    section_header_of(
        TAG_STREAM,
        cpu,
        records,
        compressed_len,
        records * RECORD_SIZE as u64,
    )
}

fn section_header_of(
    tag: u32,
    cpu: u32,
    records: u64,
    compressed_len: u64,
    uncompressed_len: u64,
) -> [u8; SECTION_HEADER_LEN as usize] {
    let mut sh = [0u8; SECTION_HEADER_LEN as usize];
    sh[0..4].copy_from_slice(&tag.to_le_bytes());
    sh[4..8].copy_from_slice(&cpu.to_le_bytes());
    sh[8..16].copy_from_slice(&records.to_le_bytes());
    sh[16..24].copy_from_slice(&compressed_len.to_le_bytes());
    sh[24..32].copy_from_slice(&uncompressed_len.to_le_bytes());
    sh
}

fn manifest_json(manifest: &Manifest, room: usize) -> Result<Vec<u8>, FormatError> {
    let mut json = serde_json::to_vec(manifest)?;
    let len = json.len();
    if (len + room) as u64 > MAX_MANIFEST_LEN {
        return Err(FormatError::Corrupt(format!(
            "manifest of {} bytes exceeds the {} byte limit",
            len + room,
            MAX_MANIFEST_LEN
        )));
    }
    // JSON allows trailing whitespace: the padding is room for a rewrite of the same length.
    json.resize(len + room, b' ');
    Ok(json)
}

impl<W: Write> SnapshotWriter<W> {
    /// Starts a file with `manifest`, compressing streams at zstd `level`.
    pub fn new(inner: W, manifest: &Manifest, level: i32) -> Result<Self, FormatError> {
        Self::with_room(inner, manifest, level, 0)
    }

    /// Like [`SnapshotWriter::new`], with `room` bytes of whitespace after the manifest's JSON
    /// so that [`SnapshotWriter::rewrite_manifest`] can replace it by a longer one.
    pub fn with_room(
        inner: W,
        manifest: &Manifest,
        level: i32,
        room: usize,
    ) -> Result<Self, FormatError> {
        let json = manifest_json(manifest, room)?;
        let mut head = Vec::with_capacity(HEADER_LEN as usize + json.len());
        head.extend_from_slice(&MAGIC);
        head.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        head.extend_from_slice(&0u32.to_le_bytes());
        head.extend_from_slice(&(json.len() as u64).to_le_bytes());
        head.extend_from_slice(&json);
        let mut out = CountingWriter { inner, written: 0 };
        out.write_all(&head)?;
        Ok(SnapshotWriter {
            out,
            book: Book {
                sections: 0,
                level,
                head,
                sections_crc: crc32fast::Hasher::new(),
            },
        })
    }

    /// Appends the record stream of one CPU. Records should be in time order.
    pub fn write_stream(&mut self, cpu: u32, records: &[Record]) -> Result<(), FormatError> {
        let mut enc = zstd::bulk::Compressor::new(self.book.level)?;
        enc.include_checksum(true)?;
        enc.include_contentsize(true)?;
        let compressed = enc.compress(records_as_bytes(records))?;
        let sh = section_header(cpu, records.len() as u64, compressed.len() as u64);
        self.out.write_all(&sh)?;
        self.out.write_all(&compressed)?;
        self.book.sections_crc.update(&sh);
        self.book.sections += 1;
        Ok(())
    }

    /// Writes the trailer and returns the inner writer.
    pub fn finish(mut self) -> Result<W, FormatError> {
        let len = self.out.written;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&self.book.head);
        crc.combine(&self.book.sections_crc);
        let crc = crc.finalize();
        self.out.write_all(&TAG_END.to_le_bytes())?;
        self.out.write_all(&self.book.sections.to_le_bytes())?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(&crc.to_le_bytes())?;
        self.out.write_all(&0u32.to_le_bytes())?;
        self.out.flush()?;
        Ok(self.out.inner)
    }
}

impl<W: Write + Seek> SnapshotWriter<W> {
    /// Replaces the manifest by `manifest`, which must fit in the room the file was started
    /// with (its JSON at most as long as the first one plus the `room` of
    /// [`SnapshotWriter::with_room`]). For facts learnt while the streams were written.
    pub fn rewrite_manifest(&mut self, manifest: &Manifest) -> Result<(), FormatError> {
        let reserved = self.book.head.len() - HEADER_LEN as usize;
        let mut json = serde_json::to_vec(manifest)?;
        if json.len() > reserved {
            return Err(FormatError::Corrupt(format!(
                "rewritten manifest of {} bytes does not fit the {reserved} bytes reserved",
                json.len()
            )));
        }
        json.resize(reserved, b' ');
        self.out.patch(HEADER_LEN, &json)?;
        self.book.head.truncate(HEADER_LEN as usize);
        self.book.head.extend_from_slice(&json);
        Ok(())
    }

    /// Starts the record stream of `cpu`: records given to the returned writer are compressed
    /// as they come, so a stream of any length costs the compressor's buffers only. The section
    /// header is filled in by [`StreamWriter::finish`]; a stream not finished leaves a file that
    /// fails to decode.
    pub fn begin_stream(&mut self, cpu: u32) -> Result<StreamWriter<'_, W>, FormatError> {
        Ok(StreamWriter {
            sec: self.open_section(cpu)?,
        })
    }

    /// Leaves room for a section header and starts its zstd frame.
    fn open_section(&mut self, cpu: u32) -> Result<Section<'_, W>, FormatError> {
        let header_pos = self.out.written;
        self.out.write_all(&[0u8; SECTION_HEADER_LEN as usize])?;
        let mut enc = zstd::stream::write::Encoder::new(&mut self.out, self.book.level)?;
        enc.include_checksum(true)?;
        Ok(Section {
            enc,
            book: &mut self.book,
            cpu,
            header_pos,
            records: 0,
        })
    }
}

/// A section being compressed into a file: what both stream writers share.
struct Section<'a, W: Write + Seek> {
    enc: zstd::stream::write::Encoder<'static, &'a mut CountingWriter<W>>,
    book: &'a mut Book,
    cpu: u32,
    header_pos: u64,
    records: u64,
}

impl<W: Write + Seek> Section<'_, W> {
    /// Ends the zstd frame and fills in the section header.
    fn close(self, tag: u32, uncompressed_len: u64) -> Result<(), FormatError> {
        let out = self.enc.finish()?;
        let data = self.header_pos + SECTION_HEADER_LEN;
        let sh = section_header_of(
            tag,
            self.cpu,
            self.records,
            out.written - data,
            uncompressed_len,
        );
        out.patch(self.header_pos, &sh)?;
        self.book.sections_crc.update(&sh);
        self.book.sections += 1;
        Ok(())
    }
}

impl<W: Write + Seek> SnapshotWriter<W> {
    /// Starts the packet stream of `cpu` (format 2): packets of the compact ring format given
    /// to the returned writer are compressed as they come. The section header is filled in by
    /// [`PacketStreamWriter::finish`].
    pub fn begin_packet_stream(
        &mut self,
        cpu: u32,
    ) -> Result<PacketStreamWriter<'_, W>, FormatError> {
        Ok(PacketStreamWriter {
            sec: self.open_section(cpu)?,
            packets: 0,
        })
    }
}

/// One CPU's packet stream being compressed into a file (see
/// [`SnapshotWriter::begin_packet_stream`]).
pub struct PacketStreamWriter<'a, W: Write + Seek> {
    sec: Section<'a, W>,
    packets: u64,
}

impl<W: Write + Seek> PacketStreamWriter<'_, W> {
    /// Appends the next packet, which holds `records` records. It must be numbered with its
    /// index in the stream and lap tag 0, and padded after its last record
    /// (`compact::renumber` does both).
    pub fn write_packet(&mut self, packet: &[u8], records: u64) -> Result<(), FormatError> {
        assert_eq!(packet.len(), PACKET_SIZE);
        self.sec.enc.write_all(packet)?;
        self.sec.records += records;
        self.packets += 1;
        Ok(())
    }

    /// Records appended so far.
    pub fn records(&self) -> u64 {
        self.sec.records
    }

    /// Ends the zstd frame and fills in the section header.
    pub fn finish(self) -> Result<(), FormatError> {
        self.sec
            .close(TAG_PACKETS, self.packets * PACKET_SIZE as u64)
    }
}

/// One CPU's record stream being compressed into a file (see [`SnapshotWriter::begin_stream`]).
pub struct StreamWriter<'a, W: Write + Seek> {
    sec: Section<'a, W>,
}

impl<W: Write + Seek> StreamWriter<'_, W> {
    /// Appends `records` (in time order, after those appended before).
    pub fn write(&mut self, records: &[Record]) -> Result<(), FormatError> {
        self.sec.enc.write_all(records_as_bytes(records))?;
        self.sec.records += records.len() as u64;
        Ok(())
    }

    /// Records appended so far.
    pub fn records(&self) -> u64 {
        self.sec.records
    }

    /// Ends the zstd frame and fills in the section header.
    pub fn finish(self) -> Result<(), FormatError> {
        let records = self.sec.records;
        self.sec.close(TAG_STREAM, records * RECORD_SIZE as u64)
    }
}

/// Where one CPU's record stream sits in a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    /// CPU the records were recorded on.
    pub cpu: u32,
    /// Number of records.
    pub record_count: u64,
    /// Bytes of compressed data.
    pub compressed_len: u64,
    /// Offset of the compressed data from the start of the file.
    pub offset: u64,
    /// Whether the stream holds packets of the compact ring format (format 2), not records.
    pub packets: bool,
    /// Bytes of uncompressed data.
    pub uncompressed_len: u64,
}

/// An opened snapshot: its manifest and the index of its streams. Streams are read on demand,
/// each through its own reader, so they can be merged without loading a whole file.
#[derive(Debug)]
pub struct Snapshot {
    /// The manifest.
    pub manifest: Manifest,
    /// The record streams, in file order.
    pub streams: Vec<StreamInfo>,
}

impl Snapshot {
    /// Reads the header, manifest and section index of a seekable snapshot, checking the
    /// structure end to end (but not the compressed data: see [`Snapshot::stream`]).
    pub fn read_index<R: Read + Seek>(r: &mut R) -> Result<Snapshot, FormatError> {
        let file_len = r.seek(SeekFrom::End(0))?;
        r.seek(SeekFrom::Start(0))?;
        let mut header = [0u8; HEADER_LEN as usize];
        read_exact_or(r, &mut header, "header")?;
        if header[..8] != MAGIC {
            return Err(FormatError::BadMagic);
        }
        let version = u32_at(&header, 8);
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(FormatError::UnsupportedVersion(version));
        }
        let flags = u32_at(&header, 12);
        if flags != 0 {
            return Err(FormatError::Corrupt(format!(
                "unknown header flags {flags:#x}"
            )));
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header);
        let manifest_len = u64_at(&header, 16);
        if manifest_len > MAX_MANIFEST_LEN {
            return Err(FormatError::Corrupt(format!(
                "manifest length {manifest_len} exceeds the {MAX_MANIFEST_LEN} byte limit"
            )));
        }
        if HEADER_LEN + manifest_len > file_len {
            return Err(FormatError::Truncated("manifest"));
        }
        let mut json = vec![0u8; manifest_len as usize];
        read_exact_or(r, &mut json, "manifest")?;
        crc.update(&json);

        let mut pos = HEADER_LEN + manifest_len;
        let mut streams = Vec::new();
        loop {
            let mut tag = [0u8; 4];
            read_exact_or(r, &mut tag, "section header or trailer (missing trailer)")?;
            match u32::from_le_bytes(tag) {
                t @ (TAG_STREAM | TAG_PACKETS) => {
                    let packets = t == TAG_PACKETS;
                    if packets && version < 2 {
                        return Err(FormatError::Corrupt(format!(
                            "a packet section at byte {pos} in a version {version} file"
                        )));
                    }
                    if streams.len() as u32 >= MAX_SECTIONS {
                        return Err(FormatError::Corrupt(format!(
                            "more than {MAX_SECTIONS} sections"
                        )));
                    }
                    let mut sh = [0u8; SECTION_HEADER_LEN as usize - 4];
                    read_exact_or(r, &mut sh, "section header")?;
                    crc.update(&tag);
                    crc.update(&sh);
                    let cpu = u32_at(&sh, 0);
                    let record_count = u64_at(&sh, 4);
                    let compressed_len = u64_at(&sh, 12);
                    let uncompressed_len = u64_at(&sh, 20);
                    if record_count > MAX_RECORDS_PER_SECTION {
                        return Err(FormatError::Corrupt(format!(
                            "section for cpu {cpu} claims {record_count} records"
                        )));
                    }
                    if packets {
                        // The smallest record is a header alone (8 bytes), after a packet's
                        // 16-byte header.
                        let n = uncompressed_len / PACKET_SIZE as u64;
                        let room = n * ((PACKET_SIZE - compact::PACKET_HEADER_SIZE) / 8) as u64;
                        if !uncompressed_len.is_multiple_of(PACKET_SIZE as u64)
                            || n > MAX_PACKETS_PER_SECTION
                            || record_count > room
                        {
                            return Err(FormatError::Corrupt(format!(
                                "section for cpu {cpu}: {uncompressed_len} bytes of packets \
                                 cannot hold {record_count} records"
                            )));
                        }
                    } else if uncompressed_len != record_count * RECORD_SIZE as u64 {
                        return Err(FormatError::Corrupt(format!(
                            "section for cpu {cpu}: {uncompressed_len} bytes cannot hold \
                             {record_count} records of {RECORD_SIZE} bytes"
                        )));
                    }
                    let offset = pos + SECTION_HEADER_LEN;
                    let end = offset.checked_add(compressed_len).ok_or_else(|| {
                        FormatError::Corrupt(format!("section for cpu {cpu} overflows"))
                    })?;
                    if end > file_len {
                        return Err(FormatError::Truncated("record stream"));
                    }
                    if streams.iter().any(|s: &StreamInfo| s.cpu == cpu) {
                        return Err(FormatError::Corrupt(format!("two sections for cpu {cpu}")));
                    }
                    streams.push(StreamInfo {
                        cpu,
                        record_count,
                        compressed_len,
                        offset,
                        packets,
                        uncompressed_len,
                    });
                    r.seek(SeekFrom::Start(end))?;
                    pos = end;
                }
                TAG_END => {
                    let mut tr = [0u8; TRAILER_LEN as usize - 4];
                    read_exact_or(r, &mut tr, "trailer")?;
                    let count = u32_at(&tr, 0);
                    let len = u64_at(&tr, 4);
                    let want_crc = u32_at(&tr, 12);
                    let reserved = u32_at(&tr, 16);
                    if count as usize != streams.len() || len != pos {
                        return Err(FormatError::Corrupt(format!(
                            "trailer says {count} sections / {len} bytes, found {} / {pos}",
                            streams.len()
                        )));
                    }
                    if pos + TRAILER_LEN != file_len {
                        return Err(FormatError::Corrupt(format!(
                            "{} unexpected bytes after the trailer",
                            file_len.saturating_sub(pos + TRAILER_LEN)
                        )));
                    }
                    let got_crc = crc.finalize();
                    if got_crc != want_crc || reserved != 0 {
                        return Err(FormatError::Corrupt(format!(
                            "metadata checksum mismatch (stored {want_crc:#010x}, computed \
                             {got_crc:#010x}): header, manifest or a section header is damaged"
                        )));
                    }
                    let manifest: Manifest = serde_json::from_slice(&json)?;
                    return Ok(Snapshot { manifest, streams });
                }
                other => {
                    return Err(FormatError::Corrupt(format!(
                        "unknown section tag {other:#x} at byte {pos}"
                    )));
                }
            }
        }
    }

    /// Opens the file at `path` and reads its index.
    pub fn open(path: &std::path::Path) -> Result<Snapshot, FormatError> {
        let mut f = std::fs::File::open(path)?;
        Snapshot::read_index(&mut f)
    }

    /// Streams the records of `info` from `r` (positioned anywhere: it seeks).
    pub fn stream<R: Read + Seek>(
        info: &StreamInfo,
        mut r: R,
    ) -> Result<StreamReader<io::Take<R>>, FormatError> {
        r.seek(SeekFrom::Start(info.offset))?;
        let packets = info
            .packets
            .then_some(info.uncompressed_len / PACKET_SIZE as u64);
        StreamReader::new(
            r.take(info.compressed_len),
            info.cpu,
            info.record_count,
            packets,
        )
    }

    /// Reads every stream of a file into memory (for small files and tests).
    pub fn read_all<R: Read + Seek>(
        r: &mut R,
    ) -> Result<(Manifest, Vec<Vec<Record>>), FormatError> {
        let snap = Snapshot::read_index(r)?;
        let mut out = Vec::with_capacity(snap.streams.len());
        for info in &snap.streams {
            let stream = Snapshot::stream(info, &mut *r)?;
            let mut recs = Vec::new();
            for rec in stream {
                recs.push(rec?);
            }
            out.push(recs);
        }
        Ok((snap.manifest, out))
    }
}

/// Iterates over the records of one stream, decompressing as it goes.
pub struct StreamReader<R: Read> {
    dec: zstd::stream::read::Decoder<'static, BufReader<R>>,
    cpu: u32,
    remaining: u64,
    finished: bool,
    packets: Option<Box<PacketState>>,
}

/// Where the reading of a packet stream is.
struct PacketState {
    /// Packets not read yet.
    left: u64,
    /// Number of the next packet.
    next: u64,
    reorder: compact::Reorder,
    ready: std::collections::VecDeque<Record>,
    /// Records decoded so far.
    decoded: u64,
    /// Whether every packet was read and the reorder buffer emptied.
    drained: bool,
}

impl<R: Read> StreamReader<R> {
    fn new(
        compressed: R,
        cpu: u32,
        record_count: u64,
        packets: Option<u64>,
    ) -> Result<Self, FormatError> {
        let mut dec = zstd::stream::read::Decoder::new(compressed)?;
        // A window bigger than 128 MiB would let a hostile frame make us allocate it.
        dec.window_log_max(27)?;
        Ok(StreamReader {
            dec: dec.single_frame(),
            cpu,
            remaining: record_count,
            finished: false,
            packets: packets.map(|left| {
                Box::new(PacketState {
                    left,
                    next: 0,
                    reorder: compact::Reorder::default(),
                    ready: Default::default(),
                    decoded: 0,
                    drained: false,
                })
            }),
        })
    }

    /// The frame must end exactly here, and its checksum must verify.
    fn end_of_frame(&mut self, what: &str) -> Result<Option<Record>, FormatError> {
        let mut extra = [0u8; 1];
        match self.dec.read(&mut extra) {
            Ok(0) => Ok(None),
            Ok(_) => Err(FormatError::Corrupt(format!(
                "stream for cpu {} holds more than its declared {what}",
                self.cpu
            ))),
            Err(e) => Err(stream_error(self.cpu, e)),
        }
    }

    /// Reads exactly `buf.len()` bytes; `Ok(false)` when the frame ends first.
    fn fill(&mut self, buf: &mut [u8]) -> Result<bool, FormatError> {
        let mut got = 0;
        while got < buf.len() {
            match self.dec.read(&mut buf[got..]) {
                Ok(0) => return Ok(false),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(stream_error(self.cpu, e)),
            }
        }
        Ok(true)
    }

    /// The next record of a packet stream, in time order.
    fn next_from_packets(&mut self) -> Result<Option<Record>, FormatError> {
        let cpu = self.cpu;
        let declared = self.remaining;
        loop {
            let st = self.packets.as_mut().expect("a packet stream");
            if let Some(r) = st.ready.pop_front() {
                return Ok(Some(r));
            }
            if st.drained {
                return self.end_of_frame("packets");
            }
            if st.left == 0 {
                let PacketState { reorder, ready, .. } = &mut **st;
                let _ = reorder.finish(&mut |b: &[Record]| {
                    ready.extend(b.iter().copied());
                    Ok::<_, std::convert::Infallible>(())
                });
                if st.reorder.disordered() > 0 {
                    return Err(FormatError::Corrupt(format!(
                        "stream for cpu {cpu}: {} records further out of time order than \
                         the format allows",
                        st.reorder.disordered()
                    )));
                }
                if st.decoded != declared {
                    return Err(FormatError::Corrupt(format!(
                        "stream for cpu {cpu} holds {} records, not its declared {declared}",
                        st.decoded
                    )));
                }
                st.drained = true;
                continue;
            }
            let mut buf = [0u8; PACKET_SIZE];
            if !self.fill(&mut buf)? {
                let left = self.packets.as_ref().map_or(0, |st| st.left);
                return Err(FormatError::Corrupt(format!(
                    "stream for cpu {cpu} ends {left} packets early"
                )));
            }
            let st = self.packets.as_mut().expect("a packet stream");
            let number = st.next;
            let PacketState {
                reorder,
                ready,
                decoded,
                ..
            } = &mut **st;
            let stop = compact::walk_packet(&buf[..], number, 0, PACKET_SIZE, cpu, |f| {
                *decoded += 1;
                let _ = reorder.push(f.record, &mut |b: &[Record]| {
                    ready.extend(b.iter().copied());
                    Ok::<_, std::convert::Infallible>(())
                });
            });
            match stop {
                Some(compact::Stop::End) => {}
                Some(compact::Stop::Torn(at)) => {
                    return Err(FormatError::Corrupt(format!(
                        "packet {number} of cpu {cpu}: damaged record at byte {at}"
                    )));
                }
                None => {
                    return Err(FormatError::Corrupt(format!(
                        "packet {number} of cpu {cpu}: damaged packet header"
                    )));
                }
            }
            if st.decoded > declared {
                return Err(FormatError::Corrupt(format!(
                    "stream for cpu {cpu} holds more than its declared {declared} records"
                )));
            }
            st.next += 1;
            st.left -= 1;
        }
    }

    /// CPU of this stream.
    pub fn cpu(&self) -> u32 {
        self.cpu
    }

    fn next_record(&mut self) -> Result<Option<Record>, FormatError> {
        if self.packets.is_some() {
            return self.next_from_packets();
        }
        if self.remaining == 0 {
            return self.end_of_frame("records");
        }
        let mut buf = [0u8; RECORD_SIZE];
        if !self.fill(&mut buf)? {
            return Err(FormatError::Corrupt(format!(
                "stream for cpu {} ends {} records early",
                self.cpu, self.remaining
            )));
        }
        self.remaining -= 1;
        Ok(Some(Record::from_bytes(&buf)))
    }
}

fn stream_error(cpu: u32, e: io::Error) -> FormatError {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => FormatError::Truncated("record stream"),
        _ => FormatError::Corrupt(format!("record stream for cpu {cpu}: {e}")),
    }
}

impl<R: Read> Iterator for StreamReader<R> {
    type Item = Result<Record, FormatError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        match self.next_record() {
            Ok(Some(r)) => Some(Ok(r)),
            Ok(None) => {
                self.finished = true;
                None
            }
            Err(e) => {
                self.finished = true;
                Some(Err(e))
            }
        }
    }
}
