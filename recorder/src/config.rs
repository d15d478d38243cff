//! Recorder configuration: TOML with a documented default for every field, checked strictly
//! (unknown keys and bad values are errors, never ignored).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use schemas::config::{Rename, read_toml};
use schemas::units::parse_size;

use crate::error::ConfigError;

/// Keys older versions read, refused with the key that replaced them.
pub const RENAMED: &[Rename] = &[
    (
        "hook",
        "header_timeout_ms",
        "header_timeout",
        "header_timeout = \"2s\"",
    ),
    (
        "hook",
        "request_timeout_ms",
        "request_timeout",
        "request_timeout = \"5s\"",
    ),
    (
        "hook",
        "connection_timeout_ms",
        "connection_timeout",
        "connection_timeout = \"30s\"",
    ),
    ("governor", "cooldown_ms", "cooldown", "cooldown = \"5s\""),
    (
        "governor",
        "dedupe_window_ms",
        "dedupe_window",
        "dedupe_window = \"60s\"",
    ),
    (
        "governor",
        "default_post_ms",
        "default_post",
        "default_post = \"0s\"",
    ),
    ("governor", "max_post_ms", "max_post", "max_post = \"10s\""),
    (
        "governor",
        "min_prefill_ms",
        "min_prefill",
        "min_prefill = \"500ms\"",
    ),
    ("rules", "post_ms", "post", "post = \"200ms\""),
];

/// The whole configuration file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Rings, pins, sockets and spool.
    pub recorder: RecorderConfig,
    /// Which event classes are recorded.
    pub events: EventsConfig,
    /// Load-time filters on per-task events.
    pub filter: FilterConfig,
    /// The HTTP trigger hook.
    pub hook: triggers::hook::HookConfig,
    /// The trigger governor (cooldown, budgets, dedupe, windows).
    pub governor: triggers::governor::GovernorConfig,
    /// Kernel latency rules (`[[rules]]`), evaluated in the eBPF programs.
    pub rules: Vec<triggers::rules::RuleConfig>,
    /// Upload to a collector and group triggers.
    pub collector: flightrec_uplink::CollectorConfig,
    /// `GET /metrics` for Prometheus.
    pub metrics: crate::metrics::MetricsConfig,
    /// What the syscall programs do (`schemas::floor`): record, or a benchmark floor set by
    /// the hidden `flightrec record --bench-floor`. Never read from a file.
    #[serde(skip)]
    pub syscall_floor: u32,
    /// What the statedump of each snapshot holds beyond processes and threads.
    pub statedump: StatedumpConfig,
}

/// `[statedump]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatedumpConfig {
    /// Record each process's open fds (path, socket addresses) so analyses name the file or
    /// socket behind an fd. Reading other users' `/proc/PID/fd` makes the daemon keep
    /// `CAP_SYS_PTRACE` and `CAP_DAC_READ_SEARCH`; off, it keeps no capability.
    pub fds: bool,
}

impl Default for StatedumpConfig {
    fn default() -> Self {
        StatedumpConfig { fds: true }
    }
}

/// `[recorder]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecorderConfig {
    /// Ring size per CPU ("8MiB"); rounded down to a power-of-two number of packets.
    pub ring_size: String,
    /// Spill size per CPU, where writers record while a snapshot copies the ring out; empty:
    /// a sixteenth of the ring. Rounded down to a power-of-two number of packets (2 at least,
    /// the ring's size at most).
    pub spill_size: String,
    /// bpffs directory holding the pinned maps and links.
    pub pin_dir: PathBuf,
    /// Unix socket for `flightrec status` / `snapshot record`.
    pub control_socket: PathBuf,
    /// Default directory for snapshot files.
    pub spool_dir: PathBuf,
    /// Stable id for this host in snapshots (default: the host name).
    pub host_id: String,
    /// zstd level for snapshot streams (1 fastest .. 19 smallest).
    pub compression_level: i32,
    /// User (name or uid) who may use the control socket besides root (empty: root only).
    pub control_owner: String,
    /// Group (name or gid) whose members may use the control socket (empty: none).
    pub control_group: String,
    /// Existing directories besides `spool_dir` that `snapshot record -o` may write into.
    pub snapshot_dirs: Vec<PathBuf>,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        RecorderConfig {
            ring_size: "8MiB".into(),
            spill_size: String::new(),
            pin_dir: PathBuf::from("/sys/fs/bpf/flightrec"),
            control_socket: PathBuf::from("/run/flightrec/control.sock"),
            spool_dir: PathBuf::from("/var/lib/flightrec/spool"),
            host_id: String::new(),
            compression_level: 3,
            control_owner: String::new(),
            control_group: String::new(),
            snapshot_dirs: Vec::new(),
        }
    }
}

