//! The kernels of the matrix: which Debian package each comes from, what the recorder must do
//! on it, and the cached `vmlinuz` plus the modules a virtio disk needs.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::apt::{self, PrivateApt};

/// What the recorder must do on a kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Every check passes.
    Pass,
    /// `flightrec record` refuses at start with the one-line missing-feature message, exit 2.
    Refuse,
}

impl Expect {
    /// The word the guest's check script takes.
    pub fn word(self) -> &'static str {
        match self {
            Expect::Pass => "pass",
            Expect::Refuse => "refuse",
        }
    }
}

/// One kernel of the matrix.
pub struct Kernel {
    /// The name `--kernel` takes and verdict lines carry.
    pub name: &'static str,
    /// The Debian suite whose `linux-image-cloud-amd64` is this kernel.
    pub suite: &'static str,
    /// What the recorder must do there.
    pub expect: Expect,
}

/// The matrix. Adding a kernel is adding a line (docs/kernels.md).
pub const KERNELS: &[Kernel] = &[
    // The verifier lacks BPF_ATOMIC with BPF_FETCH (Linux 5.12): refused in one line.
    Kernel {
        name: "5.10",
        suite: "bullseye",
        expect: Expect::Refuse,
    },
    Kernel {
        name: "6.1",
        suite: "bookworm",
        expect: Expect::Pass,
    },
    Kernel {
        name: "6.12",
        suite: "bookworm-backports",
        expect: Expect::Pass,
    },
];

/// The metapackage each suite's small cloud kernel is reached through.
const META: &str = "linux-image-cloud-amd64";

/// Modules the guest loads (with their dependencies) when they are not built in.
pub const WANTED_MODULES: &[&str] = &["virtio_pci", "virtio_blk"];

/// A kernel unpacked in the cache: its image and the modules to load, in load order.
pub struct Unpacked {
    /// The Debian package it came from (`linux-image-6.1.0-41-cloud-amd64`).
    pub package: String,
    /// `vmlinuz`.
    pub vmlinuz: PathBuf,
    /// Uncompressed `.ko` files, dependencies first.
    pub modules: Vec<PathBuf>,
}

/// Downloads and unpacks `kernel` into `cache` unless an earlier run already did.
pub fn fetch(kernel: &Kernel, cache: &Path) -> Result<Unpacked> {
    let dir = cache.join("kernels").join(kernel.name);
    let marker = dir.join("package");
    if let Ok(package) = std::fs::read_to_string(&marker) {
        return read_unpacked(&dir, package.trim());
    }
    eprintln!(
        "vm-test: downloading {META} from {} for {}",
        kernel.suite, kernel.name
    );
    let apt = PrivateApt::new(
        cache.join(format!("apt-{}", kernel.suite)),
        &apt::mirror(),
        kernel.suite,
    )?;
    apt.update()?;
    let package = apt.resolve_image(META)?;
    let debs = cache.join("debs");
    let deb = apt.download(&package, &debs)?;
    let _ = std::fs::remove_dir_all(&dir);
    let root = dir.join("root");
    std::fs::create_dir_all(&root)?;
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&root)
        .status()
        .context("running dpkg-deb")?;
    if !status.success() {
        bail!("dpkg-deb -x {} failed", deb.display());
    }
    extract(&root, &dir)?;
    std::fs::remove_dir_all(&root)?;
    std::fs::write(&marker, format!("{package}\n"))?;
    read_unpacked(&dir, &package)
}

fn read_unpacked(dir: &Path, package: &str) -> Result<Unpacked> {
    let order = std::fs::read_to_string(dir.join("modules.order"))
        .with_context(|| format!("reading {}/modules.order", dir.display()))?;
    Ok(Unpacked {
        package: package.to_string(),
        vmlinuz: dir.join("vmlinuz"),
        modules: order.lines().map(|m| dir.join("modules").join(m)).collect(),
    })
}

