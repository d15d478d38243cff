//! Block I/O: each `block_rq_issue` matched with the `block_rq_complete` of the same device and
//! sector (and size, as lttng-analyses does; requests of zero sectors, such as flushes, are
//! left out). Latency per device, throughput, the slowest requests with the task that issued
//! them, and the queue depth (requests in flight) over time.

use std::collections::{BTreeMap, HashMap};

use schemas::cstr_lossy;
use schemas::event::{Event, EventData, rwbs_string};
use serde::Serialize;

use super::cpu::{TIMELINE_BUCKETS, round2};
use super::stats::{LatencyStats, Log2Hist};

use super::{Ctx, Tasks, TopN};

/// One device.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeviceIo {
    /// `major:minor`.
    pub dev: String,
    /// Latency of completed requests.
    pub latency: LatencyStats,
    /// Its histogram.
    pub histogram: Log2Hist,
    /// Completed reads.
    pub reads: u64,
    /// Completed writes.
    pub writes: u64,
    /// Bytes read.
    pub read_bytes: u64,
    /// Bytes written.
    pub write_bytes: u64,
    /// Bytes read per second of the window.
    pub read_bytes_per_s: f64,
    /// Bytes written per second of the window.
    pub write_bytes_per_s: f64,
    /// Completions with an error.
    pub errors: u64,
    /// Most requests in flight at once.
    pub max_queue_depth: u64,
    /// Time-weighted mean of requests in flight.
    pub avg_queue_depth: f64,
    /// Most requests in flight within each of [`TIMELINE_BUCKETS`] slices of the window.
    pub queue_depth: Vec<u64>,
}

/// One request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BlockRequest {
    /// `major:minor`.
    pub dev: String,
    /// First sector.
    pub sector: u64,
    /// Sectors.
    pub nr_sector: u32,
    /// Bytes.
    pub bytes: u64,
    /// Operation and flags (`W`, `WS`, `R`, `FWS`...).
    pub rwbs: String,
    /// Issue time.
    pub issue_ns: u64,
    /// Completion time.
    pub complete_ns: u64,
    /// `complete_ns - issue_ns`.
    pub latency_ns: u64,
    /// Thread running when the request was issued.
    pub tid: u32,
    /// Its process.
    pub pid: u32,
    /// Its name.
    pub comm: String,
    /// Completion error (0: none).
    pub error: i32,
}

/// The block I/O analysis.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BlockReport {
    /// Completed requests.
    pub requests: u64,
    /// Per device.
    pub devices: Vec<DeviceIo>,
    /// Slowest requests (at most `--top`).
    pub slowest: Vec<BlockRequest>,
    /// Requests issued and not completed by the end of the window.
    pub in_flight: u64,
}

#[derive(Clone)]
struct Issue {
    ts: u64,
    nr_sector: u32,
    bytes: u32,
    tid: u32,
    pid: u32,
    comm: String,
    counted: bool,
}

#[derive(Default)]
struct DevAcc {
    lat: Vec<u64>,
    reads: u64,
    writes: u64,
    read_bytes: u64,
    write_bytes: u64,
    errors: u64,
    depth: u64,
    max_depth: u64,
    depth_since: u64,
    depth_area: u128,
    buckets: Vec<u64>,
    /// Buckets before this one hold their final maximum.
    filled: usize,
}

impl DevAcc {
    /// Carries the current depth into the buckets from the last change up to `upto`.
    fn fill(&mut self, upto: usize) {
        for b in self.filled..=upto.min(self.buckets.len() - 1) {
            self.buckets[b] = self.buckets[b].max(self.depth);
        }
        self.filled = self.filled.max(upto);
    }
}

/// Accumulates block I/O.
pub(crate) struct Block {
    begin: u64,
    end: u64,
    pending: HashMap<(u32, u64), Issue>,
    devs: BTreeMap<u32, DevAcc>,
    slowest: Option<TopN<BlockRequest>>,
}

impl Block {
    pub fn new(ctx: &Ctx) -> Block {
        Block {
            begin: ctx.begin,
            end: ctx.end,
            pending: HashMap::new(),
            devs: BTreeMap::new(),
            slowest: None,
        }
    }

    fn bucket(&self, ts: u64) -> usize {
        let width = ((self.end - self.begin) / TIMELINE_BUCKETS as u64).max(1);
        (((ts.saturating_sub(self.begin)) / width) as usize).min(TIMELINE_BUCKETS - 1)
    }

