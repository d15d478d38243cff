//! Build tasks that need more than cargo: `cargo xtask build-ebpf [--check]` and
//! `cargo xtask vm-test` (the kernel matrix, in [`vm`]).
//!
//! `build-ebpf` compiles `recorder-ebpf` for `bpfel-unknown-none` with the pinned nightly and
//! `bpf-linker`, and copies the object to `recorder/ebpf/flightrec.bpf.o`, which is committed so
//! that building the recorder needs only stable Rust. `--check` fails when the committed object
//! differs from a fresh build (it is built reproducibly: paths are remapped).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

mod vm;

/// The nightly whose LLVM (22) matches the bpf-linker that Debian 12's llvm-22-dev can build.
const NIGHTLY: &str = "nightly-2026-05-19";
const TARGET: &str = "bpfel-unknown-none";
/// Where the committed object lives, relative to the workspace root.
pub const OBJECT: &str = "recorder/ebpf/flightrec.bpf.o";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("build-ebpf") => {
            let check = args.iter().any(|a| a == "--check");
            build_ebpf(check)
        }
        Some("vm-test") => match vm::run(&args[1..], &workspace_root()) {
            Ok(true) => Ok(()),
            Ok(false) => std::process::exit(1),
            // One sentence per layer, not anyhow's debug dump with a backtrace.
            Err(e) => {
                eprintln!("xtask vm-test: error: {e:#}");
                std::process::exit(2);
            }
        },
        _ => {
            eprintln!(
                "usage: cargo xtask build-ebpf [--check]\n       {}\n\n\
                 build-ebpf  rebuild {OBJECT} from recorder-ebpf/ with {NIGHTLY} and bpf-linker\n\
                 --check     fail if the committed object differs from the fresh build\n\n{}",
                vm::USAGE.lines().next().unwrap_or_default(),
                vm::USAGE.split_once("\n\n").map_or("", |(_, rest)| rest)
            );
            std::process::exit(2);
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf()
}

fn build_ebpf(check: bool) -> Result<()> {
    let root = workspace_root();
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let cargo_home = std::env::var("CARGO_HOME").unwrap_or_else(|_| format!("{home}/.cargo"));
    let rustup_home = std::env::var("RUSTUP_HOME").unwrap_or_else(|_| format!("{home}/.rustup"));
    let target_dir = root.join("target/ebpf");
    // Paths are remapped so the object is byte-identical wherever the tree is checked out.
    let flags = [
        "--cfg=bpf_target_arch=\"x86_64\"".to_string(),
        "-Cdebuginfo=2".into(),
        "-Clink-arg=--btf".into(),
        "-Ctarget-cpu=v3".into(),
        format!("--remap-path-prefix={}=/flightrec", root.display()),
        format!("--remap-path-prefix={cargo_home}=/cargo"),
        format!("--remap-path-prefix={rustup_home}=/rustup"),
    ]
    .join("\x1f");
    let status = Command::new("rustup")
        .args([
            "run",
            NIGHTLY,
            "cargo",
            "build",
            "--package",
            "recorder-ebpf",
            "--bins",
        ])
        .args(["--release", "--target", TARGET, "-Zbuild-std=core"])
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(&root)
        .env("CARGO_ENCODED_RUSTFLAGS", flags)
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTFLAGS")
        .status()
        .with_context(|| format!("running rustup (is the {NIGHTLY} toolchain installed?)"))?;
    if !status.success() {
        bail!(
            "building recorder-ebpf failed; it needs `rustup toolchain install {NIGHTLY} \
             --component rust-src` and bpf-linker (see README)"
        );
    }
    let built = target_dir.join(TARGET).join("release/flightrec-ebpf");
    let fresh = std::fs::read(&built).with_context(|| format!("reading {}", built.display()))?;
    let dest = root.join(OBJECT);
    if check {
        let committed = std::fs::read(&dest).unwrap_or_default();
        if committed != fresh {
            bail!(
                "{OBJECT} is stale: it differs from a fresh build of recorder-ebpf \
                 ({} vs {} bytes). Run `cargo xtask build-ebpf` and commit the result.",
                committed.len(),
                fresh.len()
            );
        }
        println!("{OBJECT} matches a fresh build ({} bytes)", fresh.len());
    } else {
        std::fs::create_dir_all(dest.parent().expect("has a parent"))?;
        std::fs::write(&dest, &fresh)?;
        println!("wrote {OBJECT} ({} bytes)", fresh.len());
    }
    Ok(())
}
