//! What the running kernel offers: BTF-resolved structure offsets handed to the eBPF programs,
//! feature probes with messages that name what is missing, and bpffs mounting.

use std::path::Path;

use btf_rs::{Btf, Type};
use schemas::KernelOffsets;

use crate::error::SetupError;

/// Where the kernel publishes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Checks that the kernel can run the recorder and mounts bpffs at `/sys/fs/bpf` if needed.
pub fn probe_features() -> Result<(), SetupError> {
    if !Path::new(VMLINUX_BTF).exists() {
        return Err(SetupError::MissingFeature(format!(
            "BTF type information ({VMLINUX_BTF} is absent; the kernel needs CONFIG_DEBUG_INFO_BTF=y)"
        )));
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(SetupError::MissingFeature(
            "root privileges (CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN are needed to load and pin \
             the eBPF programs)"
                .into(),
        ));
    }
    probe_atomic_fetch()?;
    ensure_bpffs(Path::new("/sys/fs/bpf"))
}

/// The oldest kernel whose verifier accepts `BPF_ATOMIC` with `BPF_FETCH` (fetch-add,
/// compare-and-exchange): Linux 5.12, commit 5ca419f2864a ("bpf: Add BPF_FETCH field").
pub const ATOMIC_FETCH_SINCE: &str = "5.12";

/// Refuses kernels whose verifier lacks the atomic fetch-add and compare-and-exchange the
/// programs reserve ring slots and take the freeze lock with (Linux 5.10 and 5.11 reject them
/// with a verifier dump). A fallback without them would need a per-CPU slot reservation that
/// stays correct when an irq, softirq or NMI program nests inside another on the same CPU, which
/// a plain add cannot give: refusing in one sentence is the honest answer on those kernels.
///
/// The probe loads a six-instruction socket filter doing both on a stack slot. Only `EINVAL`
/// (the verifier's "reserved fields" refusal) counts as missing: any other failure is left to
/// the real load, which reports it with its verifier log.
pub fn probe_atomic_fetch() -> Result<(), SetupError> {
    if atomic_fetch_supported() == Some(false) {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        return Err(atomic_fetch_missing(release.trim()));
    }
    Ok(())
}

/// The refusal on a kernel (`release`) whose verifier lacks the atomic fetch instructions.
fn atomic_fetch_missing(release: &str) -> SetupError {
    SetupError::MissingFeature(format!(
        "the BPF atomic fetch-add and compare-and-exchange instructions (BPF_ATOMIC with \
         BPF_FETCH), which Linux {ATOMIC_FETCH_SINCE} added; this kernel is {release}"
    ))
}

/// Whether the verifier accepts `BPF_ATOMIC | BPF_FETCH`: `None` when the probe itself could
/// not be run (no privileges, seccomp...).
fn atomic_fetch_supported() -> Option<bool> {
    // One eBPF instruction: code, dst and src registers (4 bits each), offset, immediate.
    const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
        (code as u64)
            | ((dst as u64 | ((src as u64) << 4)) << 8)
            | ((off as u16 as u64) << 16)
            | ((imm as u32 as u64) << 32)
    }
    const MOV64_IMM: u8 = 0x07 | 0xb0; // BPF_ALU64 | BPF_MOV | BPF_K
    const STX_DW: u8 = 0x03 | 0x60 | 0x18; // BPF_STX | BPF_MEM | BPF_DW
    const ATOMIC_DW: u8 = 0x03 | 0xc0 | 0x18; // BPF_STX | BPF_ATOMIC | BPF_DW
    const FETCH_ADD: i32 = 0x01; // BPF_ADD | BPF_FETCH
    const CMPXCHG: i32 = 0xf1; // BPF_CMPXCHG (includes BPF_FETCH)
    let prog: [u64; 7] = [
        insn(MOV64_IMM, 1, 0, 0, 0),           // r1 = 0
        insn(STX_DW, 10, 1, -8, 0),            // *(u64 *)(r10 - 8) = r1
        insn(MOV64_IMM, 1, 0, 0, 1),           // r1 = 1
        insn(ATOMIC_DW, 10, 1, -8, FETCH_ADD), // r1 = atomic_fetch_add(r10 - 8, r1)
        insn(MOV64_IMM, 0, 0, 0, 0),           // r0 = 0
        insn(ATOMIC_DW, 10, 1, -8, CMPXCHG),   // r0 = cmpxchg(r10 - 8, r0, r1)
        0x95,                                  // exit
    ];
    // The head of `union bpf_attr` for BPF_PROG_LOAD; the kernel requires the rest zero.
    #[repr(C)]
    struct ProgLoad {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        rest: [u64; 14],
    }
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
    let attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_SOCKET_FILTER,
        insn_cnt: prog.len() as u32,
        insns: prog.as_ptr() as u64,
        license: c"GPL".as_ptr() as u64,
        rest: [0; 14],
    };
    // SAFETY: bpf(2) reads `attr` (valid for its size) and the instructions it points to.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const ProgLoad,
            size_of::<ProgLoad>(),
        )
    };
    if fd >= 0 {
        // SAFETY: the fd was just returned to us and nothing else owns it.
        unsafe { libc::close(fd as libc::c_int) };
        return Some(true);
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EINVAL) => Some(false),
        _ => None,
    }
}

