//! The tables the programs consult on every event: the filters (pids, comms, cgroups) and the
//! kernel latency rules. They are written before anything is attached, so no event escapes them.

use aya::maps::{Array, HashMap, MapData};
use aya::{Ebpf, Pod};
use schemas::{COMM_LEN, RuleSpec, filter, rule};

use super::open_map;
use crate::config::{Config, FilterConfig};
use crate::error::SetupError;

/// The `FILTER_MODE` the programs are loaded with: which filters are on.
pub(super) fn filter_mode(f: &FilterConfig) -> u32 {
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
    mode
}

/// Fills the filter sets. A cgroup must exist: the programs match its id.
pub(super) fn write_filters(ebpf: &mut Ebpf, f: &FilterConfig) -> Result<(), SetupError> {
    let pids = f.pids.iter().map(|&pid| (pid, format!("filter pid {pid}")));
    fill_set(ebpf, "FILTER_PIDS", pids)?;
    let comms = f
        .comms
        .iter()
        .map(|comm| (comm_key(comm), format!("filter comm {comm}")));
    fill_set(ebpf, "FILTER_COMMS", comms)?;
    let cgroups = f
        .cgroups
        .iter()
        .map(|path| {
            let id = crate::statedump::cgroup_id(path).ok_or_else(|| {
                SetupError::Unsatisfiable(format!(
                    "filter cgroup {path}: no such cgroup under the cgroup2 mount"
                ))
            })?;
            Ok((id, format!("filter cgroup {path}")))
        })
        .collect::<Result<Vec<_>, SetupError>>()?;
    fill_set(ebpf, "FILTER_CGROUPS", cgroups)
}

/// Puts each key into the hash set `name`; the string with a key names it in errors.
fn fill_set<K: Pod>(
    ebpf: &mut Ebpf,
    name: &str,
    keys: impl IntoIterator<Item = (K, String)>,
) -> Result<(), SetupError> {
    let mut set: HashMap<&mut MapData, K, u8> = open_map(ebpf, name)?;
    for (key, what) in keys {
        set.insert(key, 1, 0)
            .map_err(|source| SetupError::Map { what, source })?;
    }
    Ok(())
}

/// Writes the rule table and the bitmap of the syscalls some rule watches.
pub(super) fn write_rules(ebpf: &mut Ebpf, specs: &[RuleSpec]) -> Result<(), SetupError> {
    let mut words = [0u64; (rule::MAX_SYSCALL / 64) as usize];
    for s in specs.iter().filter(|s| s.kind == rule::SYSCALL) {
        words[(s.key / 64) as usize] |= 1 << (s.key % 64);
    }
    let rules = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| (i as u32, *spec, format!("writing rule {i}")));
    fill_array(ebpf, "RULES", rules)?;
    let bitmap = (0..)
        .zip(words)
        .map(|(i, w)| (i, w, "writing SYSCALL_RULED".to_owned()));
    fill_array(ebpf, "SYSCALL_RULED", bitmap)
}

/// Sets entries of the array `name`; the string with an entry names it in errors.
pub(super) fn fill_array<V: Pod>(
    ebpf: &mut Ebpf,
    name: &str,
    entries: impl IntoIterator<Item = (u32, V, String)>,
) -> Result<(), SetupError> {
    let mut array: Array<&mut MapData, V> = open_map(ebpf, name)?;
    for (i, value, what) in entries {
        array
            .set(i, value, 0)
            .map_err(|source| SetupError::Map { what, source })?;
    }
    Ok(())
}

/// A comm as the programs compare it: NUL-padded to `COMM_LEN` bytes.
fn comm_key(comm: &str) -> [u8; COMM_LEN] {
    let mut key = [0u8; COMM_LEN];
    key[..comm.len()].copy_from_slice(comm.as_bytes());
    key
}

/// The kernel rule table for `config.rules` (checked again here: the loader is the last line).
pub fn rule_specs(config: &Config) -> Result<Vec<RuleSpec>, SetupError> {
    let rules =
        triggers::rules::check_rules(&config.rules).map_err(|source| SetupError::Config {
            what: "the [[rules]]",
            source,
        })?;
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
                    return Err(SetupError::Unsatisfiable(format!(
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
                let c = comm_key(comm);
                s.comm = [
                    u64::from_ne_bytes(c[..8].try_into().expect("8 bytes")),
                    u64::from_ne_bytes(c[8..].try_into().expect("8 bytes")),
                ];
                s.flags |= rule::MATCH_COMM;
            }
            if let Some(path) = &r.cgroup {
                s.cgroup = crate::statedump::cgroup_id(path).ok_or_else(|| {
                    SetupError::Unsatisfiable(format!(
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