/// Copies `vmlinuz` and the wanted modules (decompressed, in load order) out of an unpacked
/// package.
fn extract(root: &Path, dir: &Path) -> Result<()> {
    let boot = root.join("boot");
    let image = std::fs::read_dir(&boot)
        .with_context(|| format!("reading {}", boot.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .starts_with("vmlinuz-")
        })
        .context("the package has no /boot/vmlinuz-*")?;
    std::fs::copy(&image, dir.join("vmlinuz"))?;
    let modroot = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|m| root.join(m))
        .find(|p| p.is_dir())
        .context("the package has no lib/modules")?;
    let release = std::fs::read_dir(&modroot)?
        .flatten()
        .next()
        .context("lib/modules is empty")?
        .path();
    // Debian generates modules.dep when the package is installed, so the dependencies come
    // from each module's own `.modinfo`.
    let mut files = HashMap::new();
    index_modules(&release, &mut files)?;
    let out = dir.join("modules");
    std::fs::create_dir_all(&out)?;
    let (mut seen, mut names) = (HashSet::new(), String::new());
    for w in WANTED_MODULES {
        add_module(w, &files, &out, &mut seen, &mut names)?;
    }
    std::fs::write(dir.join("modules.order"), names)?;
    Ok(())
}

/// Every module file under `dir`, by module name.
fn index_modules(dir: &Path, files: &mut HashMap<String, PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir)?.flatten() {
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            index_modules(&path, files)?;
        } else {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if name.contains(".ko") {
                files.insert(module_name(&name), path.clone());
            }
        }
    }
    Ok(())
}

/// Writes `name` (decompressed) to `out` after its dependencies, appending each to the load
/// order. A module with no file is built in.
fn add_module(
    name: &str,
    files: &HashMap<String, PathBuf>,
    out: &Path,
    seen: &mut HashSet<String>,
    order: &mut String,
) -> Result<()> {
    let Some(src) = files.get(name) else {
        return Ok(());
    };
    if !seen.insert(name.to_string()) {
        return Ok(());
    }
    let bytes = std::fs::read(src).with_context(|| format!("reading {}", src.display()))?;
    let ko = decompress(&src.to_string_lossy(), bytes)?;
    for dep in depends(&ko) {
        add_module(&dep, files, out, seen, order)?;
    }
    let file = format!("{name}.ko");
    std::fs::write(out.join(&file), ko)?;
    order.push_str(&file);
    order.push('\n');
    Ok(())
}

/// The `depends=` list of a module's `.modinfo` (NUL-separated `key=value` strings).
fn depends(ko: &[u8]) -> Vec<String> {
    ko.split(|&b| b == 0)
        .filter_map(|s| s.strip_prefix(b"depends="))
        .flat_map(|list| {
            String::from_utf8_lossy(list)
                .split(',')
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|d| !d.is_empty())
        .map(|d| d.replace('-', "_"))
        .collect()
}

/// `kernel/drivers/block/virtio_blk.ko.xz` → `virtio_blk`.
fn module_name(rel: &str) -> String {
    let file = rel.rsplit('/').next().unwrap_or(rel);
    file.split(".ko").next().unwrap_or(file).replace('-', "_")
}

fn decompress(rel: &str, bytes: Vec<u8>) -> Result<Vec<u8>> {
    let tool = if rel.ends_with(".ko.xz") {
        "xz"
    } else if rel.ends_with(".ko.zst") {
        "zstd"
    } else if rel.ends_with(".ko.gz") {
        "gzip"
    } else {
        return Ok(bytes);
    };
    use std::io::Write;
    let mut child = Command::new(tool)
        .args(["-dc"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {tool}"))?;
    let mut stdin = child.stdin.take().expect("piped");
    let writer = std::thread::spawn(move || stdin.write_all(&bytes));
    let out = child.wait_with_output()?;
    writer.join().expect("writer thread")?;
    if !out.status.success() {
        bail!("{tool} -dc {rel} failed");
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_dependencies_come_from_modinfo() {
        let ko = b"\x7fELF..\0license=GPL\0depends=virtio_pci_modern_dev,virtio-pci-legacy-dev\0\
                   intree=Y\0name=virtio_pci\0";
        assert_eq!(
            depends(ko),
            ["virtio_pci_modern_dev", "virtio_pci_legacy_dev"]
        );
        assert!(depends(b"\0depends=\0name=virtio_blk\0").is_empty());
        assert_eq!(
            module_name("kernel/drivers/block/virtio_blk.ko.xz"),
            "virtio_blk"
        );
        assert_eq!(module_name("cuse.ko"), "cuse");
    }
}
