//! Bringing the rings up and down: loading and attaching the programs, pinning them in bpffs,
//! adopting the pins of an earlier run, mapping the rings into this process, and removing the
//! pins.

use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use aya::maps::{Array, Map, MapData, MapError, RingBuf};
use aya::programs::links::FdLink;
use aya::programs::{BtfTracePoint, ProgramError};
use aya::{BtfError, Ebpf, EbpfError, EbpfLoader};
use memmap2::{MmapMut, MmapOptions};
use schemas::compact::PACKET_SIZE;
use schemas::hist::{self, family};
use schemas::{CpuHead, ctrl, meta, rule};

use super::pin_dir::{self, PinLock};
use super::tables::{fill_array, filter_mode, rule_specs, write_filters, write_rules};
use super::{Rings, realtime_ns};
use crate::config::Config;
use crate::error::SetupError;
use crate::kernel;

/// The compiled eBPF object, rebuilt by `cargo xtask build-ebpf`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!("../../ebpf/flightrec.bpf.o");

/// Programs by event class, in attach order. The two of class `always` empty the syscall
/// programs' current-task cache whatever is recorded (they record their events only with
/// their class), and go first so the cache is never used without them.
const PROGRAMS: &[(&str, &str)] = &[
    ("sched_switch", "always"),
    ("sched_process_exec", "always"),
    ("sys_enter", "syscalls"),
    ("sys_exit", "syscalls"),
    ("sched_wakeup", "sched"),
    ("sched_wakeup_new", "sched"),
    ("sched_process_fork", "process"),
    ("sched_process_exit", "process"),
    ("block_rq_issue", "block"),
    ("block_rq_complete", "block"),
    ("irq_handler_entry", "irq"),
    ("irq_handler_exit", "irq"),
    ("softirq_entry", "irq"),
    ("softirq_exit", "irq"),
];

/// Whether the programs of `class` (of [`PROGRAMS`]) are attached with `config`.
fn attached(config: &Config, class: &str) -> bool {
    class == "always" || config.events.enabled().iter().any(|c| c == class)
}

/// `PLAIN_RESERVE` for the recorded `classes`: 1 when none has a program that can run in
/// interrupt context (`schemas::classes::NESTING`), so no program of ours can interrupt
/// another on its CPU. The classes are part of the config hash: pins loaded with the other
/// value are never adopted.
fn plain_reserve(classes: u32) -> u32 {
    u32::from(classes & schemas::classes::NESTING == 0)
}

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

/// What `families` (`crate::hist::families`) and the rules need from the cgroup chain: an
/// error naming the missing field when they need it and the kernel lacks it.
fn check_cgroup_chain(
    offsets: &schemas::hist::CgroupOffsets,
    families: u32,
    specs: &[schemas::RuleSpec],
) -> Result<(), SetupError> {
    use schemas::hist::family;
    let by_cgroup = specs
        .iter()
        .any(|s| s.kind == schemas::rule::RUNQUEUE && s.flags & schemas::rule::MATCH_CGROUP != 0);
    if (families & (family::RUNQUEUE | family::PREEMPTION) != 0 || by_cgroup) && !offsets.complete()
    {
        return Err(SetupError::MissingBtf(
            "task_struct.cgroups, css_set.dfl_cgrp, cgroup.kn and kernfs_node.id (the cgroup \
             of the task that gets the CPU)"
                .into(),
        ));
    }
    Ok(())
}