/// `[events]`: each class on or off.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// `raw_syscalls` enter/exit.
    pub syscalls: bool,
    /// `sched_switch`, `sched_wakeup`, `sched_wakeup_new`.
    pub sched: bool,
    /// `sched_process_fork/exec/exit`.
    pub process: bool,
    /// `block_rq_issue/complete`.
    pub block: bool,
    /// `irq_handler_entry/exit`, `softirq_entry/exit`.
    pub irq: bool,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            syscalls: true,
            sched: true,
            process: true,
            block: true,
            irq: true,
        }
    }
}

impl EventsConfig {
    /// Names of the enabled classes.
    pub fn enabled(&self) -> Vec<String> {
        [
            ("syscalls", self.syscalls),
            ("sched", self.sched),
            ("process", self.process),
            ("block", self.block),
            ("irq", self.irq),
        ]
        .iter()
        .filter(|(_, on)| *on)
        .map(|(n, _)| (*n).to_owned())
        .collect()
    }
}

/// `[filter]`: restricts syscall and process events to matching tasks (all given filters must
/// match). Scheduling, block and irq events are always system-wide: they are the context needed
/// to explain what happened to the filtered tasks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilterConfig {
    /// Process ids to record (empty: all).
    pub pids: Vec<u32>,
    /// Comms to record, at most 15 bytes each (empty: all).
    pub comms: Vec<String>,
    /// cgroup v2 paths relative to the cgroup2 mount, e.g. "/system.slice/nginx.service"
    /// (empty: all).
    pub cgroups: Vec<String>,
    /// With `pids`: also record processes forked by recorded ones.
    pub follow_children: bool,
}

