//! One CTF data stream (one CPU): packets of bounded size written as they fill.
//!
//! Packet layout (all little-endian, every field byte-aligned):
//!
//! ```text
//! header   magic u32 = 0xC1FC1FC1 | uuid [16] | stream_id u32 = 0 | stream_instance_id u64 (cpu)
//! context  timestamp_begin u64 | timestamp_end u64 | content_size u64 (bits)
//!          | packet_size u64 (bits) | packet_seq_num u64 | events_discarded u64 | cpu_id u32
//! event*   id u16 | timestamp u64 | tid i32 | pid i32 | payload
//! padding  zeros up to packet_size (a multiple of 4 KiB, as LTTng's sub-buffers are)
//! ```

use std::io::{self, Write};

use super::events::Value;

/// CTF packet magic.
const MAGIC: u32 = 0xC1FC_1FC1;
/// Bytes of header and context before the first event.
const PREAMBLE: usize = 84;
/// Offsets of the context fields patched when a packet closes.
const AT_TS_END: usize = 40;
const AT_CONTENT_SIZE: usize = 48;
const AT_PACKET_SIZE: usize = 56;
/// Packets are closed once their content would pass this size, which bounds the memory an
/// export holds per stream.
pub const MAX_PACKET: usize = 256 << 10;
/// Packet sizes are rounded up to this.
const PACKET_ALIGN: usize = 4096;

/// Writes the packets of one stream to `out`.
pub struct StreamWriter<W: Write> {
    out: W,
    cpu: u32,
    uuid: [u8; 16],
    discarded: u64,
    packet: Vec<u8>,
    scratch: Vec<u8>,
    seq: u64,
    last_ts: u64,
    /// Events written so far.
    pub events: u64,
    /// Bytes written so far (closed packets).
    pub bytes: u64,
}

impl<W: Write> StreamWriter<W> {
    /// A stream of `cpu` whose packets all report `discarded` as the count of events the
    /// recorder dropped on this CPU.
    pub fn new(out: W, cpu: u32, uuid: [u8; 16], discarded: u64) -> Self {
        StreamWriter {
            out,
            cpu,
            uuid,
            discarded,
            packet: Vec::with_capacity(MAX_PACKET),
            scratch: Vec::with_capacity(256),
            seq: 0,
            last_ts: 0,
            events: 0,
            bytes: 0,
        }
    }

    fn open_packet(&mut self, ts: u64) {
        let p = &mut self.packet;
        p.clear();
        p.extend_from_slice(&MAGIC.to_le_bytes());
        p.extend_from_slice(&self.uuid);
        p.extend_from_slice(&0u32.to_le_bytes());
        p.extend_from_slice(&u64::from(self.cpu).to_le_bytes());
        p.extend_from_slice(&ts.to_le_bytes()); // timestamp_begin
        p.extend_from_slice(&ts.to_le_bytes()); // timestamp_end, patched on close
        p.extend_from_slice(&0u64.to_le_bytes()); // content_size, patched
        p.extend_from_slice(&0u64.to_le_bytes()); // packet_size, patched
        p.extend_from_slice(&self.seq.to_le_bytes());
        p.extend_from_slice(&self.discarded.to_le_bytes());
        p.extend_from_slice(&self.cpu.to_le_bytes());
        debug_assert_eq!(p.len(), PREAMBLE);
        self.last_ts = ts;
    }

    fn close_packet(&mut self) -> io::Result<()> {
        let content = self.packet.len();
        let size = content.div_ceil(PACKET_ALIGN) * PACKET_ALIGN;
        let p = &mut self.packet;
        p[AT_TS_END..AT_TS_END + 8].copy_from_slice(&self.last_ts.to_le_bytes());
        p[AT_CONTENT_SIZE..AT_CONTENT_SIZE + 8]
            .copy_from_slice(&(content as u64 * 8).to_le_bytes());
        p[AT_PACKET_SIZE..AT_PACKET_SIZE + 8].copy_from_slice(&(size as u64 * 8).to_le_bytes());
        p.resize(size, 0);
        self.out.write_all(p)?;
        self.bytes += size as u64;
        self.seq += 1;
        p.clear();
        Ok(())
    }

    /// Appends one event of class `id` at `ts` by thread `tid` of process `pid`. Timestamps
    /// must not go backwards (the caller checks).
    pub fn event(
        &mut self,
        id: u16,
        ts: u64,
        tid: u32,
        pid: u32,
        fields: &[(&'static str, Value)],
    ) -> io::Result<()> {
        let e = &mut self.scratch;
        e.clear();
        e.extend_from_slice(&id.to_le_bytes());
        e.extend_from_slice(&ts.to_le_bytes());
        e.extend_from_slice(&(tid as i32).to_le_bytes());
        e.extend_from_slice(&(pid as i32).to_le_bytes());
        for (_, v) in fields {
            v.encode(e);
        }
        if !self.packet.is_empty() && self.packet.len() + self.scratch.len() > MAX_PACKET {
            self.close_packet()?;
        }
        if self.packet.is_empty() {
            self.open_packet(ts);
        }
        self.packet.extend_from_slice(&self.scratch);
        self.last_ts = ts;
        self.events += 1;
        Ok(())
    }

    /// Closes the last packet (writing an empty one spanning `begin..=end` if the stream has
    /// no event, so every CPU of the snapshot has a stream). Returns the events and bytes
    /// written.
    pub fn finish(mut self, begin: u64, end: u64) -> io::Result<(u64, u64)> {
        if self.events == 0 {
            self.open_packet(begin);
            self.last_ts = end.max(begin);
        }
        if !self.packet.is_empty() {
            self.close_packet()?;
        }
        self.out.flush()?;
        Ok((self.events, self.bytes))
    }
}
