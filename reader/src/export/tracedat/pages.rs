//! Packs one CPU's records into ftrace ring-buffer pages, as the kernel's `ring_buffer.c` lays
//! them out and libtraceevent's `kbuffer` reads them.
//!
//! A page is a header (u64 timestamp of the page, u64 `commit` = bytes of event data) followed
//! by events, each starting with a little-endian u32 whose low 5 bits are `type_len` and high 27
//! bits `time_delta`, the ns since the previous event (or the page timestamp):
//!
//! - `type_len` 1..=28: a record of `type_len * 4` bytes follows the header word;
//! - `type_len` 0: the next u32 is the record length plus 4, then the record (longer records);
//! - `type_len` 30 (`TIME_EXTEND`): the next u32 holds bits 27.. of a delta too big for 27 bits;
//!   the event after it carries delta 0.
//!
//! Records are padded to 4 bytes. The rest of a page after `commit` is zeros, which readers skip
//! because `commit` says where the data ends.

use std::io::{self, Write};

/// Bytes of a page header: timestamp and commit (a kernel `local_t`, 8 bytes on 64-bit).
pub(super) const PAGE_HEADER_LEN: usize = 16;
const TYPE_TIME_EXTEND: u32 = 30;
/// Largest `type_len` that encodes a record length.
const MAX_SMALL_TYPE_LEN: usize = 28;
const DELTA_BITS: u32 = 27;

/// Writes pages of `page_size` bytes to `out`.
pub(super) struct PageWriter<W: Write> {
    out: W,
    page: Vec<u8>,
    /// Bytes of event data in `page`, after the header.
    used: usize,
    page_ts: u64,
    last_ts: u64,
    pages: u64,
}

/// Bytes an event header plus a record of `len` bytes take.
fn event_len(len: usize) -> usize {
    let padded = len.next_multiple_of(4);
    if padded / 4 <= MAX_SMALL_TYPE_LEN {
        4 + padded
    } else {
        8 + padded
    }
}

impl<W: Write> PageWriter<W> {
    /// A writer of pages of `page_size` bytes.
    pub(super) fn new(out: W, page_size: usize) -> Self {
        PageWriter {
            out,
            page: vec![0; page_size],
            used: 0,
            page_ts: 0,
            last_ts: 0,
            pages: 0,
        }
    }

    fn capacity(&self) -> usize {
        self.page.len() - PAGE_HEADER_LEN
    }

    fn put_u32(&mut self, v: u32) {
        let at = PAGE_HEADER_LEN + self.used;
        self.page[at..at + 4].copy_from_slice(&v.to_le_bytes());
        self.used += 4;
    }

    /// Writes the current page, if it holds anything, and starts an empty one.
    fn flush_page(&mut self) -> io::Result<()> {
        if self.used == 0 {
            return Ok(());
        }
        self.page[0..8].copy_from_slice(&self.page_ts.to_le_bytes());
        self.page[8..16].copy_from_slice(&(self.used as u64).to_le_bytes());
        let end = PAGE_HEADER_LEN + self.used;
        self.page[end..].fill(0);
        self.out.write_all(&self.page)?;
        self.pages += 1;
        self.used = 0;
        Ok(())
    }

