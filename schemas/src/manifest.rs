//! The JSON manifest at the head of every snapshot file: what was recorded, where, when, why,
//! how completely, and the state of the system (statedump) needed to read the events.
//!
//! Fields added in later versions carry `#[serde(default)]`, so older files still read.

use serde::{Deserialize, Serialize};

/// Everything a snapshot says about itself besides its events.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Unique id of this snapshot (32 hex digits).
    pub snapshot_id: String,
    /// Name given by the user or derived from the trigger.
    pub name: String,
    /// `CLOCK_REALTIME` nanoseconds when the rings were frozen.
    pub frozen_realtime_ns: u64,
    /// `CLOCK_MONOTONIC` nanoseconds when the rings were frozen (event timebase).
    pub frozen_monotonic_ns: u64,
    /// The machine that recorded the events.
    pub host: HostInfo,
    /// Offsets from the event clock (`CLOCK_MONOTONIC`) to other clocks.
    pub clocks: ClockOffsets,
    /// How the recorder was set up.
    pub recorder: RecorderInfo,
    /// What caused the snapshot.
    pub trigger: TriggerInfo,
    /// Per-CPU completeness of the recorded window.
    pub coverage: Vec<CpuCoverage>,
    /// Processes, threads and cgroups at snapshot time.
    pub statedump: Statedump,
}

/// Identity of the recording host.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    /// Host name (`uname -n`).
    pub hostname: String,
    /// Stable host id from the recorder config, or the host name.
    pub host_id: String,
    /// Kernel release (`uname -r`).
    pub kernel_release: String,
    /// Kernel build string (`uname -v`).
    pub kernel_version: String,
    /// Machine architecture (`uname -m`); selects the syscall table.
    pub machine: String,
    /// `/proc/sys/kernel/random/boot_id`.
    pub boot_id: String,
    /// Number of possible CPUs.
    pub ncpu: u32,
}

/// Offsets to add to an event timestamp (`CLOCK_MONOTONIC` ns) to get another clock, measured at
/// snapshot time with the tightest of several paired clock reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockOffsets {
    /// `CLOCK_REALTIME - CLOCK_MONOTONIC`, ns.
    pub realtime_minus_monotonic_ns: i64,
    /// `CLOCK_TAI - CLOCK_MONOTONIC`, ns.
    pub tai_minus_monotonic_ns: i64,
    /// `CLOCK_BOOTTIME - CLOCK_MONOTONIC`, ns (time spent suspended).
    pub boottime_minus_monotonic_ns: i64,
    /// Uncertainty of the offsets: duration of the best paired read, ns.
    pub uncertainty_ns: u64,
}

/// Recorder set-up in force for the snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecorderInfo {
    /// flightrec version.
    pub version: String,
    /// Ring slots per CPU (ring layouts before the compact one), or packets per CPU of the
    /// main ring.
    pub ring_slots: u64,
    /// Bytes per record of the file's record streams.
    pub record_size: u32,
    /// Bytes of one CPU's main ring (0 in files of recorders before the compact rings).
    #[serde(default)]
    pub ring_bytes: u64,
    /// Event classes recorded (`syscalls`, `sched`, `process`, `block`, `irq`).
    pub classes: Vec<String>,
    /// Filters in force, as configured.
    pub filter: FilterInfo,
}

/// Load-time filters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterInfo {
    /// Recorded process ids (empty: all).
    pub pids: Vec<u32>,
    /// Recorded comms (empty: all).
    pub comms: Vec<String>,
    /// Recorded cgroup paths (empty: all).
    pub cgroups: Vec<String>,
    /// Whether children of matching processes were followed.
    pub follow_children: bool,
}

