//! Latency summaries and BCC-style log2 histograms shared by every analysis.

use serde::Serialize;

/// Count, extremes, mean, percentiles and total of a set of durations (ns).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LatencyStats {
    /// Number of samples.
    pub count: u64,
    /// Smallest sample.
    pub min_ns: u64,
    /// Mean, rounded down.
    pub avg_ns: u64,
    /// Median (nearest rank).
    pub p50_ns: u64,
    /// 99th percentile (nearest rank).
    pub p99_ns: u64,
    /// Largest sample.
    pub max_ns: u64,
    /// Sum of all samples.
    pub total_ns: u64,
}

impl LatencyStats {
    /// Summarises `samples`, sorting them in place.
    pub fn of(samples: &mut [u64]) -> LatencyStats {
        if samples.is_empty() {
            return LatencyStats::default();
        }
        samples.sort_unstable();
        let total: u64 = samples.iter().sum();
        LatencyStats {
            count: samples.len() as u64,
            min_ns: samples[0],
            avg_ns: total / samples.len() as u64,
            p50_ns: percentile(samples, 50.0),
            p99_ns: percentile(samples, 99.0),
            max_ns: samples[samples.len() - 1],
            total_ns: total,
        }
    }
}

/// Nearest-rank percentile of sorted, non-empty `sorted`: the smallest sample with at least `p`
/// percent of the samples at or below it.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    debug_assert!(!sorted.is_empty());
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One row of a [`Log2Hist`]: samples whose value in the histogram's unit lies in `low..=high`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Bucket {
    /// Lowest value of the bucket.
    pub low: u64,
    /// Highest value of the bucket.
    pub high: u64,
    /// Samples in it.
    pub count: u64,
}

/// A power-of-two histogram in microseconds, as BCC's tools print them: the first bucket holds
/// 0–1 µs, then 2–3, 4–7, 8–15 and so on. Buckets run from the first to the last non-empty one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Log2Hist {
    /// Unit of `low` and `high`: always `"us"`.
    pub unit: &'static str,
    /// The buckets, in increasing order.
    pub buckets: Vec<Bucket>,
}

/// Bucket index of `v`: 0 for 0 and 1, else floor(log2(v)).
fn slot(v: u64) -> usize {
    if v < 2 {
        0
    } else {
        63 - v.leading_zeros() as usize
    }
}

fn slot_range(s: usize) -> (u64, u64) {
    if s == 0 {
        (0, 1)
    } else {
        (
            1 << s,
            (1u64 << s).saturating_mul(2).saturating_sub(1).max(1 << s),
        )
    }
}

impl Log2Hist {
    /// Histogram of `samples_ns`, converted to whole microseconds (rounded down).
    pub fn of(samples_ns: &[u64]) -> Log2Hist {
        let mut counts = [0u64; 64];
        for &ns in samples_ns {
            counts[slot(ns / 1000)] += 1;
        }
        let (Some(first), Some(last)) = (
            counts.iter().position(|&c| c > 0),
            counts.iter().rposition(|&c| c > 0),
        ) else {
            return Log2Hist {
                unit: "us",
                buckets: Vec::new(),
            };
        };
        Log2Hist {
            unit: "us",
            buckets: (first..=last)
                .map(|s| {
                    let (low, high) = slot_range(s);
                    Bucket {
                        low,
                        high,
                        count: counts[s],
                    }
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[7], 99.0), 7);
        // 10 samples: p99 is the 10th, p50 the 5th.
        let v: Vec<u64> = (1..=10).map(|x| x * 10).collect();
        assert_eq!(percentile(&v, 99.0), 100);
        assert_eq!(percentile(&v, 50.0), 50);
    }

    #[test]
    fn stats_of_samples() {
        let mut v = vec![30, 10, 20, 40];
        let s = LatencyStats::of(&mut v);
        assert_eq!(
            s,
            LatencyStats {
                count: 4,
                min_ns: 10,
                avg_ns: 25,
                p50_ns: 20,
                p99_ns: 40,
                max_ns: 40,
                total_ns: 100
            }
        );
        assert_eq!(LatencyStats::of(&mut []), LatencyStats::default());
    }

    #[test]
    fn log2_buckets_match_bcc() {
        // 0.5 µs, 1 µs, 3 µs, 4 µs, 7 µs, 1000 µs.
        let h = Log2Hist::of(&[500, 1_000, 3_999, 4_000, 7_999, 1_000_000]);
        let rows: Vec<(u64, u64, u64)> =
            h.buckets.iter().map(|b| (b.low, b.high, b.count)).collect();
        assert_eq!(
            rows,
            vec![
                (0, 1, 2),
                (2, 3, 1),
                (4, 7, 2),
                (8, 15, 0),
                (16, 31, 0),
                (32, 63, 0),
                (64, 127, 0),
                (128, 255, 0),
                (256, 511, 0),
                (512, 1023, 1),
            ]
        );
        assert!(Log2Hist::of(&[]).buckets.is_empty());
        // Starts at the first non-empty bucket.
        assert_eq!(Log2Hist::of(&[40_000]).buckets[0].low, 32);
    }
}
