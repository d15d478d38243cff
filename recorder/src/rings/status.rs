//! What the rings hold right now, read without freezing them (for `flightrec status`).

use std::sync::atomic::Ordering;

use schemas::compact::{self, PACKET_SIZE};

use super::{MAIN, Rings, SPILL, word};

/// Live state of one CPU's main ring. Record counts other than `written` and `total` are
/// estimates: the ring holds bytes, and records vary in size, so they are the bytes held at
/// the window's average record size.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct CpuStatus {
    /// CPU number.
    pub cpu: u32,
    /// Records written since the window started (including overwritten ones).
    pub written: u64,
    /// Records currently held (estimate).
    pub held: u64,
    /// Records the ring holds at the window's average record size (estimate).
    pub capacity: u64,
    /// Records overwritten in this window (estimate).
    pub overwritten: u64,
    /// Bytes of the window held.
    #[serde(default)]
    pub held_bytes: u64,
    /// Bytes of the ring.
    #[serde(default)]
    pub capacity_bytes: u64,
    /// Timestamp of the oldest record held (the oldest packet's first).
    pub oldest_ts_ns: Option<u64>,
    /// Timestamp of the newest record held.
    pub newest_ts_ns: Option<u64>,
    /// Total records ever written on this CPU (main ring and spill), for rates.
    pub total: u64,
}

impl Rings {
    /// Records ever written on `cpu`, main ring and spill (monotonic, for rates).
    pub fn total(&self, cpu: u32) -> u64 {
        [MAIN, SPILL]
            .iter()
            .map(|&area| self.hword(area, cpu, word::WRITTEN).load(Ordering::SeqCst))
            .sum()
    }

    /// Fill and time window of each CPU's main ring.
    pub fn status(&self) -> Vec<CpuStatus> {
        let mut buf = Box::new([0u8; PACKET_SIZE]);
        (0..self.ncpu)
            .map(|cpu| {
                let w = |i| self.hword(MAIN, cpu, i).load(Ordering::SeqCst);
                let head = w(word::HEAD);
                let base = w(word::BASE).min(head);
                let written = w(word::WRITTEN).saturating_sub(w(word::BASE_WRITTEN))
                    + w(word::FOLDED).saturating_sub(w(word::BASE_FOLDED));
                let capacity_bytes = self.ring_bytes();
                let window_bytes = head - base;
                let held_bytes = window_bytes.min(capacity_bytes);
                let per_record = if written > 0 {
                    window_bytes as f64 / written as f64
                } else {
                    24.0
                };
                // A window that has not wrapped holds every record written in it: no
                // estimate (whose rounding would show one record overwritten).
                let held = if window_bytes <= capacity_bytes {
                    written
                } else {
                    ((held_bytes as f64 / per_record) as u64).min(written)
                };
                let oldest = self.window_packets(MAIN, cpu).find_map(|(pkt, _)| {
                    self.read_packet(MAIN, cpu, pkt, &mut buf);
                    (compact::u64_at(&buf[..], 0) == pkt + 1).then(|| compact::u64_at(&buf[..], 8))
                });
                let newest = self
                    .window_packets(MAIN, cpu)
                    .next_back()
                    .and_then(|(pkt, end)| {
                        self.read_packet(MAIN, cpu, pkt, &mut buf);
                        let mut newest = None;
                        compact::scan_packet(&buf[..], pkt, self.lap(MAIN, pkt), end, |ts| {
                            newest = newest.max(Some(ts))
                        });
                        newest
                    });
                CpuStatus {
                    cpu,
                    written,
                    held,
                    capacity: (capacity_bytes as f64 / per_record) as u64,
                    overwritten: written - held,
                    held_bytes,
                    capacity_bytes,
                    oldest_ts_ns: oldest,
                    newest_ts_ns: newest,
                    total: self.total(cpu),
                }
            })
            .collect()
    }
}