/// Why the pins found in the pin directory cannot be adopted (they are replaced).
#[derive(Debug, thiserror::Error)]
enum NotAdoptable {
    #[error("map {map} is not pinned")]
    Unpinned {
        map: &'static str,
        #[source]
        source: MapError,
    },
    #[error("cannot read map {map}")]
    Unreadable {
        map: &'static str,
        #[source]
        source: MapError,
    },
    #[error("it was left half-built by an interrupted start")]
    HalfBuilt,
    #[error("it was made by another flightrec version")]
    OtherVersion,
    #[error("the ring size or CPU count changed")]
    SizeChanged,
    #[error("the [events], [filter] or [[rules]] configuration changed")]
    ConfigChanged,
    #[error("link {0} is not pinned")]
    LinkUnpinned(&'static str),
    #[error(transparent)]
    Mmap(#[from] SetupError),
}

/// Stable hash of what decides whether pinned programs match a config (FNV-1a over JSON).
fn config_hash(config: &Config, slots: u64) -> u64 {
    let mut text = serde_json::to_string(&(&config.events, &config.filter, &config.rules, slots))
        .expect("serialisable");
    // Only a benchmark floor changes the text, so recording daemons keep adopting the pins of
    // earlier versions.
    if config.syscall_floor != schemas::floor::RECORD {
        text.push_str(&format!(" floor {}", config.syscall_floor));
    }
    // A spill of another size is another map size (the default's is the ring size's).
    if !config.recorder.spill_size.is_empty() {
        text.push_str(&format!(" spill {}", config.spill_packets().unwrap_or(0)));
    }
    // Likewise the histograms: programs loaded without them are kept while they stay off.
    let families = crate::hist::families(config).unwrap_or(0);
    if families != 0 {
        text.push_str(&format!(" histograms {families}"));
    }
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `map_err` for an I/O error on the pin directory `dir` while doing `what`.
fn pin_dir_err(dir: &Path, what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SetupError {
    move |source| SetupError::PinDir {
        path: dir.to_owned(),
        what: what.into(),
        source,
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

/// Maps RING, HEADS and CTRL, made for `ncpu` CPUs of `packets` main and `spill` spill
/// packets, into this process.
fn mmap_rings(
    ncpu: u32,
    packets: u64,
    spill: u64,
    maps: [&MapData; 3],
) -> Result<[MmapMut; 3], SetupError> {
    let [ring, heads, ctrl_map] = maps;
    Ok([
        mmap_map(
            ring,
            "RING",
            ncpu as usize * (packets + spill) as usize * PACKET_SIZE,
        )?,
        mmap_map(heads, "HEADS", 2 * ncpu as usize * size_of::<CpuHead>())?,
        mmap_map(ctrl_map, "CTRL", ctrl::LEN as usize * 8)?,
    ])
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
        let slots = config.ring_packets().map_err(|source| SetupError::Config {
            what: "the ring size",
            source,
        })?;
        let ncpu = possible_cpus()?;
        let pin_dir = config.recorder.pin_dir.clone();
        let hash = config_hash(config, slots);
        let mut lock = Some(pin_dir::acquire(&pin_dir)?);
        let empty = std::fs::read_dir(&pin_dir)
            .map_err(pin_dir_err(&pin_dir, "listing the directory"))?
            .next()
            .is_none();
        if !empty {
            match Rings::adopt(&pin_dir, ncpu, slots, hash, config, &mut lock) {
                Ok(r) => return Ok(r),
                Err(reason) => {
                    let mut why = reason.to_string();
                    let mut cause = std::error::Error::source(&reason);
                    while let Some(c) = cause {
                        why = format!("{why}: {c}");
                        cause = c.source();
                    }
                    eprintln!(
                        "flightrec: replacing pinned state in {}: {why}",
                        pin_dir.display()
                    );
                    pin_dir::clear(&pin_dir)?;
                }
            }
        }
        let lock = lock.expect("kept when adopting failed");
        Rings::create(config, &pin_dir, ncpu, slots, hash, lock)
    }

    /// Rings over the mapped `[RING, HEADS, CTRL]`. Adopted rings have no `ebpf`: their
    /// programs are kept by the pinned links.
    #[allow(
        clippy::too_many_arguments,
        reason = "the parts of running rings, each once"
    )]
    fn new(
        ncpu: u32,
        packets: u64,
        spill: u64,
        pins: PinLock,
        [ring, heads, ctrl]: [MmapMut; 3],
        created_realtime_ns: u64,
        rule_hits: Option<RingBuf<MapData>>,
        ebpf: Option<Ebpf>,
    ) -> Rings {
        Rings {
            ncpu,
            packets,
            spill,
            ring,
            heads,
            ctrl,
            adopted: ebpf.is_none(),
            created_realtime_ns,
            rule_hits,
            pins,
            copying: std::sync::Mutex::new(()),
            _ebpf: ebpf,
        }
    }

    fn adopt(
        dir: &Path,
        ncpu: u32,
        slots: u64,
        hash: u64,
        config: &Config,
        lock: &mut Option<PinLock>,
    ) -> Result<Rings, NotAdoptable> {
        let open = |map: &'static str| {
            MapData::from_pin(dir.join(format!("map_{map}")))
                .map_err(|source| NotAdoptable::Unpinned { map, source })
        };
        let unreadable = |map| move |source| NotAdoptable::Unreadable { map, source };
        let meta =
            Array::<_, u64>::try_from(Map::Array(open("META")?)).map_err(unreadable("META"))?;
        let word = |i| meta.get(&i, 0).map_err(unreadable("META"));
        if word(meta::COMPLETE)? != meta::COMPLETE_MAGIC {
            return Err(NotAdoptable::HalfBuilt);
        }
        if word(meta::LAYOUT)? != schemas::RING_LAYOUT_VERSION {
            return Err(NotAdoptable::OtherVersion);
        }
        if word(meta::NCPU)? != ncpu as u64 || word(meta::SLOTS)? != slots {
            return Err(NotAdoptable::SizeChanged);
        }
        if word(meta::CONFIG_HASH)? != hash {
            return Err(NotAdoptable::ConfigChanged);
        }
        for &(prog, class) in PROGRAMS {
            if attached(config, class) && !dir.join(format!("link_{prog}")).exists() {
                return Err(NotAdoptable::LinkUnpinned(prog));
            }
        }
        let created = word(meta::CREATED_NS)?;
        let ring = open("RING")?;
        let heads = open("HEADS")?;
        let ctrl_map = open("CTRL")?;
        let rule_hits = if config.rules.is_empty() {
            None
        } else {
            let map = Map::RingBuf(open("RULE_HITS")?);
            Some(RingBuf::try_from(map).map_err(unreadable("RULE_HITS"))?)
        };
        let spill = config
            .spill_packets()
            .map_err(|_| NotAdoptable::SizeChanged)?;
        let mapped = mmap_rings(ncpu, slots, spill, [&ring, &heads, &ctrl_map])?;
        let lock = lock.take().expect("held until adopted");
        let rings = Rings::new(ncpu, slots, spill, lock, mapped, created, rule_hits, None);
        rings.recover();
        Ok(rings)
    }

    fn create(
        config: &Config,
        dir: &Path,
        ncpu: u32,
        slots: u64,
        hash: u64,
        lock: PinLock,
    ) -> Result<Rings, SetupError> {
        let btf = kernel::vmlinux_btf()?;
        let offsets = kernel::resolve_offsets(&btf)?;
        let aya_btf = aya::Btf::from_sys_fs().map_err(|e| SetupError::Btf {
            path: kernel::VMLINUX_BTF.into(),
            source: e.into(),
        })?;
        let mode = filter_mode(&config.filter);
        let spill = config
            .spill_packets()
            .map_err(|source| SetupError::Config {
                what: "the spill size",
                source,
            })?;
        let ring_entries = u32::try_from(ncpu as u64 * (slots + spill)).map_err(|_| {
            SetupError::Unsatisfiable(format!("{ncpu} rings of {slots} packets exceed a BPF map"))
        })?;
        let (mask, bits) = (slots - 1, slots.trailing_zeros() as u64);
        let (spill_mask, spill_bits) = (spill - 1, spill.trailing_zeros() as u64);
        let shapes = schemas::compact::shape::table(kernel::syscall_arg_counts());
        let len_or_1 = |n: usize| (n as u32).max(1);
        // Followed children join the pid set in the kernel: room for them.
        let pid_set = match (config.filter.pids.len(), config.filter.follow_children) {
            (0, _) => 1,
            (_, true) => 16384,
            (n, false) => len_or_1(n),
        };
        let specs = rule_specs(config)?;
        let kinds = specs.iter().fold(0u32, |k, s| k | s.kind);
        let ruled = |kind: u32, n: u32| if kinds & kind != 0 { n } else { 1 };
        let families = crate::hist::families(config).map_err(|source| SetupError::Config {
            what: "metrics.histograms",
            source,
        })?;
        let cgroup_offsets = kernel::cgroup_offsets(&btf);
        check_cgroup_chain(&cgroup_offsets, families, &specs)?;
        // Histogram tables of families that are off hold one entry.
        let fam = |f: u32, n: u32| if families & f != 0 { n } else { 1 };
        let classes = config
            .events
            .enabled()
            .iter()
            .fold(0u32, |c, name| c | schemas::classes::of(name));
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&aya_btf))
            .override_global("NCPU", &ncpu, true)
            .override_global("PKT_MASK", &mask, true)
            .override_global("PKT_BITS", &bits, true)
            .override_global("SPILL_MASK", &spill_mask, true)
            .override_global("SPILL_BITS", &spill_bits, true)
            .override_global("SYSCALL_SHAPES", &shapes, true)
            .override_global("FILTER_MODE", &mode, true)
            .override_global("OFFSETS", &offsets, true)
            .override_global("RULE_KINDS", &kinds, true)
            .override_global("SYSCALL_FLOOR", &config.syscall_floor, true)
            .override_global("RECORD_CLASSES", &classes, true)
            .override_global("PLAIN_RESERVE", &plain_reserve(classes), true)
            .override_global("HIST_FAMILIES", &families, true)
            .override_global("CGROUP_OFFSETS", &cgroup_offsets, true)
            .map_max_entries("RING", ring_entries)
            .map_max_entries("HEADS", 2 * ncpu)
            // Tables sized to what this configuration uses: kernel memory is history lost.
            .map_max_entries("FILTER_PIDS", pid_set)
            .map_max_entries("FILTER_COMMS", len_or_1(config.filter.comms.len()))
            .map_max_entries("FILTER_CGROUPS", len_or_1(config.filter.cgroups.len()))
            .map_max_entries("SYSCALL_START", ruled(rule::SYSCALL, 16384))
            .map_max_entries("RUNQ_START", ruled(rule::RUNQUEUE, 16384))
            .map_max_entries("BLOCK_START", ruled(rule::BLOCK, 8192))
            .map_max_entries("RULE_HITS", if specs.is_empty() { 4096 } else { 64 * 1024 })
            .map_max_entries("RUNQ_HIST", fam(family::RUNQUEUE, hist::MAX_CGROUPS))
            .map_max_entries("PREEMPT_PAIRS", fam(family::PREEMPTION, hist::MAX_PAIRS))
            .map_max_entries("BLOCK_HIST", fam(family::BLOCK, hist::MAX_DISK_OPS))
            .map_max_entries("SYSCALL_HIST", fam(family::SYSCALL, hist::MAX_SYSCALL))
            .map_max_entries("IRQ_HIST", fam(family::IRQ, hist::MAX_IRQS))
            .map_max_entries("SOFTIRQ_HIST", fam(family::IRQ, hist::MAX_SOFTIRQ))
            .map_max_entries(
                "HIST_RUNQ_START",
                fam(family::RUNQUEUE | family::PREEMPTION, 16384),
            )
            .map_max_entries("HIST_SYSCALL_START", fam(family::SYSCALL, 16384))
            .map_max_entries("HIST_BLOCK_START", fam(family::BLOCK, 8192))
            .load(EBPF_OBJECT)
            .map_err(load_error)?;

        // Filters before anything is attached, so no unfiltered event slips in.
        write_filters(&mut ebpf, &config.filter)?;
        // Rules before anything is attached, too: the programs read the table on every match.
        write_rules(&mut ebpf, &specs)?;
        for name in PINNED_MAPS.iter().chain(crate::hist::MAPS) {
            let map = ebpf.map(name).expect("map in object");
            map.pin(dir.join(format!("map_{name}")))
                .map_err(|source| SetupError::Pin {
                    path: dir.to_owned(),
                    what: format!("pinning map {name}"),
                    source,
                })?;
        }
        attach(&mut ebpf, config, dir, &aya_btf)?;
        let map_data = |name: &str| -> &MapData {
            match ebpf.map(name).expect("map in object") {
                Map::Array(d) => d,
                _ => unreachable!("{name} is an array"),
            }
        };
        let mapped = mmap_rings(
            ncpu,
            slots,
            spill,
            [map_data("RING"), map_data("HEADS"), map_data("CTRL")],
        )?;
        let created = realtime_ns();
        let rule_hits = if specs.is_empty() {
            None
        } else {
            let map = ebpf.take_map("RULE_HITS").expect("in object");
            Some(RingBuf::try_from(map).map_err(|source| SetupError::Map {
                what: "opening map RULE_HITS".into(),
                source,
            })?)
        };
        let words = [
            (meta::LAYOUT, schemas::RING_LAYOUT_VERSION),
            (meta::NCPU, ncpu as u64),
            (meta::SLOTS, slots),
            (meta::CONFIG_HASH, hash),
            (meta::CREATED_NS, created),
            // Last: marks the state complete.
            (meta::COMPLETE, meta::COMPLETE_MAGIC),
        ];
        let words = words.map(|(i, v)| (i, v, "writing META".to_owned()));
        fill_array(&mut ebpf, "META", words)?;
        Ok(Rings::new(
            ncpu,
            slots,
            spill,
            lock,
            mapped,
            created,
            rule_hits,
            Some(ebpf),
        ))
    }
}

