//! What a local user without root can reach on a recorder host: the daemon's capabilities, its
//! control socket, and the modes of what it writes.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Scene, TempUser, flightrec, mode, privileged};

/// The path `snapshot record` printed last.
fn written(out: &std::process::Output) -> PathBuf {
    assert!(out.status.success(), "{out:?}");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).lines().last().unwrap())
}

fn frs_in(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "frs"))
            })
            .count()
        })
        .unwrap_or(0)
}

/// Probe 5: the daemon kept every capability. Once attached it keeps only what the open-fd
/// statedump needs (`CAP_DAC_READ_SEARCH` and `CAP_SYS_PTRACE`, to read other users'
/// `/proc/PID/fd`), and a snapshot lists another user's process with its fds.
#[test]
fn probe5_capabilities_dropped_once_attached() {
    probe5_capabilities(true);
}

/// Probe 5 with `statedump.fds = false`: the daemon keeps no capability (on a `/proc` without
/// `hidepid`), and the statedump still lists another user's process, without fds.
#[test]
fn probe5_no_capability_kept_without_the_fd_statedump() {
    probe5_capabilities(false);
}

fn probe5_capabilities(fds: bool) {
    let test = if fds {
        "probe5_capabilities_dropped_once_attached"
    } else {
        "probe5_no_capability_kept_without_the_fd_statedump"
    };
    let Some(_p) = privileged(test) else {
        return;
    };
    let user = TempUser::new(if fds { "cap" } else { "capnofd" });
    let s = Scene::new(
        if fds { "caps" } else { "caps-nofd" },
        if fds {
            ""
        } else {
            "[statedump]\nfds = false\n"
        },
    );
    let d = s.start(|_| {});
    let hidepid = std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .any(|l| l.contains(" /proc proc ") && l.contains("hidepid=") && !l.contains("hidepid=0"));
    let kept = match (fds, hidepid) {
        // CAP_DAC_READ_SEARCH (2) and CAP_SYS_PTRACE (19).
        (true, _) => "0000000000080004",
        (false, true) => "0000000000080000",
        (false, false) => "0000000000000000",
    };
    // Kept capabilities are permitted, and effective only while a statedump runs.
    for key in ["CapEff", "CapPrm", "CapBnd", "CapAmb", "CapInh"] {
        let want = if key == "CapPrm" || key == "CapBnd" {
            kept
        } else {
            "0000000000000000"
        };
        assert_eq!(d.status_field(key), want, "{key}");
    }
    // Every thread, not only the first.
    for t in std::fs::read_dir(format!("/proc/{}/task", d.pid())).unwrap() {
        let tid: u32 = t.unwrap().file_name().to_str().unwrap().parse().unwrap();
        let st = std::fs::read_to_string(format!("/proc/{}/task/{tid}/status", d.pid())).unwrap();
        assert!(
            st.contains(&format!("CapPrm:\t{kept}")) && st.contains("CapEff:\t0000000000000000"),
            "thread {tid}: {st}"
        );
    }
    assert_eq!(d.status_field("NoNewPrivs"), "1");
    assert!(
        d.log().contains("capabilities dropped (kept: "),
        "{}",
        d.log()
    );

    let mut sleeper = user
        .run({
            let mut c = Command::new("sleep");
            c.arg("31.4159");
            c
        })
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    let path = written(&s.snapshot(None));
    let (manifest, events) = flightrec_reader::dump::open(&path).unwrap();
    let p = manifest
        .statedump
        .processes
        .iter()
        .find(|p| p.pid == sleeper.id())
        .expect("the other user's process in the statedump");
    assert_eq!(p.cmdline, "sleep 31.4159");
    // The other user's fds (its stdin, stdout, stderr at least) only with the fd statedump.
    assert_eq!(p.fds.len() >= 3, fds, "{:?}", p.fds);
    assert!(events.count() > 0);
    // The status and a second snapshot (an epoch flip each) still work.
    let st = flightrec()
        .arg("status")
        .arg("--socket")
        .arg(&s.socket)
        .output()
        .unwrap();
    assert!(st.status.success(), "{st:?}");
    written(&s.snapshot(None));
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}

/// Probe 5: any local user could drive the daemon through its socket. Another user is refused
/// by the socket's mode, and by `SO_PEERCRED` when the mode is loosened by hand; root is served.
#[test]
fn probe5_control_socket_refuses_another_user_and_serves_root() {
    let Some(_p) = privileged("probe5_control_socket_refuses_another_user_and_serves_root") else {
        return;
    };
    let user = TempUser::new("sock");
    let s = Scene::new("socket-user", "");
    let _d = s.start(|_| {});
    assert_eq!(mode(&s.socket), 0o600);
    let as_user = || {
        let mut c = flightrec();
        c.args(["snapshot", "record", "--socket"]).arg(&s.socket);
        user.run(c).output().unwrap()
    };
    let out = as_user();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("permission denied on"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    std::fs::set_permissions(
        &s.socket,
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    let out = as_user();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("permission denied: uid {} is not root", user.uid)),
        "{err}"
    );
    assert_eq!(frs_in(&s.spool), 0, "a refused user got a snapshot");
    let path = written(&s.snapshot(None));
    assert!(path.starts_with(&s.spool));
}

/// Probe 5/8: with umask 000 spool and snapshot files were 0666 in 0777 directories. Under a
/// daemon started with umask 000: the spool 0750, snapshots 0640 (spool and an approved
/// directory), the socket 0600, the pin directory 0700.
#[test]
fn probe8_modes_under_umask_000() {
    let Some(_p) = privileged("probe8_modes_under_umask_000") else {
        return;
    };
    let s = Scene::new("umask", "");
    let out = s.dir.join("out");
    std::fs::create_dir(&out).unwrap();
    s.write_config(&format!(
        "snapshot_dirs = [{:?}]\n",
        out.display().to_string()
    ));
    let _d = s.start(|c| {
        use std::os::unix::process::CommandExt;
        // SAFETY: umask is async-signal-safe.
        unsafe {
            c.pre_exec(|| {
                libc::umask(0);
                Ok(())
            })
        };
    });
    let spooled = written(&s.snapshot(None));
    let chosen = written(&s.snapshot(Some(&out)));
    assert_eq!(mode(&s.spool), 0o750);
    assert_eq!(mode(&spooled), 0o640);
    assert_eq!(mode(&chosen), 0o640);
    assert_eq!(mode(&s.socket), 0o600);
    assert_eq!(mode(&s.pins), 0o700);
}
