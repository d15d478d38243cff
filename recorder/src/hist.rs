//! The in-kernel latency histograms (`schemas::hist`): which families the programs update, and
//! their Prometheus exposition, read from the pinned per-CPU maps when `GET /metrics` is
//! scraped (nothing is read between scrapes).
//!
//! Keys are named as people know them: cgroups by their path under the cgroup2 mount (cached;
//! the tree is walked again only when an unknown id shows up), disks by their name in
//! `/sys/dev/block`, syscalls by their x86-64 name, irqs by number and handler name, softirq
//! vectors by the kernel's names. At most [`MAX_SERIES`] cgroups and cgroup pairs are exposed,
//! the busiest first, so a host with thousands of groups cannot flood the scraper.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use aya::Pod;
use aya::maps::{Map, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues};
use schemas::config::ConfigError;
use schemas::hist::{Hist, PreemptStat, SLOTS, family};

use crate::config::Config;
use crate::metrics::Exposition;

/// Most cgroups (run-queue histograms) and cgroup pairs (preemptions) one scrape exposes.
pub const MAX_SERIES: usize = 100;

/// The histogram maps, pinned beside the rings so an adopting daemon reads them too.
pub const MAPS: &[&str] = &[
    "RUNQ_HIST",
    "PREEMPT_PAIRS",
    "BLOCK_HIST",
    "SYSCALL_HIST",
    "IRQ_HIST",
    "SOFTIRQ_HIST",
];

/// The families the programs are loaded with (`HIST_FAMILIES`): none without `[metrics]`;
/// `metrics.histograms` when set; otherwise every family whose event class is recorded.
pub fn families(config: &Config) -> Result<u32, ConfigError> {
    if !config.metrics.enabled() {
        return Ok(0);
    }
    let classes = config.events.enabled();
    let class_on = |class: &str| classes.iter().any(|c| c == class);
    let Some(names) = &config.metrics.histograms else {
        return Ok(family::ALL
            .iter()
            .filter(|(_, _, class)| class_on(class))
            .fold(0, |m, (bit, _, _)| m | bit));
    };
    let mut mask = 0;
    for name in names {
        let Some((bit, _, class)) = family::ALL.iter().find(|(_, n, _)| n == name) else {
            let known: Vec<&str> = family::ALL.iter().map(|(_, n, _)| *n).collect();
            return Err(ConfigError::Invalid(format!(
                "metrics.histograms entry {name:?} is not a histogram family (they are: {})",
                known.join(", ")
            )));
        };
        if !class_on(class) {
            return Err(ConfigError::Invalid(format!(
                "metrics.histograms has {name:?}, which needs [events] {class} = true"
            )));
        }
        mask |= bit;
    }
    Ok(mask)
}

/// First slot exposed as a bucket of its own: `le` 2^10 ns (about 1 µs); the slots below it are
/// in that bucket's cumulative count.
const FIRST_BUCKET: usize = 10;

impl Exposition {
    /// One histogram series: cumulative `le` buckets in seconds up to `+Inf`, `_sum`, `_count`.
    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Hist) {
        let bucket = format!("{name}_bucket");
        let mut cum = 0u64;
        for (i, n) in h.slots.iter().enumerate().take(SLOTS - 1) {
            cum += n;
            if i >= FIRST_BUCKET {
                // Slot i holds latencies below 2^i ns.
                let le = ((1u64 << i) as f64 / 1e9).to_string();
                let mut with_le = labels.to_vec();
                with_le.push(("le", &le));
                self.sample(&bucket, &with_le, cum);
            }
        }
        let count = h.count();
        let mut with_le = labels.to_vec();
        with_le.push(("le", "+Inf"));
        self.sample(&bucket, &with_le, count);
        self.sample(&format!("{name}_sum"), labels, h.sum_ns as f64 / 1e9);
        self.sample(&format!("{name}_count"), labels, count);
    }
}

