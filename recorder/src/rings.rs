//! The in-kernel rings seen from userspace: loading and attaching the programs, pinning them in
//! bpffs (or adopting the pins of an earlier run), mapping the rings with mmap, and freezing an
//! epoch to copy it out.
//!
//! # Epochs
//!
//! Each CPU has one ring per epoch. Writers record into the active epoch (`CTRL[EPOCH]`). A
//! freeze first resets the inactive epoch's window (`base = head`), then flips `CTRL[EPOCH]`, waits
//! a grace period for programs that read the old epoch just before the flip (they run with
//! preemption off and take well under a microsecond), then copies the frozen rings. Recording
//! never stops, and consecutive snapshots cover consecutive windows: every event lands in exactly
//! one snapshot unless the ring wrapped (counted as overwritten) or it was still being written
//! at the copy (counted as lost).
//!
//! # Kernel freezes
//!
//! A kernel latency rule without a post window flips the epoch itself, in the program that saw
//! the slow event, so the frozen window ends exactly there. `CTRL[FREEZE_LOCK]` keeps the two
//! sides apart: either takes it from `FREE` with a compare-and-swap (userspace to `USER` for its
//! whole freeze and copy, the kernel to `KERNEL`). A userspace freeze that finds `KERNEL` copies
//! the epoch the kernel froze instead of flipping again (it joins the kernel's freeze), then frees
//! the lock. While userspace holds the rings for a post-trigger window ([`Rings::hold`]) the
//! kernel does not freeze; its rules still report their hits.

use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aya::maps::{Array, HashMap, Map, MapData, RingBuf};
use aya::programs::BtfTracePoint;
use aya::programs::links::FdLink;
use aya::{Ebpf, EbpfLoader};
use memmap2::{MmapMut, MmapOptions};
use schemas::manifest::CpuCoverage;
use schemas::{
    COMM_LEN, CpuHead, RECORD_SIZE, Record, RuleSpec, ctrl, filter, freeze_lock, meta, rule,
};

use crate::config::Config;
use crate::error::SetupError;
use crate::kernel;

/// The compiled eBPF object, rebuilt by `cargo xtask build-ebpf`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!("../ebpf/flightrec.bpf.o");

/// Programs by event class, in attach order.
const PROGRAMS: &[(&str, &str)] = &[
    ("sys_enter", "syscalls"),
    ("sys_exit", "syscalls"),
    ("sched_switch", "sched"),
    ("sched_wakeup", "sched"),
    ("sched_wakeup_new", "sched"),
    ("sched_process_fork", "process"),
    ("sched_process_exec", "process"),
    ("sched_process_exit", "process"),
    ("block_rq_issue", "block"),
    ("block_rq_complete", "block"),
    ("irq_handler_entry", "irq"),
    ("irq_handler_exit", "irq"),
    ("softirq_entry", "irq"),
    ("softirq_exit", "irq"),
];

/// Maps pinned so a restarted recorder finds the rings again.
const PINNED_MAPS: &[&str] = &[
    "RING",
    "HEADS",
    "CTRL",
    "META",
    "FILTER_PIDS",
    "FILTER_COMMS",
    "FILTER_CGROUPS",
    "RULES",
    "RULE_HITS",
];

/// How long a freeze waits for writers that saw the old epoch.
const GRACE: Duration = Duration::from_millis(2);

/// Running rings: mapped into this process, recording in the kernel.
pub struct Rings {
    ncpu: u32,
    slots: u64,
    ring: MmapMut,
    heads: MmapMut,
    ctrl: MmapMut,
    pin_dir: PathBuf,
    adopted: bool,
    created_realtime_ns: u64,
    rule_hits: Option<RingBuf<MapData>>,
    // Keeps the programs loaded for the life of the process (links are pinned as well).
    _ebpf: Option<Ebpf>,
}

/// A frozen epoch copied out of the kernel.
pub struct Frozen {
    /// Records per CPU, in time order.
    pub cpus: Vec<Vec<Record>>,
    /// What each CPU's records cover.
    pub coverage: Vec<CpuCoverage>,
    /// `CLOCK_MONOTONIC` at the flip.
    pub frozen_monotonic_ns: u64,
    /// `CLOCK_REALTIME` at the flip.
    pub frozen_realtime_ns: u64,
    /// Whether a kernel rule flipped the epoch (this copy joined its freeze).
    pub kernel_frozen: bool,
}

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

