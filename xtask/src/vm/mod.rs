//! `cargo xtask vm-test`: the recorder's checks on every kernel of the matrix (Debian's own
//! cloud kernels under qemu) and on the host kernel, one verdict line each.
//!
//! Kernel packages come from Debian with apt in a private state directory per suite and are
//! cached with their unpacked `vmlinuz` and virtio modules under `~/.cache/flightrec-vm`
//! (`$XDG_CACHE_HOME` if set); a second run downloads nothing. Each guest boots from an
//! initramfs holding busybox, the release `flightrec`, the privileged test executable and the
//! workload it plants, and writes its scratch files to an ext4 virtio disk, so block events
//! are real requests. See docs/kernels.md.

mod apt;
mod image;
mod kernel;
mod qemu;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use image::Binaries;
use kernel::{Expect, KERNELS, Kernel};
use qemu::{Accel, Boot, Outcome};

/// The privileged tests run on every kernel: between them every event class with its fields
/// against a planted workload (syscalls with arguments, block issue/complete on the disk the
/// scratch files live on, sched switch/wakeup, irq and softirq, fork/exec/exit), snapshots
/// across freezes with nothing lost, the spill folded back, a torn record counted and never
/// misread, records of threads taking turns on one CPU each naming its thread (the task left
/// out of records that follow one of the same task, the programs' current-task cache) and of a
/// thread that execs naming the process, a syscall and a block rule freezing in the kernel, a
/// run-queue rule on a cgroup (the BTF-resolved cgroup chain), and the in-kernel histograms.
/// None needs a reader that is absent from the guest.
pub const TEST_NAMES: &[&str] = &[
    "snapshot_holds_exactly_the_childs_syscalls_in_order",
    "sched_switch_wakeup_and_irqs_of_a_sleeper",
    "snapshots_under_load_lose_nothing_across_freezes",
    "the_spill_records_during_a_copy_and_is_folded_back",
    "a_torn_record_is_waited_for_then_counted_lost_and_never_misread",
    "threads_taking_turns_on_one_cpu_keep_their_own_records",
    "a_thread_that_execs_takes_the_process_id_in_its_records",
    "triggers::rules::syscall_rule_freezes_at_the_slow_nanosleep",
    "triggers::rules::block_rule_freezes_at_the_completion_of_a_slow_request",
    "triggers::rules::runqueue_rule_on_a_cgroup_fires_for_a_waiter_in_that_cgroup_only",
    "triggers::histograms::kernel_histograms_count_every_planted_syscall",
];

/// Longest a guest may take from boot to verdict (TCG runs the checks in a few minutes).
const GUEST_TIMEOUT: Duration = Duration::from_secs(1500);

/// Usage of `vm-test`.
pub const USAGE: &str = "cargo xtask vm-test [--kernel 5.10|6.1|6.12|host|all] [--keep]

vm-test     boot Debian's cloud kernels under qemu and run the recorder's checks in each,
            then on the host kernel; one `VM-VERDICT <kernel> PASS|FAIL <details>` line per
            kernel, exit 1 on any regression (5.10 must refuse in one line, the rest pass)
--kernel K  only kernel K (repeatable); `all` (the default) is every kernel and the host
--keep      keep the initramfs and disk images under the cache's run/ directory";

/// Parsed `vm-test` flags.
struct Args {
    kernels: Vec<String>,
    keep: bool,
}

fn parse(args: &[String]) -> Result<Args> {
    let mut kernels = Vec::new();
    let mut keep = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--keep" => keep = true,
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--kernel" => {
                let k = it.next().context("--kernel needs a value")?;
                let known = k == "all" || k == "host" || KERNELS.iter().any(|x| x.name == k);
                if !known {
                    bail!("unknown kernel {k:?}: the matrix has 5.10, 6.1, 6.12, host and all");
                }
                kernels.push(k.clone());
            }
            other => bail!("unknown vm-test flag {other:?}\n\n{USAGE}"),
        }
    }
    if kernels.is_empty() || kernels.iter().any(|k| k == "all") {
        kernels = KERNELS.iter().map(|k| k.name.to_string()).collect();
        kernels.push("host".into());
    }
    Ok(Args { kernels, keep })
}