/// A load failure of the whole object as a sentence: a verifier or BTF refusal keeps its log
/// in a file instead of in the message.
fn load_error(source: EbpfError) -> SetupError {
    match source {
        EbpfError::BtfError(BtfError::LoadError {
            io_error,
            verifier_log,
        }) => verifier_error("the programs' BTF", "btf", io_error, &verifier_log),
        EbpfError::ProgramError(ProgramError::LoadError {
            io_error,
            verifier_log,
        }) => verifier_error("an eBPF program", "object", io_error, &verifier_log),
        source => SetupError::Load { source },
    }
}

/// Saves `log` to a new `flightrec-verifier-<file>-<pid>-<id>.log` (0600) in the temporary
/// directory and names it in
/// the error (or says why it could not be saved).
fn verifier_error(
    what: &str,
    file: &str,
    source: std::io::Error,
    log: &impl std::fmt::Display,
) -> SetupError {
    // A new file of our own, never an existing one or a link a local user planted in the
    // shared temporary directory.
    let path = std::env::temp_dir().join(format!(
        "flightrec-verifier-{file}-{}-{}.log",
        std::process::id(),
        schemas::clock::random_id()
    ));
    let written = {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .and_then(|mut f| writeln!(f, "{log}"))
    };
    let log = match written {
        Ok(()) => format!("its verifier log is in {}", path.display()),
        Err(e) => format!(
            "its verifier log could not be saved to {}: {e}",
            path.display()
        ),
    };
    SetupError::Verifier {
        what: what.into(),
        log,
        source,
    }
}