/// Mounts bpffs at `dir` unless one is already there.
pub fn ensure_bpffs(dir: &Path) -> Result<(), SetupError> {
    const BPF_FS_MAGIC: i64 = 0xcafe4a11;
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).expect("no NUL in path");
    // SAFETY: statfs on a valid C string with an out-struct of the right type.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0 && st.f_type as i64 == BPF_FS_MAGIC {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|source| SetupError::Io {
        what: format!("creating {}", dir.display()),
        source,
    })?;
    let fstype = c"bpf";
    // SAFETY: valid C strings; mount(2) validates the rest.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            c.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(SetupError::MissingFeature(format!(
            "bpffs (mounting it at {} failed: {}; the kernel needs CONFIG_BPF_SYSCALL=y)",
            dir.display(),
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// The kernel's BTF, parsed once.
pub fn vmlinux_btf() -> Result<Btf, SetupError> {
    Btf::from_file(VMLINUX_BTF).map_err(|e| SetupError::Btf {
        path: VMLINUX_BTF.into(),
        source: e.into(),
    })
}

/// Byte offset of `path` (dot-separated, e.g. `thread_info.cpu`) inside struct `name`, looking
/// through anonymous unions and structs as C does.
pub fn member_offset(btf: &Btf, name: &str, path: &str) -> Option<u32> {
    let s = named_struct(btf, name)?;
    let mut bits = 0;
    let mut cur = s;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let (off, ty) = find_member(btf, &cur, part)?;
        bits += off;
        if parts.peek().is_some() {
            cur = as_struct(btf, ty)?;
        }
    }
    (bits % 8 == 0).then_some(bits / 8)
}

fn named_struct(btf: &Btf, name: &str) -> Option<btf_rs::Struct> {
    btf.resolve_types_by_name(name)
        .ok()?
        .into_iter()
        .find_map(|t| match t {
            Type::Struct(s) if !s.members.is_empty() => Some(s),
            _ => None,
        })
}

/// Follows typedefs and qualifiers to a struct or union.
fn as_struct(btf: &Btf, mut ty: Type) -> Option<btf_rs::Struct> {
    for _ in 0..16 {
        ty = match ty {
            Type::Struct(s) | Type::Union(s) => return Some(s),
            Type::Typedef(ref t) => btf.resolve_chained_type(t).ok()?,
            Type::Volatile(ref t) | Type::Const(ref t) | Type::Restrict(ref t) => {
                btf.resolve_chained_type(t).ok()?
            }
            _ => return None,
        };
    }
    None
}

/// Finds `name` among the members of `s` (recursing into anonymous members); returns its bit
/// offset and type.
fn find_member(btf: &Btf, s: &btf_rs::Struct, name: &str) -> Option<(u32, Type)> {
    for m in &s.members {
        let mname = btf.resolve_name(m).unwrap_or_default();
        let ty = btf.resolve_chained_type(m).ok()?;
        if mname == name {
            return Some((m.bit_offset(), ty));
        }
        if mname.is_empty()
            && let Some(inner) = as_struct(btf, ty)
            && let Some((off, t)) = find_member(btf, &inner, name)
        {
            return Some((m.bit_offset() + off, t));
        }
    }
    None
}

