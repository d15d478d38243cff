//! What the rings hold right now, read without freezing them (for `flightrec status`).

use std::sync::atomic::Ordering;

use super::Rings;

/// Live state of one CPU's active ring.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct CpuStatus {
    /// CPU number.
    pub cpu: u32,
    /// Records written since the window started (including overwritten ones).
    pub written: u64,
    /// Records currently held.
    pub held: u64,
    /// Ring capacity in records.
    pub capacity: u64,
    /// Records overwritten in this window.
    pub overwritten: u64,
    /// Timestamp of the oldest record held.
    pub oldest_ts_ns: Option<u64>,
    /// Timestamp of the newest record held.
    pub newest_ts_ns: Option<u64>,
    /// Total records ever written on this CPU (both epochs), for rates.
    pub total: u64,
}

impl Rings {
    /// Records ever written on `cpu`, both epochs (monotonic, for rates).
    pub fn total(&self, cpu: u32) -> u64 {
        (0..2)
            .map(|epoch| self.head(epoch, cpu).0.load(Ordering::SeqCst))
            .sum()
    }

    /// Fill and time window of each CPU's active ring.
    pub fn status(&self) -> Vec<CpuStatus> {
        let epoch = self.active_epoch();
        (0..self.ncpu)
            .map(|cpu| {
                let (start_window, start, end) = self.window(epoch, cpu);
                let oldest = (start..end)
                    .take(64)
                    .find_map(|i| self.read_slot(epoch, cpu, i).map(|r| r.ts_ns));
                let newest = (start..end)
                    .rev()
                    .take(64)
                    .find_map(|i| self.read_slot(epoch, cpu, i).map(|r| r.ts_ns));
                CpuStatus {
                    cpu,
                    written: end - start_window,
                    held: end - start,
                    capacity: self.slots,
                    overwritten: start - start_window,
                    oldest_ts_ns: oldest,
                    newest_ts_ns: newest,
                    total: self.total(cpu),
                }
            })
            .collect()
    }
}