/// Loads and attaches the programs of the enabled event classes (and the current-task cache's
/// two), and pins their links in `dir`.
fn attach(ebpf: &mut Ebpf, config: &Config, dir: &Path, btf: &aya::Btf) -> Result<(), SetupError> {
    for &(name, class) in PROGRAMS {
        if !attached(config, class) {
            continue;
        }
        let prog: &mut BtfTracePoint = ebpf
            .program_mut(name)
            .expect("program in object")
            .try_into()
            .map_err(|source| SetupError::Program {
                what: format!("program {name}"),
                source,
            })?;
        prog.load(name, btf).map_err(|source| match source {
            ProgramError::LoadError {
                io_error,
                verifier_log,
            } => verifier_error(
                &format!("eBPF program {name}"),
                name,
                io_error,
                &verifier_log,
            ),
            source => SetupError::Program {
                what: format!("loading {name} (verifier or missing tracepoint)"),
                source,
            },
        })?;
        let id = prog
            .attach()
            .map_err(|source| SetupError::MissingTracepoint {
                program: name,
                source,
            })?;
        let link = prog.take_link(id).map_err(|source| SetupError::Program {
            what: format!("taking the link of {name}"),
            source,
        })?;
        FdLink::from(link)
            .pin(dir.join(format!("link_{name}")))
            .map_err(|source| SetupError::Pin {
                path: dir.to_owned(),
                what: format!("pinning link {name}"),
                source,
            })?;
    }
    Ok(())
}