/// Value of enumerator `name` in any enum of the kernel.
pub fn enum_value(btf: &Btf, enum_name: &str, name: &str) -> Option<u64> {
    for t in btf.resolve_types_by_name(enum_name).ok()? {
        if let Type::Enum(e) = t {
            for m in &e.members {
                if btf.resolve_name(m).ok()? == name {
                    return Some(m.val() as u64);
                }
            }
        }
    }
    None
}

/// Resolves every offset the programs use. Required fields missing from BTF are an error that
/// names them; optional ones (block, irq names) are left absent and their events carry zeros.
pub fn resolve_offsets(btf: &Btf) -> Result<KernelOffsets, SetupError> {
    let need = |s: &str, p: &str| {
        member_offset(btf, s, p).ok_or_else(|| SetupError::MissingBtf(format!("{s}.{p}")))
    };
    let opt = |s: &str, p: &str| member_offset(btf, s, p).unwrap_or(KernelOffsets::ABSENT);

    let task_cpu = match member_offset(btf, "task_struct", "thread_info.cpu") {
        Some(o) => o,
        None => need("task_struct", "cpu")?,
    };
    // The six syscall argument registers of x86-64, in ABI order.
    let arg_regs = ["di", "si", "dx", "r10", "r8", "r9"];
    let mut args = [0u32; 6];
    for (i, r) in arg_regs.iter().enumerate() {
        args[i] = need("pt_regs", r)?;
    }
    let base = *args.iter().min().expect("six registers");
    let mut rel = [0u32; 6];
    for i in 0..6 {
        rel[i] = args[i] - base;
        if rel[i] >= 64 || rel[i] % 8 != 0 {
            return Err(SetupError::MissingBtf(format!(
                "pt_regs argument registers within one 64-byte block (register {} is at +{})",
                arg_regs[i], rel[i]
            )));
        }
    }
    // REQ_OP_BITS is a #define; the first flag bit after the op bits carries its value.
    let op_bits = enum_value(btf, "req_flag_bits", "__REQ_FAILFAST_DEV").unwrap_or(8);
    let flag = |n: &str| {
        enum_value(btf, "req_flag_bits", n)
            .map(|b| 1u64 << b)
            .unwrap_or(0)
    };
    Ok(KernelOffsets {
        task_pid: need("task_struct", "pid")?,
        task_tgid: need("task_struct", "tgid")?,
        task_comm: need("task_struct", "comm")?,
        task_prio: need("task_struct", "prio")?,
        task_cpu,
        regs_orig_ax: need("pt_regs", "orig_ax")?,
        regs_args_base: base,
        regs_args_rel: rel,
        irqaction_name: opt("irqaction", "name"),
        binprm_filename: opt("linux_binprm", "filename"),
        rq_q: opt("request", "q"),
        rq_cmd_flags: opt("request", "cmd_flags"),
        rq_sector: opt("request", "__sector"),
        rq_data_len: opt("request", "__data_len"),
        queue_disk: opt("request_queue", "disk"),
        disk_major: opt("gendisk", "major"),
        disk_first_minor: opt("gendisk", "first_minor"),
        req_op_mask: ((1u64 << op_bits) - 1) as u32,
        req_flag_masks: [
            flag("__REQ_PREFLUSH"),
            flag("__REQ_FUA"),
            flag("__REQ_RAHEAD"),
            flag("__REQ_SYNC"),
            flag("__REQ_META"),
        ],
    })
}