/// Opens the pinned map `name` in `dir`, if it is there.
fn open(dir: &Path, name: &str) -> Option<Map> {
    let data = MapData::from_pin(dir.join(format!("map_{name}"))).ok()?;
    Map::from_map_data(data).ok()
}

/// Sums one key's per-CPU values.
fn merged_hist(values: &PerCpuValues<Hist>) -> Hist {
    let mut h = Hist::default();
    for v in values.iter() {
        h.merge(v);
    }
    h
}

/// Every key of a per-CPU hash map with its values summed over CPUs by `merge`.
fn read_hash<K: Pod + Eq + std::hash::Hash, V: Pod, T: Default>(
    dir: &Path,
    name: &str,
    merge: impl Fn(&mut T, &V),
) -> Vec<(K, T)> {
    let Some(map) = open(dir, name) else {
        return Vec::new();
    };
    let Ok(map) = PerCpuHashMap::<MapData, K, V>::try_from(map) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (key, values) in map.iter().flatten() {
        let mut t = T::default();
        for v in values.iter() {
            merge(&mut t, v);
        }
        out.push((key, t));
    }
    out
}

/// Every index of a per-CPU array of histograms that counted something.
fn read_array(dir: &Path, name: &str) -> Vec<(u32, Hist)> {
    let Some(map) = open(dir, name) else {
        return Vec::new();
    };
    let Ok(map) = PerCpuArray::<MapData, Hist>::try_from(map) else {
        return Vec::new();
    };
    (0..map.len())
        .filter_map(|i| {
            let h = merged_hist(&map.get(&i, 0).ok()?);
            (h.count() > 0).then_some((i, h))
        })
        .collect()
}

/// cgroup ids named by path, refreshed from the cgroup2 tree when an unknown id shows up.
static CGROUP_PATHS: Mutex<Option<HashMap<u64, String>>> = Mutex::new(None);

/// Paths of the cgroup `ids` (`id:N` for a group that is gone). The tree is walked again only
/// for an id never seen: cgroup ids are never reused, so a gone group's `id:N` is remembered
/// and a kernel map still holding its counts costs no walk per scrape.
fn cgroup_paths(ids: impl IntoIterator<Item = u64>) -> HashMap<u64, String> {
    let mut cache = CGROUP_PATHS.lock().unwrap_or_else(|e| e.into_inner());
    let cache = cache.get_or_insert_with(HashMap::new);
    let ids: Vec<u64> = ids.into_iter().collect();
    if ids.iter().any(|id| !cache.contains_key(id)) {
        if let Some(root) = crate::statedump::cgroup2_mount() {
            let mut tree = std::collections::BTreeSet::new();
            crate::statedump::cgroup_tree(&root, &mut tree);
            *cache = tree.into_iter().collect();
        }
        for id in &ids {
            cache.entry(*id).or_insert_with(|| format!("id:{id}"));
        }
    }
    ids.into_iter().map(|id| (id, cache[&id].clone())).collect()
}

/// The name of block device `dev` (`major << 20 | minor`), from `/sys/dev/block`.
fn disk_name(dev: u32) -> String {
    let (major, minor) = (dev >> 20, dev & 0xf_ffff);
    std::fs::read_link(format!("/sys/dev/block/{major}:{minor}"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| format!("{major}:{minor}"))
}

/// The operation of a `REQ_OP_*` value as the block histograms label it.
fn block_op(op: u32) -> &'static str {
    match op {
        0 => "read",
        1 => "write",
        2 => "flush",
        3 => "discard",
        _ => "other",
    }
}

/// Softirq vector names (`softirq_to_name` in the kernel), lower-cased.
const SOFTIRQS: [&str; 10] = [
    "hi", "timer", "net_tx", "net_rx", "block", "irq_poll", "tasklet", "sched", "hrtimer", "rcu",
];

