//! Hard interrupt handlers (entry → exit of the same irq on the same CPU) and softirqs (entry
//! → exit of the same vector on the same CPU): count, total and extremes per handler.

use std::collections::{BTreeMap, HashMap};

use schemas::cstr_lossy;
use schemas::event::{Event, EventData};
use serde::Serialize;

use super::Ctx;
use super::stats::LatencyStats;

/// Names of the softirq vectors (`softirq_to_name`).
pub const SOFTIRQ_NAMES: [&str; 10] = [
    "HI", "TIMER", "NET_TX", "NET_RX", "BLOCK", "IRQ_POLL", "TASKLET", "SCHED", "HRTIMER", "RCU",
];

/// One hard irq handler.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IrqStats {
    /// irq number.
    pub irq: u32,
    /// Handler name.
    pub name: String,
    /// Handler durations.
    #[serde(flatten)]
    pub duration: LatencyStats,
}

/// One softirq vector.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SoftirqStats {
    /// Vector number.
    pub vec: u32,
    /// Vector name.
    pub name: String,
    /// Handler durations.
    #[serde(flatten)]
    pub duration: LatencyStats,
}

/// The interrupt analysis (system-wide: task filters do not apply).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IrqReport {
    /// Hard irqs, most total time first.
    pub hard: Vec<IrqStats>,
    /// Softirqs, most total time first.
    pub soft: Vec<SoftirqStats>,
    /// Time in hard irq handlers, all CPUs.
    pub hard_total_ns: u64,
    /// Time in softirqs, all CPUs.
    pub soft_total_ns: u64,
}

/// Accumulates interrupt durations.
#[derive(Default)]
pub(crate) struct Irq {
    hard_open: HashMap<u32, (u32, u64, String)>,
    soft_open: HashMap<u32, (u32, u64)>,
    hard: BTreeMap<(u32, String), Vec<u64>>,
    soft: BTreeMap<u32, Vec<u64>>,
}

impl Irq {
    pub fn event(&mut self, ev: &Event) {
        match ev.data {
            EventData::IrqHandlerEntry(e) => {
                self.hard_open
                    .insert(ev.cpu, (e.irq, ev.ts_ns, cstr_lossy(&e.name)));
            }
            EventData::IrqHandlerExit(x) => {
                if let Some((irq, ts, name)) = self.hard_open.remove(&ev.cpu)
                    && irq == x.irq
                {
                    self.hard
                        .entry((irq, name))
                        .or_default()
                        .push(ev.ts_ns - ts);
                }
            }
            EventData::SoftirqEntry(s) => {
                self.soft_open.insert(ev.cpu, (s.vec, ev.ts_ns));
            }
            EventData::SoftirqExit(s) => {
                if let Some((vec, ts)) = self.soft_open.remove(&ev.cpu)
                    && vec == s.vec
                {
                    self.soft.entry(vec).or_default().push(ev.ts_ns - ts);
                }
            }
            _ => {}
        }
    }

    pub fn finish(self, _ctx: &Ctx) -> IrqReport {
        let mut hard: Vec<IrqStats> = self
            .hard
            .into_iter()
            .map(|((irq, name), mut v)| IrqStats {
                irq,
                name,
                duration: LatencyStats::of(&mut v),
            })
            .collect();
        hard.sort_by(|a, b| {
            b.duration
                .total_ns
                .cmp(&a.duration.total_ns)
                .then(a.irq.cmp(&b.irq))
        });
        let mut soft: Vec<SoftirqStats> = self
            .soft
            .into_iter()
            .map(|(vec, mut v)| SoftirqStats {
                vec,
                name: SOFTIRQ_NAMES
                    .get(vec as usize)
                    .map_or_else(|| format!("vec{vec}"), |s| (*s).to_owned()),
                duration: LatencyStats::of(&mut v),
            })
            .collect();
        soft.sort_by(|a, b| {
            b.duration
                .total_ns
                .cmp(&a.duration.total_ns)
                .then(a.vec.cmp(&b.vec))
        });
        IrqReport {
            hard_total_ns: hard.iter().map(|h| h.duration.total_ns).sum(),
            soft_total_ns: soft.iter().map(|s| s.duration.total_ns).sum(),
            hard,
            soft,
        }
    }
}