pub use schemas::clock::{monotonic_ns, realtime_ns};

/// Stable hash of what decides whether pinned programs match a config (FNV-1a over JSON).
fn config_hash(config: &Config, slots: u64) -> u64 {
    let text = serde_json::to_string(&(&config.events, &config.filter, &config.rules, slots))
        .expect("serialisable");
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

fn pin_err(dir: &Path, message: impl std::fmt::Display) -> SetupError {
    SetupError::Pin {
        path: dir.to_owned(),
        message: message.to_string(),
    }
}

fn mmap_map(data: &MapData, name: &'static str, bytes: usize) -> Result<MmapMut, SetupError> {
    let len = bytes.div_ceil(4096) * 4096;
    let fd = data.fd().as_fd().as_raw_fd();
    // SAFETY: the map is BPF_F_MMAPABLE and at least `len` bytes long (page-rounded by the
    // kernel); the kernel keeps the pages alive while mapped.
    unsafe { MmapOptions::new().len(len).map_mut(fd) }
        .map_err(|source| SetupError::Mmap { map: name, source })
}

/// Number of possible CPUs (ids run below it), which sizes the per-CPU rings.
pub fn possible_cpus() -> Result<u32, SetupError> {
    aya::util::nr_cpus()
        .map(|n| n as u32)
        .map_err(|(what, source)| SetupError::Io {
            what: format!("reading {what}"),
            source,
        })
}

impl Rings {
    /// Starts recording as `config` says, adopting pinned rings of an earlier run when they
    /// were made for the same configuration (so their history is kept), and replacing them
    /// otherwise (a stale or half-built pin directory never blocks a start).
    pub fn start(config: &Config) -> Result<Rings, SetupError> {
        kernel::probe_features()?;
        let slots = config
            .ring_slots()
            .map_err(|e| SetupError::Ebpf(e.to_string()))?;
        let ncpu = possible_cpus()?;
        let pin_dir = config.recorder.pin_dir.clone();
        let hash = config_hash(config, slots);
        if pin_dir.exists() {
            match Rings::adopt(&pin_dir, ncpu, slots, hash, config) {
                Ok(r) => return Ok(r),
                Err(reason) => {
                    eprintln!(
                        "flightrec: replacing pinned state in {}: {reason}",
                        pin_dir.display()
                    );
                    teardown(&pin_dir)?;
                }
            }
        }
        Rings::create(config, &pin_dir, ncpu, slots, hash)
    }

    fn adopt(
        dir: &Path,
        ncpu: u32,
        slots: u64,
        hash: u64,
        config: &Config,
    ) -> Result<Rings, String> {
        let open = |name: &str| {
            MapData::from_pin(dir.join(format!("map_{name}")))
                .map_err(|e| format!("map {name} is not pinned ({e})"))
        };
        let meta =
            Array::<_, u64>::try_from(Map::Array(open("META")?)).map_err(|e| e.to_string())?;
        let word = |i| meta.get(&i, 0).map_err(|e| e.to_string());
        if word(meta::COMPLETE)? != meta::COMPLETE_MAGIC {
            return Err("it was left half-built by an interrupted start".into());
        }
        if word(meta::LAYOUT)? != schemas::RING_LAYOUT_VERSION {
            return Err("it was made by another flightrec version".into());
        }
        if word(meta::NCPU)? != ncpu as u64 || word(meta::SLOTS)? != slots {
            return Err("the ring size or CPU count changed".into());
        }
        if word(meta::CONFIG_HASH)? != hash {
            return Err("the [events], [filter] or [[rules]] configuration changed".into());
        }
        for (prog, class) in PROGRAMS {
            if config.events.enabled().iter().any(|c| c == class)
                && !dir.join(format!("link_{prog}")).exists()
            {
                return Err(format!("link {prog} is not pinned"));
            }
        }
        let created_realtime_ns = word(meta::CREATED_NS)?;
        let ring = open("RING")?;
        let heads = open("HEADS")?;
        let ctrl_map = open("CTRL")?;
        let rule_hits = if config.rules.is_empty() {
            None
        } else {
            Some(RingBuf::try_from(Map::RingBuf(open("RULE_HITS")?)).map_err(|e| e.to_string())?)
        };
        let n_rings = 2 * ncpu as usize;
        Ok(Rings {
            ncpu,
            slots,
            ring: mmap_map(&ring, "RING", n_rings * slots as usize * RECORD_SIZE)
                .map_err(|e| e.to_string())?,
            heads: mmap_map(&heads, "HEADS", n_rings * 64).map_err(|e| e.to_string())?,
            ctrl: mmap_map(&ctrl_map, "CTRL", ctrl::LEN as usize * 8).map_err(|e| e.to_string())?,
            pin_dir: dir.to_owned(),
            adopted: true,
            created_realtime_ns,
            rule_hits,
            _ebpf: None,
        })
    }

    fn create(
        config: &Config,
        dir: &Path,
        ncpu: u32,
        slots: u64,
        hash: u64,
    ) -> Result<Rings, SetupError> {
        let btf = kernel::vmlinux_btf()?;
        let offsets = kernel::resolve_offsets(&btf)?;
        let aya_btf = aya::Btf::from_sys_fs().map_err(|e| SetupError::Btf {
            path: kernel::VMLINUX_BTF.into(),
            message: e.to_string(),
        })?;
        let f = &config.filter;
        let mut mode = 0u32;
        if !f.pids.is_empty() {
            mode |= filter::PID;
            if f.follow_children {
                mode |= filter::FOLLOW_CHILDREN;
            }
        }
        if !f.comms.is_empty() {
            mode |= filter::COMM;
        }
        if !f.cgroups.is_empty() {
            mode |= filter::CGROUP;
        }
        let n_rings = 2 * ncpu;
        let ring_entries = u32::try_from(n_rings as u64 * slots).map_err(|_| {
            SetupError::Ebpf(format!(
                "{n_rings} rings of {slots} records exceed a BPF map"
            ))
        })?;
        let mask = slots - 1;
        let specs = rule_specs(config)?;
        let kinds = specs.iter().fold(0u32, |k, s| k | s.kind);
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&aya_btf))
            .override_global("NCPU", &ncpu, true)
            .override_global("SLOT_MASK", &mask, true)
            .override_global("FILTER_MODE", &mode, true)
            .override_global("OFFSETS", &offsets, true)
            .override_global("RULE_KINDS", &kinds, true)
            .map_max_entries("RING", ring_entries)
            .map_max_entries("HEADS", n_rings)
            .load(EBPF_OBJECT)
            .map_err(|e| SetupError::Ebpf(format!("loading the programs: {e}")))?;

        std::fs::create_dir_all(dir).map_err(|e| pin_err(dir, e))?;
        // Filters before anything is attached, so no unfiltered event slips in.
        {
            let mut pids: HashMap<_, u32, u8> =
                HashMap::try_from(ebpf.map_mut("FILTER_PIDS").expect("in object"))
                    .map_err(|e| SetupError::Ebpf(e.to_string()))?;
            for pid in &f.pids {
                pids.insert(pid, 1, 0)
                    .map_err(|e| SetupError::Ebpf(format!("filter pid {pid}: {e}")))?;
            }
        }
        {
            let mut comms: HashMap<_, [u8; COMM_LEN], u8> =
                HashMap::try_from(ebpf.map_mut("FILTER_COMMS").expect("in object"))
                    .map_err(|e| SetupError::Ebpf(e.to_string()))?;
            for comm in &f.comms {
                let mut key = [0u8; COMM_LEN];
                key[..comm.len()].copy_from_slice(comm.as_bytes());
                comms
                    .insert(key, 1, 0)
                    .map_err(|e| SetupError::Ebpf(format!("filter comm {comm}: {e}")))?;
            }
        }
        {
            let mut cgroups: HashMap<_, u64, u8> =
                HashMap::try_from(ebpf.map_mut("FILTER_CGROUPS").expect("in object"))
                    .map_err(|e| SetupError::Ebpf(e.to_string()))?;
            for path in &f.cgroups {
                let id = crate::statedump::cgroup_id(path).ok_or_else(|| {
                    SetupError::Ebpf(format!(
                        "filter cgroup {path}: no such cgroup under the cgroup2 mount"
                    ))
                })?;
                cgroups
                    .insert(id, 1, 0)
                    .map_err(|e| SetupError::Ebpf(format!("filter cgroup {path}: {e}")))?;
            }
        }
        // Rules before anything is attached, too: the programs read the table on every match.
        {
            let mut table: Array<_, RuleSpec> =
                Array::try_from(ebpf.map_mut("RULES").expect("in object"))
                    .map_err(|e| SetupError::Ebpf(e.to_string()))?;
            for (i, spec) in specs.iter().enumerate() {
                table
                    .set(i as u32, *spec, 0)
                    .map_err(|e| SetupError::Ebpf(format!("writing rule {i}: {e}")))?;
            }
        }
        {
            let mut words = [0u64; (rule::MAX_SYSCALL / 64) as usize];
            for s in specs.iter().filter(|s| s.kind == rule::SYSCALL) {
                words[(s.key / 64) as usize] |= 1 << (s.key % 64);
            }
            let mut bitmap: Array<_, u64> =
                Array::try_from(ebpf.map_mut("SYSCALL_RULED").expect("in object"))
                    .map_err(|e| SetupError::Ebpf(e.to_string()))?;
            for (i, w) in words.iter().enumerate() {
                bitmap
                    .set(i as u32, *w, 0)
                    .map_err(|e| SetupError::Ebpf(format!("writing SYSCALL_RULED: {e}")))?;
            }
        }
        for name in PINNED_MAPS {
            let map = ebpf.map(name).expect("map in object");
            map.pin(dir.join(format!("map_{name}")))
                .map_err(|e| pin_err(dir, format!("pinning map {name}: {e}")))?;
        }
        let enabled = config.events.enabled();
        for (name, class) in PROGRAMS {
            if !enabled.iter().any(|c| c == class) {
                continue;
            }
            let prog: &mut BtfTracePoint = ebpf
                .program_mut(name)
                .expect("program in object")
                .try_into()
                .map_err(|e| SetupError::Ebpf(format!("{name}: {e}")))?;
            prog.load(name, &aya_btf).map_err(|e| {
                SetupError::Ebpf(format!(
                    "loading {name} (verifier or missing tracepoint): {e:?}"
                ))
            })?;
            let id = prog
                .attach()
                .map_err(|e| SetupError::MissingFeature(format!("BTF tracepoint {name} ({e})")))?;
            let link = FdLink::from(
                prog.take_link(id)
                    .map_err(|e| SetupError::Ebpf(e.to_string()))?,
            );
            link.pin(dir.join(format!("link_{name}")))
                .map_err(|e| pin_err(dir, format!("pinning link {name}: {e}")))?;
        }
        let map_data = |name: &str| -> &MapData {
            match ebpf.map(name).expect("map in object") {
                Map::Array(d) => d,
                _ => unreachable!("{name} is an array"),
            }
        };
        let ring = mmap_map(
            map_data("RING"),
            "RING",
            ring_entries as usize * RECORD_SIZE,
        )?;
        let heads = mmap_map(map_data("HEADS"), "HEADS", n_rings as usize * 64)?;
        let ctrl_mm = mmap_map(map_data("CTRL"), "CTRL", ctrl::LEN as usize * 8)?;
        let created_realtime_ns = realtime_ns();
        let rule_hits = if specs.is_empty() {
            None
        } else {
            let map = ebpf.take_map("RULE_HITS").expect("in object");
            Some(RingBuf::try_from(map).map_err(|e| SetupError::Ebpf(e.to_string()))?)
        };
        {
            let mut meta_map: Array<_, u64> =
                Array::try_from(ebpf.map_mut("META").expect("in object"))
                    .map_err(|e| SetupError::Ebpf(e.to_string()))?;
            let words = [
                (meta::LAYOUT, schemas::RING_LAYOUT_VERSION),
                (meta::NCPU, ncpu as u64),
                (meta::SLOTS, slots),
                (meta::CONFIG_HASH, hash),
                (meta::CREATED_NS, created_realtime_ns),
                // Last: marks the state complete.
                (meta::COMPLETE, meta::COMPLETE_MAGIC),
            ];
            for (i, v) in words {
                meta_map
                    .set(i, v, 0)
                    .map_err(|e| SetupError::Ebpf(format!("writing META: {e}")))?;
            }
        }
        Ok(Rings {
            ncpu,
            slots,
            ring,
            heads,
            ctrl: ctrl_mm,
            pin_dir: dir.to_owned(),
            adopted: false,
            created_realtime_ns,
            rule_hits,
            _ebpf: Some(ebpf),
        })
    }

    /// Number of CPUs (rings per epoch).
    pub fn ncpu(&self) -> u32 {
        self.ncpu
    }

    /// Records per ring.
    pub fn slots(&self) -> u64 {
        self.slots
    }

    /// Whether the rings were adopted from an earlier run's pins.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// When the rings were created (`CLOCK_REALTIME` ns).
    pub fn created_realtime_ns(&self) -> u64 {
        self.created_realtime_ns
    }

    /// The pin directory.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    fn ctrl_word(&self, i: u32) -> &AtomicU64 {
        assert!(i < ctrl::LEN);
        // SAFETY: the mapping holds ctrl::LEN aligned u64 words and lives as long as self.
        unsafe { AtomicU64::from_ptr((self.ctrl.as_ptr() as *mut u64).add(i as usize)) }
    }

    fn head(&self, epoch: u32, cpu: u32) -> (&AtomicU64, &AtomicU64) {
        assert!(epoch < 2 && cpu < self.ncpu);
        let idx = (epoch * self.ncpu + cpu) as usize;
        // SAFETY: the mapping holds 2 * ncpu CpuHead blocks of 64 bytes; head and base are its
        // first two aligned u64 words.
        unsafe {
            let p = self.heads.as_ptr().add(idx * size_of::<CpuHead>()) as *mut u64;
            (AtomicU64::from_ptr(p), AtomicU64::from_ptr(p.add(1)))
        }
    }

    fn slot(&self, epoch: u32, cpu: u32, idx: u64) -> *const Record {
        let ring = (epoch * self.ncpu + cpu) as u64;
        let i = ring * self.slots + (idx & (self.slots - 1));
        // SAFETY: i < 2 * ncpu * slots, the mapping's record count.
        unsafe { (self.ring.as_ptr() as *const Record).add(i as usize) }
    }

    /// Reads slot `idx` if it holds the record published with that index.
    fn read_slot(&self, epoch: u32, cpu: u32, idx: u64) -> Option<Record> {
        let p = self.slot(epoch, cpu, idx);
        // SAFETY: `p` is inside the mapping; records are plain integers. A writer may be
        // changing the slot; the seq checks before and after reject a torn copy.
        let (seq1, rec) = unsafe {
            let seq1 = AtomicU64::from_ptr(&raw const (*p).seq as *mut u64).load(Ordering::Acquire);
            (seq1, std::ptr::read_volatile(p))
        };
        // SAFETY: as above.
        let seq2 =
            unsafe { AtomicU64::from_ptr(&raw const (*p).seq as *mut u64) }.load(Ordering::Acquire);
        (seq1 == idx + 1 && seq2 == seq1).then_some(rec)
    }

    /// Ring indexes of the current window of (epoch, cpu): where the window started, the oldest
    /// index still held (later than the start once the ring wrapped), and one past the newest.
    fn window(&self, epoch: u32, cpu: u32) -> (u64, u64, u64) {
        let (head, base) = self.head(epoch, cpu);
        let end = head.load(Ordering::SeqCst);
        let start_window = base.load(Ordering::SeqCst).min(end);
        (
            start_window,
            start_window.max(end.saturating_sub(self.slots)),
            end,
        )
    }

    /// Records ever written on `cpu`, both epochs (monotonic, for rates).
    pub fn total(&self, cpu: u32) -> u64 {
        (0..2)
            .map(|epoch| self.head(epoch, cpu).0.load(Ordering::SeqCst))
            .sum()
    }

    /// The epoch writers are recording into now.
    pub fn active_epoch(&self) -> u32 {
        (self.ctrl_word(ctrl::EPOCH).load(Ordering::SeqCst) & 1) as u32
    }

    /// The rule hits ring buffer, for the daemon to poll (once; `None` without rules).
    pub fn take_rule_hits(&mut self) -> Option<RingBuf<MapData>> {
        self.rule_hits.take()
    }

    /// Holds off kernel freezes (for a post-trigger window) until the next [`Rings::freeze`].
    /// Returns false when a kernel freeze is already waiting to be copied: the next freeze
    /// joins it.
    pub fn hold(&self) -> bool {
        let lock = self.ctrl_word(ctrl::FREEZE_LOCK);
        match lock.compare_exchange(
            freeze_lock::FREE,
            freeze_lock::USER,
            Ordering::SeqCst,
            Ordering::SeqCst,
        ) {
            Ok(_) => true,
            Err(v) => v == freeze_lock::USER,
        }
    }

    /// Whether a kernel rule froze the rings and they wait to be copied.
    pub fn kernel_frozen(&self) -> bool {
        self.ctrl_word(ctrl::FREEZE_LOCK).load(Ordering::SeqCst) == freeze_lock::KERNEL
    }

    /// Lets the kernel freeze again without copying what it froze (the governor suppressed the
    /// hit), or ends a [`Rings::hold`] without freezing.
    pub fn release(&self) {
        self.ctrl_word(ctrl::FREEZE_LOCK)
            .store(freeze_lock::FREE, Ordering::SeqCst);
    }

    /// Freezes the active epoch (writers move to the other one) and copies it out. When a
    /// kernel rule froze an epoch that has not been copied yet, copies that one instead.
    pub fn freeze(&self) -> Frozen {
        let lock = self.ctrl_word(ctrl::FREEZE_LOCK);
        let kernel = match lock.compare_exchange(
            freeze_lock::FREE,
            freeze_lock::USER,
            Ordering::SeqCst,
            Ordering::SeqCst,
        ) {
            Err(freeze_lock::KERNEL) => true,
            // FREE (now ours) or USER (held by `hold` of this process: freezes are serialised
            // by the caller).
            _ => false,
        };
        let (cur, frozen_monotonic_ns, frozen_realtime_ns) = if kernel {
            let ts = self.ctrl_word(ctrl::KFREEZE_TS).load(Ordering::SeqCst);
            let epoch = (self.ctrl_word(ctrl::KFREEZE_EPOCH).load(Ordering::SeqCst) & 1) as u32;
            let now = monotonic_ns();
            let offset = realtime_ns().wrapping_sub(now);
            // Writers that read the epoch just before the kernel's flip get their grace too.
            if let Some(left) = GRACE.checked_sub(Duration::from_nanos(now.saturating_sub(ts))) {
                std::thread::sleep(left);
            }
            (epoch, ts, ts.wrapping_add(offset))
        } else {
            let cur = self.active_epoch();
            let next = cur ^ 1;
            // The inactive epoch's last readers finished a grace period ago: restart its window.
            for cpu in 0..self.ncpu {
                let (head, base) = self.head(next, cpu);
                base.store(head.load(Ordering::SeqCst), Ordering::SeqCst);
            }
            let frozen_monotonic_ns = monotonic_ns();
            let frozen_realtime_ns = realtime_ns();
            self.ctrl_word(ctrl::EPOCH)
                .store(next as u64, Ordering::SeqCst);
            self.ctrl_word(ctrl::FLIPS).fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(GRACE);
            (cur, frozen_monotonic_ns, frozen_realtime_ns)
        };

        let mut cpus = Vec::with_capacity(self.ncpu as usize);
        let mut coverage = Vec::with_capacity(self.ncpu as usize);
        for cpu in 0..self.ncpu {
            let (start_window, start, end) = self.window(cur, cpu);
            let mut recs = Vec::with_capacity((end - start) as usize);
            let mut lost = 0;
            for idx in start..end {
                match self.read_slot(cur, cpu, idx) {
                    Some(r) => recs.push(r),
                    None => lost += 1,
                }
            }
            // Programs interrupted by other programs on the same CPU reserve out of time
            // order; the sort is stable and nearly free on almost-sorted input.
            recs.sort_by_key(|r| r.ts_ns);
            coverage.push(CpuCoverage {
                cpu,
                oldest_ts_ns: recs.first().map(|r| r.ts_ns),
                newest_ts_ns: recs.last().map(|r| r.ts_ns),
                records_kept: recs.len() as u64,
                records_overwritten: start - start_window,
                records_lost: lost,
                window_start: start_window,
                window_end: end,
                epoch: cur,
            });
            cpus.push(recs);
        }
        lock.store(freeze_lock::FREE, Ordering::SeqCst);
        Frozen {
            cpus,
            coverage,
            frozen_monotonic_ns,
            frozen_realtime_ns,
            kernel_frozen: kernel,
        }
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

/// The kernel rule table for `config.rules` (checked again here: the loader is the last line).
pub fn rule_specs(config: &Config) -> Result<Vec<RuleSpec>, SetupError> {
    let rules = triggers::rules::check_rules(&config.rules)
        .map_err(|e| SetupError::Ebpf(format!("rules: {e}")))?;
    rules
        .iter()
        .map(|r| {
            use triggers::rules::RuleKind;
            let mut s = RuleSpec {
                kind: match r.kind {
                    RuleKind::Syscall => rule::SYSCALL,
                    RuleKind::Block => rule::BLOCK,
                    RuleKind::Runqueue => rule::RUNQUEUE,
                    RuleKind::Irq => rule::IRQ,
                },
                threshold_ns: r.threshold_ns,
                min_interval_ns: r.min_interval_ns,
                ..RuleSpec::default()
            };
            if r.post_ms == 0 {
                s.flags |= rule::FREEZE;
            }
            let key = r
                .syscall_nr
                .map(u64::from)
                .or(r.device.map(u64::from))
                .or(r.irq.map(u64::from));
            if let Some(k) = key {
                if r.kind == RuleKind::Syscall && k >= rule::MAX_SYSCALL as u64 {
                    return Err(SetupError::Ebpf(format!(
                        "rule {}: syscall number {k} is above the {} rules can watch",
                        r.name,
                        rule::MAX_SYSCALL
                    )));
                }
                s.key = k;
                s.flags |= rule::MATCH_KEY;
            }
            if let Some(pid) = r.pid {
                s.pid = pid;
                s.flags |= rule::MATCH_PID;
            }
            if let Some(comm) = &r.comm {
                let mut c = [0u8; COMM_LEN];
                c[..comm.len()].copy_from_slice(comm.as_bytes());
                s.comm = [
                    u64::from_ne_bytes(c[..8].try_into().expect("8 bytes")),
                    u64::from_ne_bytes(c[8..].try_into().expect("8 bytes")),
                ];
                s.flags |= rule::MATCH_COMM;
            }
            if let Some(path) = &r.cgroup {
                s.cgroup = crate::statedump::cgroup_id(path).ok_or_else(|| {
                    SetupError::Ebpf(format!(
                        "rule {}: cgroup {path}: no such cgroup under the cgroup2 mount",
                        r.name
                    ))
                })?;
                s.flags |= rule::MATCH_CGROUP;
            }
            Ok(s)
        })
        .collect()
}

/// Detaches the programs and removes every pin in `dir` (and the directory). Returns whether
/// there was anything to remove.
pub fn teardown(dir: &Path) -> Result<bool, SetupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(pin_err(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| pin_err(dir, e))?;
        // Unlinking a pinned link drops the last reference once no process holds it: the
        // program detaches.
        std::fs::remove_file(entry.path())
            .map_err(|e| pin_err(dir, format!("removing {}: {e}", entry.path().display())))?;
    }
    std::fs::remove_dir(dir).map_err(|e| pin_err(dir, e))?;
    Ok(true)
}
