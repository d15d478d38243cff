//! Boots one kernel under qemu and reads its verdict from the serial console.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// How a guest is accelerated. KVM is tried first where `/dev/kvm` opens; under nested
/// virtualisation qemu often aborts at once ("failed to set MSR") or stops with "KVM internal
/// error ... emulation failure", and then the kernel is booted again under TCG.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation.
    Kvm,
    /// qemu's software emulator (`-cpu max` for the newest instructions it emulates).
    Tcg,
}

impl Accel {
    /// The best this machine may offer.
    pub fn detect() -> Accel {
        let usable = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
        if usable { Accel::Kvm } else { Accel::Tcg }
    }

    fn args(self) -> [&'static str; 4] {
        match self {
            Accel::Kvm => ["-accel", "kvm", "-cpu", "host"],
            Accel::Tcg => ["-accel", "tcg", "-cpu", "max,-cx16"],
        }
    }
}

/// What a boot gave.
pub enum Outcome {
    /// The guest's `VM-VERDICT` line, without the prefix.
    Verdict(String),
    /// KVM could not run the guest: boot again under TCG.
    KvmFailed,
    /// No verdict: the reason (timeout, qemu exited).
    NoVerdict(String),
}

/// One guest boot.
pub struct Boot<'a> {
    /// The kernel image.
    pub vmlinuz: &'a Path,
    /// The initramfs.
    pub initrd: &'a Path,
    /// The raw ext4 image attached as the virtio disk.
    pub disk: &'a Path,
    /// Extra kernel command-line words (`flightrec.kernel=6.1`).
    pub cmdline: String,
    /// Where the whole console goes.
    pub log: PathBuf,
    /// Give up after this long.
    pub timeout: Duration,
}

const PREFIX: &str = "VM-VERDICT ";

impl Boot<'_> {
    /// Runs the guest until it prints its verdict and powers off, or the timeout.
    pub fn run(&self, accel: Accel) -> Result<Outcome> {
        let mut child = Command::new("qemu-system-x86_64")
            .args(accel.args())
            // One virtual CPU: with two, qemu 7.2's TCG lets one CPU run code the other is
            // patching (6.12 oopses on an int3 in sched_clock_tick at boot), and a virtual CPU
            // stalled by its host in the middle of an eBPF program breaks the "programs finish
            // within microseconds" the freeze grace period relies on. Multi-CPU behaviour is
            // checked on the host kernel.
            .args(["-m", "1024", "-smp", "1", "-nographic", "-no-reboot"])
            .arg("-kernel")
            .arg(self.vmlinuz)
            .arg("-initrd")
            .arg(self.initrd)
            .arg("-drive")
            .arg(format!(
                "file={},if=virtio,format=raw,cache=unsafe",
                self.disk.display()
            ))
            .arg("-append")
            .arg(format!(
                "console=ttyS0 panic=-1 loglevel=4 rdinit=/init {}",
                self.cmdline
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running qemu-system-x86_64 (apt-get install qemu-system-x86)")?;
        let (tx, rx) = mpsc::channel::<String>();
        let out = child.stdout.take().expect("piped");
        let err = child.stderr.take().expect("piped");
        let tx2 = tx.clone();
        let readers = [
            std::thread::spawn(move || forward(out, tx)),
            std::thread::spawn(move || forward(err, tx2)),
        ];
        let mut log = std::fs::File::create(&self.log)
            .with_context(|| format!("creating {}", self.log.display()))?;
        let deadline = Instant::now() + self.timeout;
        let outcome = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    writeln!(log, "{line}")?;
                    if let Some(v) = line.find(PREFIX) {
                        break Outcome::Verdict(line[v + PREFIX.len()..].trim().to_string());
                    }
                    if accel == Accel::Kvm && line.contains("KVM internal error") {
                        break Outcome::KvmFailed;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    break Outcome::NoVerdict(format!(
                        "no verdict within {} s",
                        self.timeout.as_secs()
                    ));
                }
                // Where KVM cannot run guests, qemu aborts at once ("failed to set MSR").
                Err(mpsc::RecvTimeoutError::Disconnected) if accel == Accel::Kvm => {
                    break Outcome::KvmFailed;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    break Outcome::NoVerdict("qemu exited without a verdict".into());
                }
            }
        };
        // The guest powers off by itself after its verdict; a short grace, then stop it.
        let grace = Instant::now() + Duration::from_secs(20);
        while child.try_wait()?.is_none() && Instant::now() < grace {
            while let Ok(line) = rx.try_recv() {
                writeln!(log, "{line}")?;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if child.try_wait()?.is_none() {
            let _ = child.kill();
        }
        child.wait()?;
        for r in readers {
            let _ = r.join();
        }
        while let Ok(line) = rx.try_recv() {
            writeln!(log, "{line}")?;
        }
        Ok(outcome)
    }
}

/// Sends each line (lossily decoded: a console can carry anything) until EOF.
fn forward(stream: impl std::io::Read, tx: mpsc::Sender<String>) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    while reader.read_until(b'\n', &mut buf).unwrap_or(0) > 0 {
        let line = String::from_utf8_lossy(&buf)
            .trim_end_matches(['\r', '\n'])
            .to_string();
        if tx.send(line).is_err() {
            return;
        }
        buf.clear();
    }
}
