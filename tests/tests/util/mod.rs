//! Helpers shared by the privileged tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

use flightrec::config::Config;
use flightrec::rings::{Frozen, Rings};
use schemas::event::{Event, EventData};
use schemas::manifest::Manifest;
use schemas::manifest::TriggerInfo;

/// First argument of the workload's i-th getpgid.
pub const MAGIC: u64 = 0xF11E_8000_0000;

/// x86-64 syscall numbers used by the workload.
pub mod nr {
    pub const WRITE: u64 = 1;
    pub const NANOSLEEP: u64 = 35;
    pub const FSYNC: u64 = 74;
    pub const GETPGID: u64 = 121;
    pub const OPENAT: u64 = 257;
}

static SERIAL: Mutex<()> = Mutex::new(());

/// A privileged test in progress: holds the lock that keeps privileged tests from running at
/// once (each attaches its own programs, and their loads would disturb each other's counts).
pub struct Privileged {
    _guard: MutexGuard<'static, ()>,
}

/// Returns `None` (after saying why) when the test cannot run here. Under `CI=true` a skip is a
/// failure: CI runs as root and must exercise the kernel side.
pub fn privileged(test: &str) -> Option<Privileged> {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let btf = Path::new("/sys/kernel/btf/vmlinux").exists();
    let reason = if !root {
        Some("needs root to load eBPF programs")
    } else if !btf {
        Some("the kernel has no BTF (/sys/kernel/btf/vmlinux)")
    } else {
        None
    };
    if let Some(reason) = reason {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{test}: privileged test cannot run under CI=true: {reason}");
        }
        println!("skipped {test}: {reason}");
        return None;
    }
    Some(Privileged {
        _guard: SERIAL.lock().unwrap_or_else(|e| e.into_inner()),
    })
}

/// A recorder with its own pins, torn down on drop (and before start, in case a crashed run
/// left some behind).
pub struct TestRecorder {
    pub rings: Option<Rings>,
    pub config: Config,
    pub dir: PathBuf,
}

impl TestRecorder {
    pub fn start(name: &str, edit: impl FnOnce(&mut Config)) -> TestRecorder {
        let mut config = Config::default();
        config.recorder.pin_dir = PathBuf::from(format!("/sys/fs/bpf/flightrec-test-{name}"));
        config.recorder.ring_size = "8MiB".into();
        edit(&mut config);
        flightrec::rings::teardown(&config.recorder.pin_dir).expect("clear stale pins");
        let dir = scratch_dir(name);
        let rings = Rings::start(&config).expect("start recorder");
        TestRecorder {
            rings: Some(rings),
            config,
            dir,
        }
    }

    pub fn rings(&self) -> &Rings {
        self.rings.as_ref().expect("running")
    }

    /// Freezes, writes a snapshot file, and reads it back through the public decoder.
    pub fn snapshot(&self, name: &str) -> (Manifest, Vec<Event>) {
        let frozen = self.rings().freeze();
        self.write_and_read(&frozen, name)
    }

    pub fn write_and_read(&self, frozen: &Frozen, name: &str) -> (Manifest, Vec<Event>) {
        let trigger = TriggerInfo {
            source: "test".into(),
            reason: name.into(),
            fields: Default::default(),
        };
        let w = flightrec::snapshot::write(frozen, &self.config, &self.dir, Some(name), trigger)
            .expect("write snapshot");
        let (manifest, events) = flightrec_reader::dump::open(&w.path).expect("open snapshot");
        let events: Vec<Event> = events.map(|e| e.expect("decodable event")).collect();
        assert_eq!(events.len() as u64, w.records);
        (manifest, events)
    }
}

impl Drop for TestRecorder {
    fn drop(&mut self) {
        self.rings.take();
        let _ = flightrec::rings::teardown(&self.config.recorder.pin_dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fresh directory on the disk that holds the build (a real block device).
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("flightrec-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Runs the workload binary to completion; returns its pid.
pub fn workload(args: &[&str]) -> u32 {
    let mut child = Command::new(env!("CARGO_BIN_EXE_workload"))
        .args(args)
        .spawn()
        .expect("spawn workload");
    let pid = child.id();
    let status = child.wait().expect("wait workload");
    assert!(status.success(), "workload {args:?} failed: {status}");
    pid
}

/// The syscall events of `tid`, as (entry?, id, first arg or ret, ts).
pub fn syscalls_of(events: &[Event], tid: u32) -> Vec<(bool, u64, i64, u64)> {
    events
        .iter()
        .filter(|e| e.tid == tid)
        .filter_map(|e| match e.data {
            EventData::SyscallEntry(s) => Some((true, s.id, s.args[0] as i64, e.ts_ns)),
            EventData::SyscallExit(s) => Some((false, s.id, s.ret, e.ts_ns)),
            _ => None,
        })
        .collect()
}

/// Kernel `dev_t` (major << 20 | minor) of the whole disk holding `path`.
pub fn disk_dev_of(path: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path).ok()?.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let sys = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    if !sys.exists() {
        return None; // not a block device (tmpfs, overlay...)
    }
    let disk = if sys.join("partition").exists() {
        let parent = std::fs::read_to_string(sys.join("../dev")).ok()?;
        let (ma, mi) = parent.trim().split_once(':')?;
        (ma.parse::<u32>().ok()?, mi.parse::<u32>().ok()?)
    } else {
        (major, minor)
    };
    Some((disk.0 << 20) | disk.1)
}

impl TestRecorder {
    /// Freezes and writes a snapshot file; returns its path (in the recorder's scratch dir,
    /// removed with it).
    pub fn snapshot_file(&self, name: &str) -> PathBuf {
        let frozen = self.rings().freeze();
        let trigger = TriggerInfo {
            source: "test".into(),
            reason: name.into(),
            fields: Default::default(),
        };
        flightrec::snapshot::write(&frozen, &self.config, &self.dir, Some(name), trigger)
            .expect("write snapshot")
            .path
    }
}