/// The cause of a snapshot.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TriggerInfo {
    /// Source: `cli`, `hook`, `rule`, `group`.
    pub source: String,
    /// Free-text reason.
    pub reason: String,
    /// Source-specific details (request URL, rule, triggering event...).
    #[serde(default)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// What the snapshot holds of one CPU's ring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuCoverage {
    /// CPU number.
    pub cpu: u32,
    /// Timestamp of the oldest record kept, if any.
    pub oldest_ts_ns: Option<u64>,
    /// Timestamp of the newest record kept, if any.
    pub newest_ts_ns: Option<u64>,
    /// Records in the file for this CPU.
    pub records_kept: u64,
    /// Records written in the window but overwritten by newer ones before the freeze.
    pub records_overwritten: u64,
    /// Records reserved in the window but never completely written (e.g. still being written
    /// at the freeze), so not kept.
    pub records_lost: u64,
    /// First ring index of the window (for continuity checks across snapshots).
    pub window_start: u64,
    /// One past the last ring index of the window.
    pub window_end: u64,
    /// Epoch the window was recorded in.
    pub epoch: u32,
}

/// System state captured at snapshot time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statedump {
    /// Processes alive at snapshot time.
    pub processes: Vec<ProcessInfo>,
    /// cgroup v2 ids and paths.
    pub cgroups: Vec<CgroupInfo>,
    /// Block devices by number, so analyses name disks (`vda`) rather than `254:0`. Absent in
    /// snapshots of older recorders.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<DiskInfo>,
}

/// A block device at snapshot time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskInfo {
    /// Kernel `dev_t` as block events carry it (`major << 20 | minor`).
    pub dev: u32,
    /// Kernel name (`vda`, `nvme0n1`, `vda1`).
    pub name: String,
}

/// One process at snapshot time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// Process id (tgid).
    pub pid: u32,
    /// Parent process id.
    pub ppid: u32,
    /// Comm of the main thread.
    pub comm: String,
    /// Command line, arguments joined by spaces (may be empty for kernel threads).
    pub cmdline: String,
    /// cgroup v2 path relative to the cgroup2 mount.
    pub cgroup_path: String,
    /// cgroup v2 id (inode of the cgroup directory), 0 when unknown.
    pub cgroup_id: u64,
    /// Container id derived from the cgroup path, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// Threads of the process.
    pub threads: Vec<ThreadInfo>,
    /// Its open file descriptors, lowest first (absent in snapshots of older recorders, and
    /// when `statedump.fds` is off).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fds: Vec<FdInfo>,
    /// Open descriptors left out of `fds` by the per-process or total cap.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fds_omitted: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One open file descriptor of a process at snapshot time (LTTng's
/// `lttng_statedump_file_descriptor`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdInfo {
    /// Descriptor number.
    pub fd: u32,
    /// What `/proc/PID/fd/FD` links to: a path, `socket:[INODE]`, `pipe:[INODE]`,
    /// `anon_inode:[eventfd]`...
    pub target: String,
    /// For a socket found in `/proc/PID/net/{tcp,tcp6,udp,udp6,unix}`: its protocol and
    /// addresses, `tcp 127.0.0.1:40312->127.0.0.1:5432`, `udp 0.0.0.0:53`, `unix /run/x.sock`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
}

impl FdInfo {
    /// How analyses name this descriptor: the socket's addresses, the path, or what an
    /// anonymous inode is (`pipe`, `eventfd`, `epoll`, `timerfd`...).
    pub fn name(&self) -> String {
        if let Some(s) = &self.socket {
            return s.clone();
        }
        target_name(&self.target)
    }
}

/// The short name of a `/proc/PID/fd` link target: `pipe:[7]` is `pipe`,
/// `anon_inode:[eventpoll]` is `epoll`, `socket:[9]` (not found in `/proc/PID/net`) is
/// `socket`; a path is itself.
pub fn target_name(target: &str) -> String {
    if let Some(anon) = target.strip_prefix("anon_inode:") {
        let kind = anon.trim_start_matches('[').trim_end_matches(']');
        return match kind {
            "eventpoll" => "epoll".into(),
            k => k.to_owned(),
        };
    }
    for kind in ["socket", "pipe"] {
        if target
            .strip_prefix(kind)
            .is_some_and(|rest| rest.starts_with(":["))
        {
            return kind.into();
        }
    }
    target.to_owned()
}

/// One thread at snapshot time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadInfo {
    /// Thread id.
    pub tid: u32,
    /// Thread comm.
    pub comm: String,
}

/// A cgroup v2 directory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupInfo {
    /// cgroup id (inode number).
    pub id: u64,
    /// Path relative to the cgroup2 mount (`/` for the root).
    pub path: String,
}
