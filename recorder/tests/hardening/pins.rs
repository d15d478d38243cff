//! The pin directory: made by another user, shared by two daemons, left by a killed one.

use std::os::unix::fs::MetadataExt;

use super::{Scene, TempUser, flightrec, mode, privileged};

/// Probe 5: any user who can write bpffs could pre-create `recorder.pin_dir` and stop the
/// daemon from starting, and `teardown` failed on a stray subdirectory. An empty directory of
/// someone else's is replaced; a non-empty one is refused with a sentence naming its owner and
/// the fix, which works.
#[test]
fn probe5_pin_dir_made_by_another_user_is_replaced_or_refused() {
    let Some(_p) = privileged("probe5_pin_dir_made_by_another_user_is_replaced_or_refused") else {
        return;
    };
    let user = TempUser::new("pin");
    let s = Scene::new("foreign-pins", "");
    // Empty and another user's: replaced by the daemon's own.
    std::fs::create_dir(&s.pins).unwrap();
    std::os::unix::fs::chown(&s.pins, Some(user.uid), Some(user.gid)).unwrap();
    let mut d = s.start(|_| {});
    let log = d.log();
    assert!(log.contains("replaced the empty pin directory"), "{log}");
    assert!(
        log.contains(&format!("uid {} ({})", user.uid, user.name)),
        "{log}"
    );
    let m = std::fs::metadata(&s.pins).unwrap();
    assert_eq!((m.uid(), mode(&s.pins)), (0, 0o700));
    d.signal(libc::SIGTERM);
    let td = flightrec()
        .arg("teardown")
        .arg("--pin-dir")
        .arg(&s.pins)
        .output()
        .unwrap();
    assert!(td.status.success(), "{td:?}");

    // Not empty (the user's own subdirectory in it): refused, in one sentence.
    std::fs::create_dir(&s.pins).unwrap();
    std::fs::create_dir(s.pins.join("planted")).unwrap();
    for p in [s.pins.clone(), s.pins.join("planted")] {
        std::os::unix::fs::chown(&p, Some(user.uid), Some(user.gid)).unwrap();
    }
    let mut d = s.spawn(None, |_| {});
    assert_eq!(d.wait_exit(), Some(2));
    let err = d.log();
    assert!(
        err.contains(&format!(
            "the pin directory {} belongs to uid {} ({}) with mode 755 and is not empty",
            s.pins.display(),
            user.uid,
            user.name
        )),
        "{err}"
    );
    assert!(err.contains("flightrec teardown --pin-dir"), "{err}");
    assert!(!err.contains("caused by"), "{err}");
    assert!(!s.socket.exists(), "the refused daemon left its socket");
    // Root's own directory that every user may write into is not trusted either.
    std::os::unix::fs::chown(&s.pins, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&s.pins, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let mut d = s.spawn(None, |_| {});
    assert_eq!(d.wait_exit(), Some(2));
    assert!(
        d.log().contains("with mode 777 and is not empty"),
        "{}",
        d.log()
    );

    // The fix the sentence names: teardown removes it, stray subdirectory included.
    let td = flightrec()
        .arg("teardown")
        .arg("--pin-dir")
        .arg(&s.pins)
        .output()
        .unwrap();
    assert!(td.status.success(), "{td:?}");
    assert!(!s.pins.exists());
    let mut d = s.start(|_| {});
    assert!(s.snapshot(None).status.success());
    d.signal(libc::SIGTERM);
}

/// Probe 8: two daemons could share one pin directory. The second refuses in one sentence
/// naming the first; `teardown` refuses while a daemon runs; a daemon killed with SIGKILL
/// leaves pins the next one adopts, and no stale lock.
#[test]
fn probe8_one_daemon_per_pin_dir_and_no_stale_lock_after_a_kill() {
    let Some(_p) = privileged("probe8_one_daemon_per_pin_dir_and_no_stale_lock_after_a_kill")
    else {
        return;
    };
    let s = Scene::new("two-daemons", "");
    let mut first = s.start(|_| {});
    let other = s.dir.join("other.sock");
    let mut second = s.spawn(Some(&other), |_| {});
    assert_eq!(second.wait_exit(), Some(2));
    let err = second.log();
    let sentence = format!(
        "a flightrec daemon (pid {}) is using the pin directory {}",
        first.pid(),
        s.pins.display()
    );
    assert!(err.contains(&sentence), "{err}");
    assert_eq!(
        err.trim().lines().filter(|l| l.contains("error")).count(),
        1,
        "{err}"
    );
    assert!(!other.exists(), "the refused daemon left its socket");
    let td = flightrec()
        .arg("teardown")
        .arg("--pin-dir")
        .arg(&s.pins)
        .output()
        .unwrap();
    assert_eq!(td.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&td.stderr).contains(&sentence),
        "{td:?}"
    );
    assert!(
        s.pins.join("map_RING").exists(),
        "teardown pulled a running daemon's pins"
    );
    assert!(s.snapshot(None).status.success());

    // Killed: pins and a stale socket stay, the lock does not.
    first.signal(libc::SIGKILL);
    assert!(s.socket.exists());
    std::fs::create_dir(s.pins.join("stray")).unwrap();
    let mut third = s.start(|_| {});
    assert!(third.log().contains("adopted existing"), "{}", third.log());
    assert!(s.snapshot(None).status.success());
    third.signal(libc::SIGTERM);
    // teardown with the stray subdirectory still there.
    let td = flightrec()
        .arg("teardown")
        .arg("--pin-dir")
        .arg(&s.pins)
        .output()
        .unwrap();
    assert!(td.status.success(), "{td:?}");
    assert!(!s.pins.exists());
}
