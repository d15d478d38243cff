//! The guest's initramfs (busybox, our binaries with their shared libraries, the checks, the
//! kernel's virtio modules) and the ext4 disk the tests write to.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::kernel::Unpacked;

/// Debian's `busybox-static`: the guest's shell and tools.
const BUSYBOX: &str = "/bin/busybox";
const INIT: &str = include_str!("init.sh");
/// The checks, shared with the host run.
pub const CHECKS: &str = include_str!("checks.sh");

/// The host-built executables the guest runs.
pub struct Binaries {
    /// The release `flightrec`.
    pub flightrec: PathBuf,
    /// The privileged test executable.
    pub tests: PathBuf,
    /// The workload it runs, at the path compiled into the tests.
    pub workload: PathBuf,
    /// The tests' `CARGO_TARGET_TMPDIR`, compiled into them: the guest mounts its disk there.
    pub tmpdir: PathBuf,
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// Copies `src` to `root` + `dest` without its debug information (the test executables carry
/// hundreds of MiB of it), creating parents.
fn install_stripped(root: &Path, src: &Path, dest: &Path) -> Result<()> {
    let out = root.join(dest.strip_prefix("/").unwrap_or(dest));
    std::fs::create_dir_all(out.parent().expect("has a parent"))?;
    run(
        Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(&out)
            .arg(src),
        &format!("strip {}", src.display()),
    )
}

/// The shared libraries (and the dynamic loader) `exe` needs, from `ldd`.
fn shared_libs(exe: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(exe)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.trim(),
                None => l,
            };
            let path = path.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

/// gzip'd `newc` cpio of everything under `dir`, owned by root.
fn cpio(dir: &Path, out: &Path) -> Result<()> {
    let file = std::fs::File::create(out)?;
    run(
        Command::new("sh")
            .arg("-c")
            .arg("find . -mindepth 1 | cpio -o -H newc -R 0:0 --quiet | gzip -1")
            .current_dir(dir)
            .stdout(file),
        "cpio | gzip",
    )
}

/// Builds the part of the initramfs every kernel shares into `work/common.cpio.gz`.
pub fn common(work: &Path, bins: &Binaries, test_names: &[&str]) -> Result<PathBuf> {
    let root = work.join("common");
    let _ = std::fs::remove_dir_all(&root);
    for d in ["bin", "dev", "proc", "sys", "tmp", "run", "etc", "modules"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::copy(BUSYBOX, root.join("bin/busybox"))
        .with_context(|| format!("copying {BUSYBOX} (apt-get install busybox-static)"))?;
    install_stripped(&root, &bins.flightrec, Path::new("/bin/flightrec"))?;
    install_stripped(&root, &bins.tests, Path::new("/bin/privileged-tests"))?;
    install_stripped(&root, &bins.workload, &bins.workload)?;
    let mut libs = Vec::new();
    for exe in [&bins.flightrec, &bins.tests, &bins.workload] {
        libs.extend(shared_libs(exe)?);
    }
    libs.sort();
    libs.dedup();
    for lib in &libs {
        let dest = root.join(lib.strip_prefix("/").expect("absolute"));
        std::fs::create_dir_all(dest.parent().expect("has a parent"))?;
        // The real file, not the symlink ldd names.
        std::fs::copy(lib, &dest).with_context(|| format!("copying {}", lib.display()))?;
    }
    write_exec(&root.join("init"), INIT)?;
    write_exec(&root.join("checks.sh"), CHECKS)?;
    std::fs::write(
        root.join("etc/vm.env"),
        format!(
            "export FLIGHTREC=/bin/flightrec TESTS=/bin/privileged-tests WORKLOAD='{}' \
             TEST_NAMES='{}' DISK_MOUNT='{}'\n",
            bins.workload.display(),
            test_names.join(" "),
            bins.tmpdir.display()
        ),
    )?;
    let out = work.join("common.cpio.gz");
    cpio(&root, &out)?;
    std::fs::remove_dir_all(&root)?;
    Ok(out)
}

fn write_exec(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// The whole initramfs for one kernel: the common part followed by a second cpio with its
/// modules (the kernel unpacks concatenated archives in order).
pub fn initramfs(work: &Path, common: &Path, name: &str, kernel: &Unpacked) -> Result<PathBuf> {
    let root = work.join(format!("modules-{name}"));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("modules"))?;
    let mut order = String::new();
    for m in &kernel.modules {
        let file = m.file_name().expect("a file");
        std::fs::copy(m, root.join("modules").join(file))?;
        order.push_str(&file.to_string_lossy());
        order.push('\n');
    }
    std::fs::write(root.join("modules/order"), order)?;
    let part = work.join(format!("modules-{name}.cpio.gz"));
    cpio(&root, &part)?;
    std::fs::remove_dir_all(&root)?;
    let out = work.join(format!("initramfs-{name}.cpio.gz"));
    let mut bytes = std::fs::read(common)?;
    bytes.extend(std::fs::read(&part)?);
    std::fs::write(&out, bytes)?;
    std::fs::remove_file(&part)?;
    Ok(out)
}

/// A fresh sparse ext4 image for the guest's virtio disk.
pub fn disk(work: &Path, name: &str) -> Result<PathBuf> {
    let path = work.join(format!("disk-{name}.img"));
    let _ = std::fs::remove_file(&path);
    std::fs::File::create(&path)?.set_len(1 << 30)?;
    run(
        Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&path),
        "mkfs.ext4",
    )?;
    Ok(path)
}