impl Default for FilterConfig {
    fn default() -> Self {
        FilterConfig {
            pids: Vec::new(),
            comms: Vec::new(),
            cgroups: Vec::new(),
            follow_children: true,
        }
    }
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let config: Config = read_toml(path, RENAMED)?;
        config.check()?;
        Ok(config)
    }

    /// Parses and checks configuration text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = schemas::config::parse_toml(text, RENAMED)?;
        config.check()?;
        Ok(config)
    }

    /// The configuration with the hook's and the collector's tokens replaced by
    /// [`schemas::config::REDACTED`], for `--check-config`.
    pub fn redacted(&self) -> Config {
        let mut c = self.clone();
        schemas::config::redact(&mut c.hook.token);
        schemas::config::redact(&mut c.collector.token);
        schemas::config::redact(&mut c.metrics.token);
        c
    }

    /// Checks values that the types alone do not constrain.
    pub fn check(&self) -> Result<(), ConfigError> {
        parse_size(&self.recorder.ring_size)?;
        self.ring_packets()?;
        self.spill_packets()?;
        if !(1..=19).contains(&self.recorder.compression_level) {
            return Err(ConfigError::Invalid(format!(
                "recorder.compression_level must be 1..=19, not {}",
                self.recorder.compression_level
            )));
        }
        if self.events.enabled().is_empty() {
            return Err(ConfigError::Invalid(
                "every event class is disabled in [events]: nothing would be recorded".into(),
            ));
        }
        for comm in &self.filter.comms {
            if comm.is_empty() || comm.len() > 15 {
                return Err(ConfigError::Invalid(format!(
                    "filter.comms entry {comm:?} must be 1 to 15 bytes (the kernel keeps 15)"
                )));
            }
        }
        crate::daemon::Access::from_config(&self.recorder)?;
        if let Some(d) = self
            .recorder
            .snapshot_dirs
            .iter()
            .find(|d| !d.is_absolute())
        {
            return Err(ConfigError::Invalid(format!(
                "recorder.snapshot_dirs entry {} must be an absolute path",
                d.display()
            )));
        }
        self.hook.check()?;
        self.metrics.check()?;
        crate::hist::families(self)?;
        self.governor.check()?;
        let rules = triggers::rules::check_rules(&self.rules)?;
        let enabled = self.events.enabled();
        for r in &rules {
            if !enabled.iter().any(|c| c == r.kind.class()) {
                return Err(ConfigError::Invalid(format!(
                    "rule {:?} needs [events] {} = true: its programs see the events it measures",
                    r.name,
                    r.kind.class()
                )));
            }
            if r.post_ms > self.governor.max_post.as_millis() as u64 {
                return Err(ConfigError::Invalid(format!(
                    "rule {:?}: post {}ms is above governor.max_post {}",
                    r.name,
                    r.post_ms,
                    schemas::units::format_duration(self.governor.max_post)
                )));
            }
        }
        self.collector.check()?;
        for cg in &self.filter.cgroups {
            if !cg.starts_with('/') {
                return Err(ConfigError::Invalid(format!(
                    "filter.cgroups entry {cg:?} must start with '/' (a path under the cgroup2 \
                     mount)"
                )));
            }
        }
        Ok(())
    }

    /// Packets of the main ring per CPU: the largest power of two of
    /// `schemas::compact::PACKET_SIZE`-byte packets that fits in `ring_size`.
    pub fn ring_packets(&self) -> Result<u64, ConfigError> {
        let bytes = parse_size(&self.recorder.ring_size)?;
        let packets = bytes / PACKET as u64;
        if packets < MIN_PACKETS {
            return Err(ConfigError::Invalid(format!(
                "recorder.ring_size {} is below the 64 KiB minimum",
                self.recorder.ring_size,
            )));
        }
        let packets = 1u64 << (63 - packets.leading_zeros());
        if packets > MAX_PACKETS {
            return Err(ConfigError::Invalid(format!(
                "recorder.ring_size {} is above the 1 GiB per CPU limit",
                self.recorder.ring_size
            )));
        }
        Ok(packets)
    }

    /// Packets of the spill per CPU: `spill_size` rounded down to a power of two, or a
    /// sixteenth of the ring; at least two, at most the ring's.
    pub fn spill_packets(&self) -> Result<u64, ConfigError> {
        let packets = self.ring_packets()?;
        let asked = if self.recorder.spill_size.is_empty() {
            packets / 16
        } else {
            parse_size(&self.recorder.spill_size)? / PACKET as u64
        };
        let spill = if asked == 0 {
            0
        } else {
            1u64 << (63 - asked.leading_zeros())
        };
        Ok(spill.clamp(2, packets))
    }

    /// Says how `recorder.ring_size` was rounded, when it was: a ring holds a power-of-two
    /// number of packets (the programs index it with a mask), and the kernel maps it in whole
    /// pages. `None` when the size is used as given.
    pub fn ring_size_note(&self) -> Result<Option<String>, ConfigError> {
        let asked = parse_size(&self.recorder.ring_size)?;
        let packets = self.ring_packets()?;
        let used = packets * PACKET as u64;
        Ok((used != asked).then(|| {
            format!(
                "recorder.ring_size {} ({asked} bytes) rounded down to {used} bytes: {packets} \
                 packets of {PACKET} bytes (rings hold a power-of-two number of packets)",
                self.recorder.ring_size,
            )
        }))
    }
}