/// Runs `vm-test` with its flags; `Ok(false)` when some kernel regressed.
pub fn run(args: &[String], root: &Path) -> Result<bool> {
    let args = parse(args)?;
    let cache = cache_dir()?;
    let started = Instant::now();
    let bins = build(root)?;
    let work = cache.join("run");
    let logs = cache.join("logs");
    std::fs::create_dir_all(&work)?;
    std::fs::create_dir_all(&logs)?;
    let mut accel = Accel::detect();
    let mut verdicts = Vec::new();
    let guests: Vec<&Kernel> = KERNELS
        .iter()
        .filter(|k| args.kernels.iter().any(|a| a == k.name))
        .collect();
    if !guests.is_empty() {
        let common = image::common(&work, &bins, TEST_NAMES)?;
        for k in guests {
            let line = guest(k, &cache, &work, &common, &logs, &mut accel)?;
            println!("{line}");
            verdicts.push(line);
        }
    }
    if args.kernels.iter().any(|k| k == "host") {
        let line = host(&bins, &logs)?;
        println!("{line}");
        verdicts.push(line);
    }
    if !args.keep {
        let _ = std::fs::remove_dir_all(&work);
    }
    let failed = verdicts.iter().filter(|v| !passed(v)).count();
    println!(
        "vm-test: {} of {} kernels as expected in {} s (console logs in {})",
        verdicts.len() - failed,
        verdicts.len(),
        started.elapsed().as_secs(),
        logs.display()
    );
    Ok(failed == 0)
}

/// Whether a `VM-VERDICT <kernel> <word> ...` line says PASS.
fn passed(line: &str) -> bool {
    line.split_whitespace().nth(2) == Some("PASS")
}

fn cache_dir() -> Result<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join(".cache"),
    };
    Ok(base.join("flightrec-vm"))
}

/// Boots one kernel and returns its verdict line.
fn guest(
    k: &Kernel,
    cache: &Path,
    work: &Path,
    common: &Path,
    logs: &Path,
    accel: &mut Accel,
) -> Result<String> {
    let unpacked = kernel::fetch(k, cache)
        .with_context(|| format!("fetching kernel {} from {}", k.name, k.suite))?;
    let initrd = image::initramfs(work, common, k.name, &unpacked)?;
    let disk = image::disk(work, k.name)?;
    let boot = Boot {
        vmlinuz: &unpacked.vmlinuz,
        initrd: &initrd,
        disk: &disk,
        cmdline: format!(
            "flightrec.kernel={} flightrec.expect={}",
            k.name,
            k.expect.word()
        ),
        log: logs.join(format!("{}.log", k.name)),
        timeout: GUEST_TIMEOUT,
    };
    let started = Instant::now();
    let mut outcome = boot.run(*accel)?;
    if matches!(outcome, Outcome::KvmFailed) {
        eprintln!("vm-test: KVM cannot run the guest here; using TCG from now on");
        *accel = Accel::Tcg;
        outcome = boot.run(*accel)?;
    }
    let tail = format!(
        "[{}, {}, {} s]",
        unpacked.package,
        match accel {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        },
        started.elapsed().as_secs()
    );
    let why = match outcome {
        Outcome::Verdict(v) => return Ok(check_verdict(k, &v, &tail, &boot.log)),
        Outcome::NoVerdict(why) => why,
        Outcome::KvmFailed => "qemu could not start the guest".into(),
    };
    Ok(format!(
        "VM-VERDICT {} FAIL {why}; console in {} {tail}",
        k.name,
        boot.log.display()
    ))
}

/// The host's verdict line for the guest's `<kernel> PASS|FAIL <details>`.
fn check_verdict(k: &Kernel, verdict: &str, tail: &str, log: &Path) -> String {
    let mut words = verdict.splitn(3, ' ');
    let (name, word, details) = (
        words.next().unwrap_or(""),
        words.next().unwrap_or(""),
        words.next().unwrap_or(""),
    );
    if name != k.name {
        return format!(
            "VM-VERDICT {} FAIL the guest answered for {name:?} {tail}",
            k.name
        );
    }
    let expected = match k.expect {
        Expect::Pass => "all checks pass",
        Expect::Refuse => "the one-line refusal",
    };
    match word {
        "PASS" => format!("VM-VERDICT {} PASS {details} {tail}", k.name),
        _ => format!(
            "VM-VERDICT {} FAIL {details} (expected {expected}; console in {}) {tail}",
            k.name,
            log.display()
        ),
    }
}

