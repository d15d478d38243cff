//! The `Catalog` contract, checked on both implementations (SQLite and a real PostgreSQL), and
//! what only the PostgreSQL catalog does: versioned migrations, one-sentence errors while the
//! database is down, recovery once it is back, advisory locks across replicas.

use std::time::{Duration, Instant};

use flightrec_collector::catalog::postgres::{PgCatalog, PoolOptions};
use flightrec_collector::catalog::sqlite::SqliteCatalog;
use flightrec_collector::catalog::{Catalog, CatalogError, Entry, Query, Session};

use crate::pg::start_or_skip;

fn entry(id: &str, ts: u64, host: &str, tags: &[&str]) -> Entry {
    Entry {
        snapshot_id: id.into(),
        host_id: host.into(),
        frozen_realtime_ns: ts,
        trigger_source: if ts.is_multiple_of(2) { "cli" } else { "hook" }.into(),
        trigger_reason: format!("reason {ts}"),
        group: ts.is_multiple_of(4).then(|| "web".to_owned()),
        trigger_id: ts.is_multiple_of(4).then(|| format!("trig{}", ts % 8)),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        bytes: 100,
        ..Default::default()
    }
}

/// The whole contract on one catalog.
fn contract(c: &dyn Catalog) {
    for i in 0..25u64 {
        let host = if i % 3 == 0 { "a" } else { "b" };
        let tags: &[&str] = if i % 5 == 0 { &["slow", "p99"] } else { &[] };
        assert!(
            c.insert(&entry(&format!("{i:032x}"), 1000 + i, host, tags))
                .unwrap()
        );
    }
    // Same id again: ignored.
    assert!(
        !c.insert(&entry(&format!("{:032x}", 3), 5, "z", &[]))
            .unwrap()
    );
    assert_eq!(c.totals().unwrap(), (25, 2500));
    let got = c.get(&format!("{:032x}", 5)).unwrap().unwrap();
    assert_eq!(
        got,
        entry(&format!("{:032x}", 5), 1005, "b", &["slow", "p99"])
    );
    assert!(c.get("ffff").unwrap().is_none());

    // Pages of 10 walk every entry once, newest first; so do pages of 1.
    for size in [10, 1, 1000] {
        let mut q = Query {
            limit: Some(size),
            ..Default::default()
        };
        let mut seen = Vec::new();
        loop {
            let page = c.list(&q).unwrap();
            seen.extend(page.items.iter().map(|e| e.frozen_realtime_ns));
            match page.next_cursor {
                Some(cur) => q.cursor = Some(cur),
                None => break,
            }
        }
        assert_eq!(
            seen,
            (1000..1025).rev().collect::<Vec<_>>(),
            "pages of {size}"
        );
    }
    let only = |q: Query| -> Vec<u64> {
        c.list(&q)
            .unwrap()
            .items
            .iter()
            .map(|e| e.frozen_realtime_ns)
            .collect()
    };
    assert_eq!(
        only(Query {
            host: Some("a".into()),
            from_ns: Some(1010),
            ..Default::default()
        }),
        vec![1024, 1021, 1018, 1015, 1012]
    );
    assert_eq!(
        only(Query {
            tag: Some("slow".into()),
            source: Some("hook".into()),
            ..Default::default()
        }),
        vec![1015, 1005]
    );
    assert_eq!(
        only(Query {
            reason: Some("reason 100".into()),
            to_ns: Some(1005),
            ..Default::default()
        }),
        vec![1004, 1003, 1002, 1001, 1000]
    );
    assert_eq!(
        only(Query {
            group: Some("web".into()),
            trigger_id: Some("trig0".into()),
            ..Default::default()
        }),
        vec![1024, 1016, 1008, 1000]
    );
    // A reason with LIKE metacharacters is a plain substring.
    assert!(
        only(Query {
            reason: Some("%".into()),
            ..Default::default()
        })
        .is_empty()
    );
    // A cursor in the middle of a filter.
    let first = c
        .list(&Query {
            host: Some("b".into()),
            limit: Some(3),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(first.items.len(), 3);
    let rest = only(Query {
        host: Some("b".into()),
        cursor: first.next_cursor.clone(),
        limit: Some(2),
        ..Default::default()
    });
    assert_eq!(rest, vec![1019, 1017]);

    let oldest = c.oldest(2, None).unwrap();
    assert_eq!(
        oldest
            .iter()
            .map(|e| e.frozen_realtime_ns)
            .collect::<Vec<_>>(),
        vec![1000, 1001]
    );
    assert_eq!(c.oldest(100, Some(1003)).unwrap().len(), 3);
    assert!(c.remove(&format!("{:032x}", 0)).unwrap());
    assert!(!c.remove(&format!("{:032x}", 0)).unwrap());
    assert_eq!(c.totals().unwrap(), (24, 2400));
    // Its tags went with it.
    assert_eq!(
        only(Query {
            tag: Some("p99".into()),
            ..Default::default()
        }),
        vec![1020, 1015, 1010, 1005]
    );

    // Sessions: opening twice returns the first, offsets move, closing removes.
    let s = Session {
        snapshot_id: "ab".repeat(16),
        host_id: "h".into(),
        size: 10,
        sha256: "00".into(),
        offset: 0,
        created_realtime_ns: 1,
    };
    assert_eq!(c.open_session(&s).unwrap(), s);
    c.set_offset(&s.snapshot_id, 7).unwrap();
    // Where the catalog is shared, it knows when any replica last moved the offset (upload
    // expiry must not go by one replica's staging file).
    let touched = c.touched_ns(&s.snapshot_id).unwrap();
    assert_eq!(touched.is_some(), c.shares_staging());
    assert!(touched.is_none_or(|t| t + 60_000_000_000 > schemas::clock::realtime_ns()));
    let again = c
        .open_session(&Session {
            size: 99,
            ..s.clone()
        })
        .unwrap();
    assert_eq!((again.size, again.offset), (10, 7));
    assert_eq!(c.session(&s.snapshot_id).unwrap().unwrap().offset, 7);
    assert_eq!(c.sessions().unwrap().len(), 1);
    // Staged bytes: where the catalog keeps them, any replica reads them back.
    assert!(c.stage_chunk(&s.snapshot_id, 7, b"abc").unwrap());
    assert_eq!(c.session(&s.snapshot_id).unwrap().unwrap().offset, 10);
    // A chunk at an offset the upload has moved past is refused.
    assert!(!c.stage_chunk(&s.snapshot_id, 7, b"abc").unwrap() || !c.shares_staging());
    if c.shares_staging() {
        c.set_offset(&s.snapshot_id, 0).unwrap();
        assert!(c.stage_chunk(&s.snapshot_id, 0, b"hello ").unwrap());
        assert!(c.stage_chunk(&s.snapshot_id, 6, b"world").unwrap());
        // Re-sent from 6: what was past 6 is replaced.
        c.set_offset(&s.snapshot_id, 6).unwrap();
        assert!(c.stage_chunk(&s.snapshot_id, 6, b"there").unwrap());
        let mut got = Vec::new();
        let n = c
            .read_staged(&s.snapshot_id, 11, &mut |b| {
                got.extend_from_slice(b);
                Ok(())
            })
            .unwrap();
        assert_eq!((n, got.as_slice()), (11, &b"hello there"[..]));
        let mut part = Vec::new();
        c.read_staged(&s.snapshot_id, 8, &mut |b| {
            part.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        assert_eq!(part, b"hello th");
    }
    c.close_session(&s.snapshot_id).unwrap();
    assert!(c.session(&s.snapshot_id).unwrap().is_none());
    assert!(c.sessions().unwrap().is_empty());

    // Group triggers: recorded, replaced by id.
    let mut t = flightrec_collector::catalog::GroupTrigger {
        trigger_id: "cd".repeat(16),
        group: "web".into(),
        reason: "first".into(),
        ..Default::default()
    };
    c.insert_trigger(&t).unwrap();
    t.reason = "second".into();
    c.insert_trigger(&t).unwrap();
    assert_eq!(c.trigger(&t.trigger_id).unwrap().unwrap(), t);
    assert!(c.trigger("none").unwrap().is_none());

    // Exclusive work runs when nobody else runs it.
    let mut ran = false;
    assert!(c.exclusive(42, &mut || ran = true).unwrap());
    assert!(ran);
}

#[test]
fn sqlite_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let c = SqliteCatalog::open(&dir.path().join("c.db")).unwrap();
    contract(&c);
}

#[test]
fn postgres_keeps_the_contract_and_migrates_once() {
    let Some(pg) = start_or_skip("postgres_keeps_the_contract_and_migrates_once") else {
        return;
    };
    let url = pg.fresh_db();
    // Replicas starting together: the migration is applied once.
    let opened: Vec<PgCatalog> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| s.spawn(|| PgCatalog::open(&url, PoolOptions::default()).unwrap()))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let newest = flightrec_collector::catalog::postgres::MIGRATIONS
        .last()
        .unwrap()
        .0;
    let c = &opened[0];
    assert_eq!(c.schema_version().unwrap(), newest);
    contract(c);
    // Another replica sees what the first wrote.
    assert_eq!(opened[1].totals().unwrap(), (24, 2400));
    // Reopening keeps the data and the version.
    let again = PgCatalog::open(&url, PoolOptions::default()).unwrap();
    let applied: i64 = std::thread::spawn({
        let url = url.clone();
        move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            c.query_one("SELECT count(*) FROM schema_migrations", &[])
                .unwrap()
                .get(0)
        }
    })
    .join()
    .unwrap();
    assert_eq!(applied, i64::from(newest), "each migration applied once");
    assert_eq!(again.schema_version().unwrap(), newest);
    assert_eq!(again.totals().unwrap(), (24, 2400));

    // Over the Unix socket too.
    let sock = PgCatalog::open(
        &pg.socket_url(url.rsplit('/').next().unwrap()),
        PoolOptions::default(),
    )
    .unwrap();
    assert_eq!(sock.totals().unwrap(), (24, 2400));
}

#[test]
fn advisory_lock_lets_one_replica_at_a_time() {
    let Some(pg) = start_or_skip("advisory_lock_lets_one_replica_at_a_time") else {
        return;
    };
    let url = pg.fresh_db();
    let a = PgCatalog::open(&url, PoolOptions::default()).unwrap();
    let b = PgCatalog::open(&url, PoolOptions::default()).unwrap();
    let mut inner = None;
    let outer = a
        .with_advisory_lock(7, || {
            inner = Some(b.with_advisory_lock(7, || ()).unwrap());
        })
        .unwrap();
    assert_eq!(outer, Some(()));
    assert_eq!(inner, Some(None), "b must not run while a holds the lock");
    // Released afterwards.
    assert_eq!(b.with_advisory_lock(7, || 1).unwrap(), Some(1));
}

#[test]
fn postgres_down_is_one_sentence_and_recovery_needs_no_restart() {
    let Some(pg) = start_or_skip("postgres_down_is_one_sentence_and_recovery_needs_no_restart")
    else {
        return;
    };
    let url = pg.fresh_db();
    let c = PgCatalog::open(
        &url,
        PoolOptions {
            max_connections: 4,
            connect_timeout: Duration::from_secs(1),
        },
    )
    .unwrap();
    c.insert(&entry(&"01".repeat(16), 1, "a", &[])).unwrap();
    pg.stop("immediate").unwrap();
    let t = Instant::now();
    let err = c.totals().unwrap_err();
    let text = err.to_string();
    println!("while down: {text}");
    assert!(matches!(err, CatalogError::Unavailable(_)), "{err:?}");
    assert!(
        text.contains("PostgreSQL catalog at postgres://flightrec@127.0.0.1"),
        "{text}"
    );
    assert!(!text.contains('\n'), "{text}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // Opening while down fails the same way, quickly.
    let err = PgCatalog::open(
        &url,
        PoolOptions {
            max_connections: 2,
            connect_timeout: Duration::from_millis(500),
        },
    )
    .unwrap_err();
    assert!(matches!(err, CatalogError::Unavailable(_)), "{err:?}");
    pg.start_again().unwrap();
    // Back: the same catalog object works again, with no restart.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match c.totals() {
            Ok(t) => {
                assert_eq!(t, (1, 100));
                break;
            }
            Err(e) if Instant::now() < deadline => {
                println!("not yet: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("no recovery: {e}\n{}", pg.log()),
        }
    }
    assert!(c.insert(&entry(&"02".repeat(16), 2, "a", &[])).unwrap());
}

#[test]
fn group_membership_is_shared_newest_registration_wins_and_leases_run_out() {
    use flightrec_collector::catalog::GroupMember;
    let Some(pg) =
        start_or_skip("group_membership_is_shared_newest_registration_wins_and_leases_run_out")
    else {
        return;
    };
    let url = pg.fresh_db();
    let c = PgCatalog::open(&url, PoolOptions::default()).unwrap();
    let m = |group: &str, host: &str, since: u64, replica: &str| GroupMember {
        group: group.into(),
        host_id: host.into(),
        since_realtime_ns: since,
        replica: replica.into(),
    };
    let listed = |group: Option<&str>| -> Vec<(String, String, String)> {
        c.group_members(group)
            .unwrap()
            .into_iter()
            .map(|m| (m.group, m.host_id, m.replica))
            .collect()
    };
    let row = |g: &str, h: &str, r: &str| (g.to_owned(), h.to_owned(), r.to_owned());
    c.join_group(&[m("checkout", "web-1", 10, "A"), m("batch", "db-1", 10, "A")])
        .unwrap();
    c.join_group(&[m("checkout", "web-2", 20, "B")]).unwrap();
    assert_eq!(
        listed(None),
        [
            row("batch", "db-1", "A"),
            row("checkout", "web-1", "A"),
            row("checkout", "web-2", "B")
        ]
    );
    // web-1 reconnects to B: the newer registration wins; a late renewal of the older one
    // on A does not take it back, nor does A's leave remove it.
    c.join_group(&[m("checkout", "web-1", 30, "B")]).unwrap();
    c.join_group(&[m("checkout", "web-1", 10, "A")]).unwrap();
    c.leave_group(&m("checkout", "web-1", 10, "A")).unwrap();
    assert_eq!(
        listed(Some("checkout")),
        [row("checkout", "web-1", "B"), row("checkout", "web-2", "B")]
    );
    // A renews with nothing left as of time 10: a registration of A made since stays, its
    // others go, B's stay.
    c.join_group(&[m("batch", "db-2", 11, "A")]).unwrap();
    c.renew_groups("A", &[], 10).unwrap();
    assert_eq!(
        listed(None),
        [
            row("batch", "db-2", "A"),
            row("checkout", "web-1", "B"),
            row("checkout", "web-2", "B")
        ]
    );
    c.renew_groups("A", &[], 11).unwrap();
    assert_eq!(
        listed(None),
        [row("checkout", "web-1", "B"), row("checkout", "web-2", "B")]
    );
    // B stops renewing: 30 s after its last renewal its registrations no longer count, and
    // even an older registration elsewhere replaces them.
    let url2 = url.clone();
    std::thread::spawn(move || {
        let mut raw = postgres::Client::connect(&url2, postgres::NoTls).unwrap();
        raw.execute(
            "UPDATE group_members SET seen_ns = seen_ns - 31000000000 WHERE replica = 'B'",
            &[],
        )
        .unwrap();
    })
    .join()
    .unwrap();
    assert_eq!(listed(None), []);
    c.join_group(&[m("checkout", "web-2", 5, "C")]).unwrap();
    assert_eq!(listed(None), [row("checkout", "web-2", "C")]);
    // The embedded catalog keeps no membership: its collector's registry is all there is.
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteCatalog::open(&dir.path().join("c.db")).unwrap();
    assert!(!sqlite.shares_groups());
    sqlite
        .join_group(&[m("checkout", "web-1", 1, "A")])
        .unwrap();
    assert!(sqlite.group_members(None).unwrap().is_empty());
}

#[test]
fn tls_to_postgres_verifies_the_server_certificate() {
    let test = "tls_to_postgres_verifies_the_server_certificate";
    let Some(pg) = start_or_skip(test) else {
        return;
    };
    let certs = tempfile::tempdir().unwrap();
    // For the name localhost only: connecting to 127.0.0.1 is a name mismatch.
    if !crate::tls::make_certs_for(certs.path(), "DNS:localhost") {
        crate::util::skip(test, "the openssl command is missing or failed");
        return;
    }
    let url = pg.fresh_db();
    pg.require_tls(
        &certs.path().join("cert.pem"),
        &certs.path().join("key.pem"),
    )
    .unwrap();
    let ca = certs.path().join("ca.pem").display().to_string();
    let by_name = url.replace("127.0.0.1", "localhost");
    let open = |url: &str| {
        PgCatalog::open(
            url,
            PoolOptions {
                max_connections: 2,
                connect_timeout: Duration::from_millis(1500),
            },
        )
    };
    let refused = |url: &str| {
        let text = open(url).unwrap_err().to_string();
        println!("{text}");
        assert!(!text.contains('\n'), "one line: {text}");
        text
    };
    // Plain connections are refused by the server: what opens below went over TLS.
    assert!(refused(&url).contains("pg_hba.conf"));
    // verify-full against the test CA, by the certificate's name: everything works, the
    // LISTEN connection of group triggers included.
    let full = format!("{by_name}?sslmode=verify-full&sslrootcert={ca}");
    let a = open(&full).unwrap();
    let b = open(&full).unwrap();
    assert!(
        a.insert(&entry(&"0a".repeat(16), 1, "web-1", &["x"]))
            .unwrap()
    );
    assert_eq!(b.totals().unwrap(), (1, 100));
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    a.subscribe_triggers(Box::new(move |t| {
        let _ = tx.lock().unwrap().send(t.trigger_id);
    }))
    .unwrap();
    let t = flightrec_collector::catalog::GroupTrigger {
        trigger_id: "0b".repeat(16),
        group: "checkout".into(),
        reason: "slow".into(),
        requested_by: "collector".into(),
        fields: Default::default(),
        sent_realtime_ns: 1,
        recipients: vec![],
    };
    // The LISTEN connection comes up on its own thread: announce until A hears one.
    let mut heard = None;
    for _ in 0..50 {
        b.announce_trigger(&t).unwrap();
        if let Ok(id) = rx.recv_timeout(Duration::from_millis(200)) {
            heard = Some(id);
            break;
        }
    }
    assert_eq!(heard.as_deref(), Some(t.trigger_id.as_str()));
    // The name is checked with verify-full, not with verify-ca or require.
    let text = refused(&format!("{url}?sslmode=verify-full&sslrootcert={ca}"));
    assert!(text.contains("not valid for name"), "{text}");
    for mode in ["verify-ca", "require"] {
        let c = open(&format!("{url}?sslmode={mode}&sslrootcert={ca}")).unwrap();
        assert_eq!(c.totals().unwrap(), (1, 100), "{mode}");
    }
    // Without sslrootcert only the public roots are trusted: not the test CA.
    let text = refused(&format!("{by_name}?sslmode=verify-full"));
    assert!(text.contains("UnknownIssuer"), "{text}");
}

#[test]
fn catalog_config_is_checked() {
    use flightrec_collector::config::Config;
    let err = |t: &str| Config::parse(t).unwrap_err().to_string();
    assert!(Config::parse("[catalog]\nurl = \"postgres://fr:pw@db:5432/flightrec\"\n").is_ok());
    let e = err("[catalog]\nurl = \"mysql://db/x\"\n");
    assert!(e.contains("must start with postgres://"), "{e}");
    assert!(!e.contains('\n'), "{e}");
    let e = err("[catalog]\nurl = \"postgres://db/x\"\nmax_connections = 1\n");
    assert!(e.contains("catalog.max_connections"), "{e}");
    let e = err("[catalog]\nurl = \"postgres://db/x\"\npool = 3\n");
    assert!(e.contains("pool"), "{e}");
    let e = err("[catalog]\nurl = \"postgres://db/x\"\nconnect_timeout = \"1ms\"\n");
    assert!(e.contains("catalog.connect_timeout"), "{e}");
    // TLS options as libpq spells them; a wrong one is one sentence without the password.
    assert!(
        Config::parse(
            "[catalog]\nurl = \"postgres://fr@db/f?sslmode=verify-full&sslrootcert=/etc/ca.pem\"\n"
        )
        .is_ok()
    );
    let e = err("[catalog]\nurl = \"postgres://fr:hunter2@db/f?sslmode=verify-all\"\n");
    assert!(e.contains("sslmode must be"), "{e}");
    assert!(!e.contains('\n') && !e.contains("hunter2"), "{e}");
    // The password never shows in --check-config.
    let c = Config::parse("[catalog]\nurl = \"postgres://fr:hunter2@db/flightrec\"\n").unwrap();
    let shown = toml::to_string(&c.redacted()).unwrap();
    assert!(!shown.contains("hunter2"), "{shown}");
}
