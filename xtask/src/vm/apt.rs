//! Debian kernel packages fetched with apt into a private state directory per suite, so the
//! machine's own sources, lists and package database are never touched.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The archive and the keyring apt checks it with.
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// The Debian mirror this machine already uses (first `URIs:` or `deb` line naming a
/// `/debian` archive), so the matrix downloads from where apt here already can.
pub fn mirror() -> String {
    let mut texts = Vec::new();
    if let Ok(t) = std::fs::read_to_string("/etc/apt/sources.list") {
        texts.push(t);
    }
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        for entry in dir.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".sources") || name.ends_with(".list") {
                texts.extend(std::fs::read_to_string(entry.path()));
            }
        }
    }
    texts
        .iter()
        .flat_map(|t| t.lines())
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| l.split_whitespace())
        .find(|w| w.starts_with("http") && w.trim_end_matches('/').ends_with("/debian"))
        .map(|w| w.trim_end_matches('/').to_string())
        .unwrap_or_else(|| DEFAULT_MIRROR.to_string())
}

/// apt with its state, cache and sources under `dir`: one suite, nothing of the machine's.
pub struct PrivateApt {
    dir: PathBuf,
}

impl PrivateApt {
    /// Creates (or reuses) the directories and writes the one source line for `suite`.
    pub fn new(dir: PathBuf, mirror: &str, suite: &str) -> Result<PrivateApt> {
        for sub in ["state/lists/partial", "cache/archives/partial", "etc/parts"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        let status = dir.join("state/status");
        if !status.exists() {
            std::fs::write(&status, "")?;
        }
        std::fs::write(
            dir.join("etc/sources.list"),
            format!("deb [signed-by={KEYRING}] {mirror} {suite} main\n"),
        )?;
        Ok(PrivateApt { dir })
    }

    fn command(&self, tool: &str) -> Command {
        let d = |sub: &str| self.dir.join(sub).display().to_string();
        let mut cmd = Command::new(tool);
        for (key, value) in [
            ("Dir::State", d("state")),
            ("Dir::State::status", d("state/status")),
            ("Dir::Cache", d("cache")),
            ("Dir::Etc::SourceList", d("etc/sources.list")),
            ("Dir::Etc::SourceParts", d("etc/parts")),
            ("Dir::Etc::Parts", d("etc/parts")),
            ("Dir::Etc::PreferencesParts", d("etc/parts")),
            ("APT::Sandbox::User", "root".into()),
        ] {
            cmd.arg("-o").arg(format!("{key}={value}"));
        }
        cmd
    }

    fn run(&self, mut cmd: Command, what: &str) -> Result<String> {
        let out = cmd.output().with_context(|| format!("running {what}"))?;
        if !out.status.success() {
            bail!(
                "{what} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `apt-get update` of the private lists.
    pub fn update(&self) -> Result<()> {
        let mut cmd = self.command("apt-get");
        cmd.args(["-qq", "update"]);
        self.run(cmd, "apt-get update")?;
        Ok(())
    }

    /// The versioned kernel image package a metapackage such as `linux-image-cloud-amd64`
    /// depends on (`linux-image-6.1.0-41-cloud-amd64`).
    pub fn resolve_image(&self, meta: &str) -> Result<String> {
        let mut cmd = self.command("apt-cache");
        cmd.args(["depends", meta]);
        let out = self.run(cmd, &format!("apt-cache depends {meta}"))?;
        out.lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .map(str::trim)
            .find(|p| p.starts_with("linux-image-") && *p != meta)
            .map(str::to_string)
            .with_context(|| format!("{meta} depends on no versioned linux-image package"))
    }

    /// Downloads `package` into `dest` and returns the `.deb`'s path.
    pub fn download(&self, package: &str, dest: &Path) -> Result<PathBuf> {
        std::fs::create_dir_all(dest)?;
        let mut cmd = self.command("apt-get");
        cmd.args(["-qq", "download", package]).current_dir(dest);
        self.run(cmd, &format!("apt-get download {package}"))?;
        let prefix = format!("{package}_");
        std::fs::read_dir(dest)?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                let name = p.file_name().unwrap_or_default().to_string_lossy();
                name.starts_with(&prefix) && name.ends_with(".deb")
            })
            .with_context(|| format!("apt-get download {package} left no .deb"))
    }
}