/// Runs the same checks on the host kernel.
fn host(bins: &Binaries, logs: &Path) -> Result<String> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let log_path = logs.join("host.log");
    let log = std::fs::File::create(&log_path)?;
    let started = Instant::now();
    let status = Command::new("sh")
        .arg("-c")
        .arg(image::CHECKS)
        .env("EXPECT", "pass")
        .env("FLIGHTREC", &bins.flightrec)
        .env("TESTS", &bins.tests)
        .env("TEST_NAMES", TEST_NAMES.join(" "))
        .env("WORKLOAD", &bins.workload)
        .env("WORK", bins.tmpdir.join("flightrec-vm-host"))
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .context("running the checks on the host")?;
    let text = std::fs::read_to_string(&log_path)?;
    let last = text.lines().last().unwrap_or("").to_string();
    let tail = format!("[{}, {} s]", release.trim(), started.elapsed().as_secs());
    Ok(if status.success() && last.starts_with("PASS ") {
        format!("VM-VERDICT host {last} {tail}")
    } else {
        let why = last.strip_prefix("FAIL ").unwrap_or(&last);
        format!(
            "VM-VERDICT host FAIL {why}; log in {} {tail}",
            log_path.display()
        )
    })
}

/// Builds the release `flightrec` and the privileged test executable with its workload, and
/// finds them in cargo's JSON messages.
fn build(root: &Path) -> Result<Binaries> {
    let flightrec = artifacts(
        root,
        &[
            "build",
            "--release",
            "--package",
            "flightrec",
            "--bin",
            "flightrec",
        ],
    )?
    .into_iter()
    .find(|(name, _)| name == "flightrec")
    .context("cargo built no flightrec binary")?
    .1;
    let test_artifacts = artifacts(
        root,
        &[
            "test",
            "--package",
            "flightrec-tests",
            "--test",
            "privileged",
            "--no-run",
        ],
    )?;
    let find = |want: &str| {
        test_artifacts
            .iter()
            .find(|(name, _)| name == want)
            .map(|(_, p)| p.clone())
            .with_context(|| format!("cargo built no {want} executable"))
    };
    let tests = find("privileged")?;
    let workload = find("workload")?;
    // CARGO_TARGET_TMPDIR is <target dir>/tmp; the workload is <target dir>/<profile>/workload.
    let target = workload
        .parent()
        .and_then(Path::parent)
        .context("the workload's path has no target directory")?;
    Ok(Binaries {
        flightrec,
        tests,
        workload: workload.clone(),
        tmpdir: target.join("tmp"),
    })
}

/// Runs cargo with `args` and returns (target name, executable) of every artifact built.
fn artifacts(root: &Path, args: &[&str]) -> Result<Vec<(String, PathBuf)>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    // `cargo run` gave this process the xtask package's variables; build scripts that watch
    // them (ring's CARGO_PKG_NAME...) would rebuild what `cargo test` already built.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let per_package = [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
        ]
        .iter()
        .any(|p| key.starts_with(p));
        if per_package || key == "CARGO_PRIMARY_PACKAGE" {
            cmd.env_remove(key.as_ref());
        }
    }
    let out = cmd
        .args(args)
        .arg("--message-format=json-render-diagnostics")
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo")?;
    if !out.status.success() {
        bail!("cargo {} failed", args.join(" "));
    }
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        if let (Some(name), Some(exe)) =
            (msg["target"]["name"].as_str(), msg["executable"].as_str())
        {
            found.push((name.to_string(), PathBuf::from(exe)));
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verdict_passes_only_for_its_own_kernel_saying_pass() {
        let k = &KERNELS[0];
        let log = Path::new("/log");
        let ok = check_verdict(k, "5.10 PASS refused in one line, exit 2", "[t]", log);
        assert_eq!(ok, "VM-VERDICT 5.10 PASS refused in one line, exit 2 [t]");
        assert!(passed(&ok));
        let bad = check_verdict(k, "5.10 FAIL record exited 0, not 2", "[t]", log);
        assert!(!passed(&bad));
        assert!(bad.contains("expected the one-line refusal"), "{bad}");
        assert!(!passed(&check_verdict(k, "6.1 PASS all", "[t]", log)));
    }

    #[test]
    fn kernel_flags_select_the_matrix() {
        let all = parse(&[]).unwrap();
        assert_eq!(all.kernels, ["5.10", "6.1", "6.12", "host"]);
        let one = parse(&["--kernel".into(), "6.1".into(), "--keep".into()]).unwrap();
        assert_eq!((one.kernels, one.keep), (vec!["6.1".to_string()], true));
        assert!(parse(&["--kernel".into(), "4.19".into()]).is_err());
    }

    #[test]
    fn the_refused_kernel_is_the_one_without_atomic_fetch() {
        // The guest's refusal check names Linux 5.12; every kernel below it must be refused.
        for k in KERNELS {
            let (major, minor) = k.name.split_once('.').unwrap();
            let old = (major.parse::<u32>().unwrap(), minor.parse::<u32>().unwrap()) < (5, 12);
            assert_eq!(k.expect == Expect::Refuse, old, "{}", k.name);
        }
    }
}