/// The handler names of `irq` (`/sys/kernel/irq/N/actions`).
fn irq_name(irq: u32) -> String {
    std::fs::read_to_string(format!("/sys/kernel/irq/{irq}/actions"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The busiest `MAX_SERIES` entries by `weight`, then by key for a stable order.
fn top<K: Ord + Copy, T>(mut rows: Vec<(K, T)>, weight: impl Fn(&T) -> u64) -> Vec<(K, T)> {
    rows.sort_by(|a, b| weight(&b.1).cmp(&weight(&a.1)).then(a.0.cmp(&b.0)));
    rows.truncate(MAX_SERIES);
    rows.sort_by_key(|r| r.0);
    rows
}

/// A preemption counter family: name, help, and its value of a pair.
type PairFamily = (&'static str, &'static str, fn(&PreemptStat) -> f64);

/// Appends the histogram families in `families` to `e`, read from the maps pinned in `dir`.
pub(crate) fn render(e: &mut Exposition, dir: &Path, families: u32) {
    let on = |f| families & f != 0;
    if on(family::RUNQUEUE) {
        let rows: Vec<(u64, Hist)> = read_hash(dir, "RUNQ_HIST", Hist::merge);
        let rows = top(rows, Hist::count);
        let names = cgroup_paths(rows.iter().map(|r| r.0));
        let name = "flightrec_runqueue_latency_seconds";
        e.family(
            name,
            "histogram",
            "Time tasks of a cgroup waited on a run queue, from wakeup or preemption to running.",
        );
        for (id, h) in &rows {
            e.histogram(name, &[("cgroup", &names[id])], h);
        }
    }
    if on(family::PREEMPTION) {
        let rows: Vec<([u64; 2], PreemptStat)> = read_hash(
            dir,
            "PREEMPT_PAIRS",
            |t: &mut PreemptStat, v: &PreemptStat| {
                t.count += v.count;
                t.wait_ns += v.wait_ns;
            },
        );
        let rows = top(rows, |s| s.wait_ns);
        let names = cgroup_paths(rows.iter().flat_map(|r| r.0));
        let families: [PairFamily; 2] = [
            (
                "flightrec_preemptions_total",
                "Times a task of the victim cgroup was preempted by one of the preempting cgroup.",
                |s| s.count as f64,
            ),
            (
                "flightrec_preempted_seconds_total",
                "Time preempted tasks of the victim cgroup waited until they ran again.",
                |s| s.wait_ns as f64 / 1e9,
            ),
        ];
        for (name, help, value) in families {
            e.family(name, "counter", help);
            for ([v, p], s) in &rows {
                let labels = [
                    ("victim_cgroup", &*names[v]),
                    ("preempting_cgroup", &names[p]),
                ];
                e.sample(name, &labels, value(s));
            }
        }
    }
    if on(family::BLOCK) {
        let mut merged: std::collections::BTreeMap<(String, &str), Hist> = Default::default();
        for (key, h) in read_hash::<u64, Hist, Hist>(dir, "BLOCK_HIST", Hist::merge) {
            let disk = disk_name((key >> 8) as u32);
            merged
                .entry((disk, block_op((key & 0xff) as u32)))
                .or_default()
                .merge(&h);
        }
        let name = "flightrec_block_latency_seconds";
        e.family(
            name,
            "histogram",
            "Block request latency from issue to the driver to completion, by disk and operation.",
        );
        for ((disk, op), h) in &merged {
            e.histogram(name, &[("disk", disk), ("op", op)], h);
        }
    }
    if on(family::SYSCALL) {
        let name = "flightrec_syscall_latency_seconds";
        e.family(
            name,
            "histogram",
            "Syscall latency from entry to exit, by syscall.",
        );
        for (id, h) in read_array(dir, "SYSCALL_HIST") {
            let sys = schemas::event::syscall_name(id as u64)
                .map_or_else(|| format!("sys_{id}"), str::to_owned);
            e.histogram(name, &[("syscall", &sys)], &h);
        }
    }
    if on(family::IRQ) {
        let mut rows: Vec<(u32, Hist)> = read_hash(dir, "IRQ_HIST", Hist::merge);
        rows.sort_by_key(|r| r.0);
        let name = "flightrec_hardirq_seconds";
        e.family(name, "histogram", "Time in hard irq handlers, by irq.");
        for (irq, h) in &rows {
            e.histogram(
                name,
                &[("irq", &irq.to_string()), ("name", &irq_name(*irq))],
                h,
            );
        }
        let name = "flightrec_softirq_seconds";
        e.family(name, "histogram", "Time in softirq handlers, by vector.");
        for (vec, h) in read_array(dir, "SOFTIRQ_HIST") {
            let v = SOFTIRQS
                .get(vec as usize)
                .map_or_else(|| vec.to_string(), |s| (*s).to_owned());
            e.histogram(name, &[("vector", &v)], &h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(listen: &str, histograms: Option<&[&str]>) -> Config {
        let mut c = Config::default();
        c.metrics.listen = listen.into();
        c.metrics.histograms = histograms.map(|h| h.iter().map(|s| (*s).to_owned()).collect());
        c
    }

    #[test]
    fn families_follow_metrics_and_event_classes() {
        assert_eq!(
            families(&config("", None)).unwrap(),
            0,
            "off without metrics"
        );
        let all = family::ALL.iter().fold(0, |m, f| m | f.0);
        assert_eq!(families(&config("127.0.0.1:9464", None)).unwrap(), all);
        let mut c = config("127.0.0.1:9464", None);
        c.events.block = false;
        assert_eq!(families(&c).unwrap(), all & !family::BLOCK);
        c.metrics.histograms = Some(vec!["block".into()]);
        let e = families(&c).unwrap_err().to_string();
        assert!(e.contains("[events] block = true"), "{e}");
        let c = config("127.0.0.1:9464", Some(&["syscall", "irq"]));
        assert_eq!(families(&c).unwrap(), family::SYSCALL | family::IRQ);
        assert_eq!(families(&config("127.0.0.1:9464", Some(&[]))).unwrap(), 0);
        let e = families(&config("127.0.0.1:9464", Some(&["disk"]))).unwrap_err();
        assert!(e.to_string().contains("not a histogram family"), "{e}");
    }

    #[test]
    fn a_histogram_has_cumulative_buckets_in_seconds() {
        let mut h = Hist::default();
        h.slots[0] = 1; // 0 ns
        h.slots[11] = 2; // [1024, 2048) ns
        h.slots[SLOTS - 1] = 1; // overflow
        h.sum_ns = 3_000_000_000;
        let mut e = Exposition(String::new());
        e.histogram("x_seconds", &[("k", "v")], &h);
        let text = e.0;
        assert!(
            text.contains("x_seconds_bucket{k=\"v\",le=\"0.000001024\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_bucket{k=\"v\",le=\"0.000002048\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_bucket{k=\"v\",le=\"1.073741824\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_bucket{k=\"v\",le=\"+Inf\"} 4\n"),
            "{text}"
        );
        assert!(text.contains("x_seconds_sum{k=\"v\"} 3\n"), "{text}");
        assert!(text.contains("x_seconds_count{k=\"v\"} 4\n"), "{text}");
    }

    #[test]
    fn a_gone_cgroup_is_named_by_its_id() {
        let gone = u64::MAX - 7;
        assert_eq!(cgroup_paths([gone])[&gone], format!("id:{gone}"));
        // Remembered: asked again, it is answered from the cache.
        let cache = CGROUP_PATHS.lock().unwrap();
        assert!(cache.as_ref().unwrap().contains_key(&gone));
    }

    #[test]
    fn the_busiest_series_are_kept() {
        let rows: Vec<(u64, u64)> = (0..(MAX_SERIES as u64 + 10)).map(|i| (i, i)).collect();
        let kept = top(rows, |w| *w);
        assert_eq!(kept.len(), MAX_SERIES);
        assert_eq!(kept[0].0, 10, "the ten least busy went");
    }
}