/// Offsets of the chain from a task to its cgroup v2 id (`task->cgroups->dfl_cgrp->kn->id`),
/// which the run-queue histograms and run-queue rules on a cgroup read for the task that gets
/// the CPU (it is not current yet). Fields the kernel lacks are left absent.
pub fn cgroup_offsets(btf: &Btf) -> schemas::hist::CgroupOffsets {
    let opt = |s: &str, p: &str| member_offset(btf, s, p).unwrap_or(u32::MAX);
    schemas::hist::CgroupOffsets {
        task_cgroups: opt("task_struct", "cgroups"),
        css_set_dfl_cgrp: opt("css_set", "dfl_cgrp"),
        cgroup_kn: opt("cgroup", "kn"),
        kernfs_node_id: opt("kernfs_node", "id"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_atomic_fetch_refusal_is_one_sentence_naming_feature_and_kernels() {
        // `cargo xtask vm-test` checks this exact line on Debian's 5.10 kernel.
        let msg = atomic_fetch_missing("5.10.0-32-cloud-amd64").to_string();
        assert_eq!(
            msg,
            "kernel feature missing: the BPF atomic fetch-add and compare-and-exchange \
             instructions (BPF_ATOMIC with BPF_FETCH), which Linux 5.12 added; this kernel is \
             5.10.0-32-cloud-amd64"
        );
        assert!(!msg.contains('\n'));
    }

    #[test]
    fn resolves_this_kernels_offsets() {
        if !Path::new(VMLINUX_BTF).exists() {
            println!("skipped: no {VMLINUX_BTF} on this machine");
            return;
        }
        let btf = vmlinux_btf().unwrap();
        let o = resolve_offsets(&btf).unwrap();
        // x86-64 pt_regs is fixed by the entry code: di is the 15th word, orig_ax the 16th.
        assert_eq!(o.regs_orig_ax, 120);
        assert_eq!(o.regs_args_base + o.regs_args_rel[0], 112);
        assert_eq!(o.regs_args_base + o.regs_args_rel[3], 56);
        // pid and tgid are adjacent ints; comm is a 16-byte array somewhere after them.
        assert_eq!(o.task_tgid, o.task_pid + 4);
        assert!(o.task_comm > o.task_tgid);
        assert_ne!(o.rq_sector, KernelOffsets::ABSENT);
        assert_eq!(o.req_op_mask, 0xff);
        assert!(o.req_flag_masks.iter().all(|m| m.count_ones() == 1));
        let cg = cgroup_offsets(&btf);
        assert!(cg.complete(), "{cg:?}");
    }
}

/// Number of arguments of each syscall (x86-64 numbers below 512), so entry records keep only
/// the arguments a syscall has: `schemas::compact::SYSCALL_ARGC`, completed by the running
/// kernel's syscall trace formats (`events/syscalls/sys_enter_*/format`) when tracefs is
/// mounted (a newer kernel's syscalls). Unknown numbers keep all six.
pub fn syscall_arg_counts() -> [u8; 512] {
    let mut argc = schemas::compact::SYSCALL_ARGC;
    for root in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        let dir = Path::new(root).join("events/syscalls");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut found = false;
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(sys) = name.to_str().and_then(|n| n.strip_prefix("sys_enter_")) else {
                continue;
            };
            let Some(id) = schemas::event::syscall_id(sys).filter(|&id| id < 512) else {
                continue;
            };
            if let Ok(text) = std::fs::read_to_string(e.path().join("format"))
                && let Some(n) = format_arg_count(&text)
            {
                argc[id as usize] = n;
                found = true;
            }
        }
        if found {
            break;
        }
    }
    argc
}

/// The number of syscall arguments a `sys_enter_*` format lists (fields after
/// `__syscall_nr`), at most six.
fn format_arg_count(format: &str) -> Option<u8> {
    let fields: Vec<&str> = format
        .lines()
        .filter_map(|l| l.trim().strip_prefix("field:"))
        .collect();
    let nr = fields.iter().position(|f| f.contains("__syscall_nr"))?;
    Some((fields.len() - nr - 1).min(6) as u8)
}

#[cfg(test)]
mod argc_tests {
    use super::*;

    #[test]
    fn format_arg_counts() {
        let openat = "name: sys_enter_openat\nID: 640\nformat:\n\
            \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
            \tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n\
            \tfield:int dfd;\toffset:16;\tsize:8;\tsigned:0;\n\
            \tfield:const char * filename;\toffset:24;\tsize:8;\tsigned:0;\n\
            \tfield:int flags;\toffset:32;\tsize:8;\tsigned:0;\n\
            \tfield:umode_t mode;\toffset:40;\tsize:8;\tsigned:0;\n\nprint fmt: \"\"\n";
        assert_eq!(format_arg_count(openat), Some(4));
        let getpid = "format:\n\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n";
        assert_eq!(format_arg_count(getpid), Some(0));
        assert_eq!(format_arg_count("garbage"), None);
    }
}
