//! Issue 10's probes of the recorder host, rerun against the `flightrec` binary: each daemon in
//! its own process (so its capabilities, file modes and memory are its own), with its own pin
//! directory, socket and spool, and local users made for the test and removed after it.
//!
//! The privileged tests print why they skip when not root; under `CI=true` a skip fails.

mod hook;
mod local;
mod pins;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub(crate) fn flightrec() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flightrec"))
}

static SERIAL: Mutex<()> = Mutex::new(());

/// Held by a privileged test while it runs: one daemon (and one load) at a time.
pub(crate) struct Privileged {
    _guard: MutexGuard<'static, ()>,
}

/// `None` (after saying why) when `test` cannot run here; under `CI=true` a skip fails.
pub(crate) fn privileged(test: &str) -> Option<Privileged> {
    // SAFETY: geteuid has no preconditions.
    let reason = if unsafe { libc::geteuid() } != 0 {
        Some("needs root to load eBPF programs and to add a local user")
    } else if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        Some("the kernel has no BTF (/sys/kernel/btf/vmlinux)")
    } else if !Path::new("/usr/sbin/useradd").exists() {
        Some("useradd is missing")
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

/// A local user made for one test, removed (with its group) on drop.
pub(crate) struct TempUser {
    pub(crate) name: String,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

impl TempUser {
    pub(crate) fn new(tag: &str) -> TempUser {
        let name = format!("frt{}{tag}", std::process::id() % 100_000);
        let _ = Command::new("userdel").arg(&name).output();
        let out = Command::new("useradd")
            .args(["--no-create-home", "--user-group", "--shell", "/bin/false"])
            .arg(&name)
            .output()
            .unwrap();
        assert!(out.status.success(), "useradd {name}: {out:?}");
        let id = |flag: &str| -> u32 {
            let o = Command::new("id").arg(flag).arg(&name).output().unwrap();
            String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
        };
        let (uid, gid) = (id("-u"), id("-g"));
        TempUser { name, uid, gid }
    }

    /// `cmd`, to be run as this user.
    pub(crate) fn run(&self, mut cmd: Command) -> Command {
        use std::os::unix::process::CommandExt;
        cmd.uid(self.uid).gid(self.gid);
        cmd
    }
}

impl Drop for TempUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).output();
    }
}

/// A test's own directory (pins, socket, spool, config) and the daemons it starts.
pub(crate) struct Scene {
    pub(crate) dir: PathBuf,
    pub(crate) pins: PathBuf,
    pub(crate) socket: PathBuf,
    pub(crate) spool: PathBuf,
    pub(crate) config: PathBuf,
}