/// Detaches the programs and removes every pin in `dir` (subdirectories included) and the
/// directory. Returns whether there was anything to remove. Refused while a daemon holds the
/// directory.
pub fn teardown(dir: &Path) -> Result<bool, SetupError> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(pin_dir_err(dir, "reading the directory")(e)),
        Ok(m) if m.file_type().is_symlink() => {
            // The link goes, never what it points at.
            std::fs::remove_file(dir).map_err(pin_dir_err(dir, "removing the symbolic link"))?;
            return Ok(true);
        }
        Ok(_) => {}
    }
    let _lock = pin_dir::lock(dir)?;
    pin_dir::clear(dir)?;
    std::fs::remove_dir(dir).map_err(pin_dir_err(dir, "removing the directory"))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins made by a recording daemon of the version before the floors existed are adopted:
    /// the hash of a recording configuration is what it was; a floor's differs.
    #[test]
    fn only_a_bench_floor_changes_the_config_hash() {
        let mut c = Config::default();
        let text = serde_json::to_string(&(&c.events, &c.filter, &c.rules, 1024u64)).unwrap();
        let before = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
        });
        assert_eq!(config_hash(&c, 1024), before);
        c.syscall_floor = schemas::floor::EMPTY;
        let empty = config_hash(&c, 1024);
        c.syscall_floor = schemas::floor::CLOCK;
        assert!(empty != before && config_hash(&c, 1024) != empty);
    }
}