/// Bytes of a ring packet.
const PACKET: usize = schemas::compact::PACKET_SIZE;
/// Fewest packets per ring (64 KiB).
const MIN_PACKETS: u64 = 16;
/// Most packets per ring (1 GiB).
const MAX_PACKETS: u64 = 1 << 18;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_sizes_say_how_they_were_rounded() {
        let mut c = Config::default();
        // 8 MiB is 2048 packets: used as given.
        c.recorder.ring_size = "8MiB".into();
        assert_eq!(c.ring_size_note().unwrap(), None);
        // 96 MiB is 24576 packets: rounded down to 16384.
        c.recorder.ring_size = "96MiB".into();
        let note = c.ring_size_note().unwrap().expect("rounded");
        assert!(
            note.contains("rounded down to 67108864 bytes: 16384 packets"),
            "{note}"
        );
    }

    #[test]
    fn packets_round_down_to_power_of_two() {
        let mut c = Config::default();
        assert_eq!(c.ring_packets().unwrap(), 2048);
        c.recorder.ring_size = "100000".into();
        assert_eq!(c.ring_packets().unwrap(), 16);
        c.recorder.ring_size = "60000".into();
        assert!(c.ring_packets().is_err());
        c.recorder.ring_size = "2GiB".into();
        assert!(c.ring_packets().is_err());
        c.recorder.ring_size = "100000".into();
        assert_eq!(c.spill_packets().unwrap(), 2);
        c.recorder.ring_size = "8MiB".into();
        assert_eq!(c.spill_packets().unwrap(), 128);
        c.recorder.spill_size = "1MiB".into();
        assert_eq!(c.spill_packets().unwrap(), 256);
        c.recorder.spill_size = "1GiB".into();
        assert_eq!(c.spill_packets().unwrap(), 2048);
        c.recorder.spill_size = "1KiB".into();
        assert_eq!(c.spill_packets().unwrap(), 2);
        c.recorder.spill_size = "lots".into();
        assert!(c.spill_packets().is_err());
    }

    #[test]
    fn strict_parsing() {
        assert!(Config::parse("").is_ok());
        assert!(Config::parse("[recorder]\nring_sise = \"1MiB\"").is_err());
        assert!(Config::parse("[events]\nsyscalls = \"yes\"").is_err());
        assert!(Config::parse("[filter]\ncomms = [\"a-very-long-comm-name\"]").is_err());
        assert!(Config::parse("[filter]\ncgroups = [\"relative\"]").is_err());
        assert!(
            Config::parse(
                "[events]\nsyscalls=false\nsched=false\nprocess=false\nblock=false\nirq=false"
            )
            .is_err()
        );
        assert!(Config::parse("[hook]\nlisten = \"0.0.0.0:7341\"").is_err());
        assert!(Config::parse("[hook]\ntoken = \"short\"").is_err());
        assert!(Config::parse("[governor]\ncooldown = 1").is_err());
        assert!(Config::parse("[governor.host_budget]\nburst = 0\nper_minute = 1").is_err());
        let rule = "[[rules]]\nname = \"r\"\nkind = \"syscall\"\nsyscall = \"fsync\"\n\
                    threshold = \"10ms\"\n";
        assert_eq!(Config::parse(rule).unwrap().rules.len(), 1);
        let e = Config::parse(&format!("{rule}[events]\nsyscalls = false")).unwrap_err();
        assert!(e.to_string().contains("needs [events] syscalls"), "{e}");
        let e = Config::parse(&format!("{rule}post = \"20s\"")).unwrap_err();
        assert!(e.to_string().contains("max_post"), "{e}");
        let e = Config::parse(&format!("{rule}post_ms = 20000")).unwrap_err();
        assert!(e.to_string().contains("`rules.post`"), "{e}");
        let c = Config::parse("[recorder]\nring_size = \"1MiB\"\n[filter]\npids = [1]").unwrap();
        assert_eq!(c.ring_packets().unwrap(), 256);
        assert_eq!(c.filter.pids, vec![1]);
    }

    #[test]
    fn example_config_is_valid_and_matches_defaults() {
        let text = include_str!("../../examples/flightrec.toml");
        assert_eq!(Config::parse(text).unwrap(), Config::default());
    }
}