    fn depth_change(&mut self, dev: u32, ts: u64, up: bool) {
        let b = self.bucket(ts);
        let begin = self.begin;
        let d = self.devs.entry(dev).or_default();
        if d.buckets.is_empty() {
            d.buckets = vec![0; TIMELINE_BUCKETS];
            d.depth_since = begin;
        }
        d.fill(b);
        d.depth_area += u128::from(d.depth) * u128::from(ts.saturating_sub(d.depth_since));
        d.depth_since = ts;
        if up {
            d.depth += 1;
        } else {
            d.depth = d.depth.saturating_sub(1);
        }
        d.max_depth = d.max_depth.max(d.depth);
        d.buckets[b] = d.buckets[b].max(d.depth);
    }

    pub fn event(&mut self, ev: &Event, tasks: &Tasks, ctx: &Ctx) {
        match ev.data {
            EventData::BlockRqIssue(rq) => {
                if rq.nr_sector == 0 {
                    return;
                }
                let counted = ctx.selects(ev.tid, tasks);
                let comm = match cstr_lossy(&rq.comm) {
                    c if c.is_empty() => tasks.comm(ev.tid).to_owned(),
                    c => c,
                };
                self.pending.insert(
                    (rq.dev, rq.sector),
                    Issue {
                        ts: ev.ts_ns,
                        nr_sector: rq.nr_sector,
                        bytes: rq.bytes,
                        tid: ev.tid,
                        pid: ev.pid,
                        comm,
                        counted,
                    },
                );
                self.depth_change(rq.dev, ev.ts_ns, true);
            }
            EventData::BlockRqComplete(rq) => {
                if rq.nr_sector == 0 {
                    return;
                }
                let key = (rq.dev, rq.sector);
                match self.pending.get(&key) {
                    Some(i) if i.nr_sector == rq.nr_sector => {}
                    _ => return,
                }
                let issue = self.pending.remove(&key).expect("checked above");
                self.depth_change(rq.dev, ev.ts_ns, false);
                if !issue.counted {
                    return;
                }
                let lat = ev.ts_ns - issue.ts;
                let bytes = if issue.bytes > 0 {
                    u64::from(issue.bytes)
                } else {
                    u64::from(rq.nr_sector) * 512
                };
                let d = self.devs.entry(rq.dev).or_default();
                d.lat.push(lat);
                // REQ_OP_READ is 0; REQ_OP_WRITE 1 and REQ_OP_ZONE_APPEND 7 write data.
                if rq.op == 0 {
                    d.reads += 1;
                    d.read_bytes += bytes;
                } else if rq.op == 1 || rq.op == 7 {
                    d.writes += 1;
                    d.write_bytes += bytes;
                }
                d.errors += u64::from(rq.error != 0);
                self.slowest
                    .get_or_insert_with(|| TopN::new(ctx.opts.top))
                    .push(
                        lat,
                        BlockRequest {
                            dev: ctx.disks.name(rq.dev),
                            sector: rq.sector,
                            nr_sector: rq.nr_sector,
                            bytes,
                            rwbs: rwbs_string(rq.op, rq.rwbs_flags),
                            issue_ns: issue.ts,
                            complete_ns: ev.ts_ns,
                            latency_ns: lat,
                            tid: issue.tid,
                            pid: issue.pid,
                            comm: issue.comm,
                            error: rq.error,
                        },
                    );
            }
            _ => {}
        }
    }

    pub fn finish(self, _tasks: &Tasks, ctx: &Ctx) -> BlockReport {
        let window = self.end - self.begin;
        let per_s = |b: u64| {
            if window == 0 {
                0.0
            } else {
                round2(b as f64 * 1e9 / window as f64)
            }
        };
        let end = self.end;
        let devices: Vec<DeviceIo> = self
            .devs
            .into_iter()
            .map(|(dev, mut d)| {
                if !d.buckets.is_empty() {
                    d.fill(TIMELINE_BUCKETS - 1);
                }
                let area = d.depth_area
                    + u128::from(d.depth) * u128::from(end.saturating_sub(d.depth_since));
                DeviceIo {
                    dev: ctx.disks.name(dev),
                    histogram: Log2Hist::of(&d.lat),
                    latency: LatencyStats::of(&mut d.lat),
                    reads: d.reads,
                    writes: d.writes,
                    read_bytes: d.read_bytes,
                    write_bytes: d.write_bytes,
                    read_bytes_per_s: per_s(d.read_bytes),
                    write_bytes_per_s: per_s(d.write_bytes),
                    errors: d.errors,
                    max_queue_depth: d.max_depth,
                    avg_queue_depth: if window == 0 {
                        0.0
                    } else {
                        round2(area as f64 / window as f64)
                    },
                    queue_depth: d.buckets,
                }
            })
            .collect();
        BlockReport {
            requests: devices.iter().map(|d| d.latency.count).sum(),
            devices,
            slowest: self.slowest.map(TopN::into_sorted).unwrap_or_default(),
            in_flight: self.pending.len() as u64,
        }
    }
}