    /// Appends `record` at time `ts` (ns).
    pub(super) fn push(&mut self, ts: u64, record: &[u8]) -> io::Result<()> {
        let need = event_len(record.len());
        if need > self.capacity() {
            return Err(io::Error::other(format!(
                "a record of {} bytes does not fit in a page",
                record.len()
            )));
        }
        // A page's events can only move forward in time; a record older than the one before
        // it (never expected: streams are time-ordered) starts a page of its own, so its time
        // stays exact.
        if self.used > 0 && ts < self.last_ts {
            self.flush_page()?;
        }
        let delta = ts - if self.used == 0 { ts } else { self.last_ts };
        let extend = if delta >> DELTA_BITS != 0 { 8 } else { 0 };
        if self.used + extend + need > self.capacity() {
            self.flush_page()?;
        }
        let mut delta = if self.used == 0 {
            self.page_ts = ts;
            0
        } else {
            delta
        };
        if delta >> DELTA_BITS != 0 {
            let high = delta >> DELTA_BITS;
            let high = u32::try_from(high).map_err(|_| {
                io::Error::other(format!("a time gap of {delta} ns is too large to encode"))
            })?;
            self.put_u32(TYPE_TIME_EXTEND | ((delta as u32 & ((1 << DELTA_BITS) - 1)) << 5));
            self.put_u32(high);
            delta = 0;
        }
        let padded = record.len().next_multiple_of(4);
        let type_len = padded / 4;
        if type_len <= MAX_SMALL_TYPE_LEN {
            self.put_u32(type_len as u32 | ((delta as u32) << 5));
        } else {
            self.put_u32((delta as u32) << 5);
            self.put_u32(padded as u32 + 4);
        }
        let at = PAGE_HEADER_LEN + self.used;
        self.page[at..at + record.len()].copy_from_slice(record);
        self.page[at + record.len()..at + padded].fill(0);
        self.used += padded;
        self.last_ts = ts;
        Ok(())
    }

    /// Writes the last page; returns the output and the number of pages written.
    pub(super) fn finish(mut self) -> io::Result<(W, u64)> {
        self.flush_page()?;
        Ok((self.out, self.pages))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn small_events_deltas_and_time_extend() {
        let mut w = PageWriter::new(Vec::new(), 4096);
        w.push(1_000, &[1; 6]).unwrap();
        w.push(1_010, &[2; 8]).unwrap();
        w.push(1_010 + (5 << 27) + 3, &[3; 4]).unwrap();
        let (out, pages) = w.finish().unwrap();
        assert_eq!((out.len(), pages), (4096, 1));
        assert_eq!(u64::from_le_bytes(out[0..8].try_into().unwrap()), 1_000);
        // 4+8, 4+8, 8 (extend) + 4+4.
        assert_eq!(u64::from_le_bytes(out[8..16].try_into().unwrap()), 40);
        assert_eq!(u32_at(&out, 16), 2); // type_len 2, delta 0
        assert_eq!(&out[20..28], &[1, 1, 1, 1, 1, 1, 0, 0]);
        assert_eq!(u32_at(&out, 28), 2 | (10 << 5));
        assert_eq!(u32_at(&out, 40), 30 | (3 << 5));
        assert_eq!(u32_at(&out, 44), 5);
        assert_eq!(u32_at(&out, 48), 1);
    }

    #[test]
    fn full_pages_and_backward_time_start_new_pages() {
        let mut w = PageWriter::new(Vec::new(), 64);
        // 48 bytes of data per page: two 20-byte events fit, the third does not.
        for i in 0..3 {
            w.push(100 + i, &[0; 16]).unwrap();
        }
        w.push(50, &[0; 16]).unwrap();
        let (out, pages) = w.finish().unwrap();
        assert_eq!(pages, 3);
        let page_ts = |p: usize| u64::from_le_bytes(out[p * 64..p * 64 + 8].try_into().unwrap());
        assert_eq!((page_ts(0), page_ts(1), page_ts(2)), (100, 102, 50));
        assert!(PageWriter::new(Vec::new(), 64).push(0, &[0; 60]).is_err());
    }

    #[test]
    fn long_records_carry_their_length() {
        let mut w = PageWriter::new(Vec::new(), 4096);
        w.push(7, &[9; 130]).unwrap();
        let (out, _) = w.finish().unwrap();
        assert_eq!(u32_at(&out, 16), 0);
        assert_eq!(u32_at(&out, 20), 132 + 4);
        assert_eq!(u64::from_le_bytes(out[8..16].try_into().unwrap()), 8 + 132);
    }
}