impl Scene {
    /// A fresh scene named `name`, whose config is `[recorder]` with its paths plus `extra`.
    pub(crate) fn new(name: &str, extra: &str) -> Scene {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("hardening-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let pins = PathBuf::from(format!("/sys/fs/bpf/flightrec-test-hard-{name}"));
        let _ = flightrec()
            .arg("teardown")
            .arg("--pin-dir")
            .arg(&pins)
            .output();
        let _ = std::fs::remove_dir_all(&pins);
        let s = Scene {
            socket: dir.join("control.sock"),
            spool: dir.join("spool"),
            config: dir.join("recorder.toml"),
            pins,
            dir,
        };
        s.write_config(extra);
        s
    }

    pub(crate) fn write_config(&self, extra: &str) {
        let text = format!(
            "[recorder]\nring_size = \"1MiB\"\npin_dir = {:?}\ncontrol_socket = {:?}\n\
             spool_dir = {:?}\n{extra}",
            self.pins.display().to_string(),
            self.socket.display().to_string(),
            self.spool.display().to_string(),
        );
        std::fs::write(&self.config, text).unwrap();
    }

    /// `flightrec record` on this scene's config (with `socket` instead when given), its
    /// stderr in a file of the scene.
    pub(crate) fn spawn(&self, socket: Option<&Path>, edit: impl FnOnce(&mut Command)) -> Daemon {
        let n = std::fs::read_dir(&self.dir).unwrap().count();
        let log = self.dir.join(format!("daemon-{n}.log"));
        let mut cmd = flightrec();
        cmd.arg("record").arg("--config").arg(&self.config);
        if let Some(s) = socket {
            cmd.arg("--socket").arg(s);
        }
        cmd.stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        edit(&mut cmd);
        Daemon {
            child: cmd.spawn().unwrap(),
            log,
            socket: socket.unwrap_or(&self.socket).to_owned(),
        }
    }

    /// Starts a daemon and waits until it answers on its socket.
    pub(crate) fn start(&self, edit: impl FnOnce(&mut Command)) -> Daemon {
        let mut d = self.spawn(None, edit);
        d.wait_up();
        d
    }

    /// `flightrec snapshot record` into `dir` (the spool when `None`) through `socket`.
    pub(crate) fn snapshot(&self, dir: Option<&Path>) -> std::process::Output {
        let mut cmd = flightrec();
        cmd.args(["snapshot", "record", "--socket"])
            .arg(&self.socket);
        if let Some(d) = dir {
            cmd.arg("-o").arg(d);
        }
        cmd.output().unwrap()
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        let _ = flightrec()
            .arg("teardown")
            .arg("--pin-dir")
            .arg(&self.pins)
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running `flightrec record`, killed on drop.
pub(crate) struct Daemon {
    pub(crate) child: Child,
    pub(crate) log: PathBuf,
    pub(crate) socket: PathBuf,
}

impl Daemon {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn wait_up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let st = flightrec()
                .arg("status")
                .arg("--socket")
                .arg(&self.socket)
                .output()
                .unwrap();
            if st.status.success() {
                return;
            }
            if let Some(code) = self.child.try_wait().unwrap() {
                panic!("daemon exited early ({code}): {}", self.log());
            }
            assert!(Instant::now() < deadline, "daemon not up: {}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for the daemon to exit by itself; its exit code.
    pub(crate) fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            assert!(Instant::now() < deadline, "daemon still running");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops it with `sig` and waits.
    pub(crate) fn signal(&mut self, sig: i32) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
        let _ = self.child.wait();
    }

    /// A line of `/proc/PID/status`, e.g. `CapEff`.
    pub(crate) fn status_field(&self, key: &str) -> String {
        proc_status_field(self.pid(), key)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.signal(libc::SIGTERM);
        }
    }
}

/// The value of `key:` in `/proc/PID/status`.
pub(crate) fn proc_status_field(pid: u32, key: &str) -> String {
    let mut s = String::new();
    std::fs::File::open(format!("/proc/{pid}/status"))
        .unwrap()
        .read_to_string(&mut s)
        .unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        .trim()
        .to_owned()
}

/// `VmRSS` of `pid`, kB.
pub(crate) fn rss_kb(pid: u32) -> u64 {
    proc_status_field(pid, "VmRSS")
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap()
}

/// Mode bits of `p` (without following a last symbolic link).
pub(crate) fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Probe 8: `--check-config` printed the hook's and the collector's tokens in clear (and the
/// metrics endpoint's, since it has one).
#[test]
fn probe8_check_config_redacts_tokens() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("hardening-check-config");
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("secrets.toml");
    std::fs::write(
        &cfg,
        "[hook]\ntoken = \"hook-secret-0123456789\"\n\
         [collector]\nurl = \"http://127.0.0.1:7480\"\ntoken = \"collector-secret-0123456789\"\n\
         [metrics]\nlisten = \"127.0.0.1:9464\"\ntoken = \"metrics-secret-0123456789\"\n",
    )
    .unwrap();
    let out = flightrec()
        .args(["record", "--check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("secret-0123456789"), "{text}");
    assert_eq!(text.matches("token = \"<redacted>\"").count(), 3, "{text}");
    // An empty token stays visibly empty.
    std::fs::write(&cfg, "[hook]\ntoken_file = \"/etc/flightrec/hook.token\"\n").unwrap();
    let out = flightrec()
        .args(["record", "--check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("token = \"\""), "{text}");
}
