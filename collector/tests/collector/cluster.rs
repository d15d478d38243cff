//! The reference deployment end to end (issue 12): two collector replicas as processes of
//! their own behind a real HAProxy, one PostgreSQL catalog, the archive on Garage (S3; a
//! directory shared by both replicas where garage is not installed, except under `CI=true`).
//!
//! HAProxy serves two frontends on loopback: `rr` balances round-robin over both replicas;
//! `failover` sends everything to replica 1 and to replica 2 only when 1 is down, so a test
//! knows which replica to kill mid-upload.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flightrec_uplink::spool::Outcome;

use crate::pg::{PgServer, start_or_skip};
use crate::util::{bulk, download, free_port, get_json, http, skip, upload};

fn haproxy_bin() -> Option<PathBuf> {
    ["/usr/sbin/haproxy", "/usr/local/sbin/haproxy"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// A child process killed on drop.
struct Proc(std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One collector replica.
struct Replica {
    proc: Option<Proc>,
    config: PathBuf,
    url: String,
}

impl Replica {
    fn spawn(config: &Path, url: String, log: &Path) -> Replica {
        let child = Command::new(env!("CARGO_BIN_EXE_flightrec-collector"))
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        Replica {
            proc: Some(Proc(child)),
            config: config.to_owned(),
            url,
        }
    }

    fn kill_9(&mut self) {
        // Child::kill is SIGKILL.
        self.proc.take();
    }

    fn pid(&self) -> u32 {
        self.proc.as_ref().unwrap().0.id()
    }

    fn alive(&mut self) -> bool {
        self.proc
            .as_mut()
            .is_some_and(|p| p.0.try_wait().unwrap().is_none())
    }
}

async fn wait_up(url: &str) {
    for _ in 0..400 {
        if let Ok(r) = http().get(format!("{url}/healthz")).send().await
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{url} did not come up");
}

/// Everything of one deployment.
struct Cluster {
    pg: PgServer,
    replicas: Vec<Replica>,
    rr: String,
    failover: String,
    db_url: String,
    _haproxy: Proc,
    _garage: Option<crate::s3::Garage>,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// `None` when a tool is missing (skipped, or failed under `CI=true`). `auth` is the
    /// replicas' `[auth]` section.
    async fn start(test: &str, auth: &str) -> Option<Cluster> {
        let Some(haproxy) = haproxy_bin() else {
            skip(test, "haproxy is not installed (Debian: haproxy)");
            return None;
        };
        let pg = start_or_skip(test)?;
        let dir = tempfile::tempdir().unwrap();
        // The archive: a Garage bucket when garage is installed (as in CI); otherwise one
        // directory both replicas' `archive` links to, as a shared filesystem would be.
        let (garage, archive) = match crate::s3::garage_bin() {
            Some(bin) => {
                let gdir = dir.path().join("garage");
                std::fs::create_dir_all(&gdir).unwrap();
                let garage = crate::s3::Garage::start(bin, &gdir);
                let (key_id, secret) = tokio::task::block_in_place(|| garage.setup("flightrec"));
                let toml = format!(
                    "archive = \"s3\"\n[storage.s3]\nendpoint = \"{}\"\nregion = \"garage\"\n\
                     bucket = \"flightrec\"\naccess_key_id = \"{key_id}\"\n\
                     secret_access_key = \"{secret}\"\nallow_http = true\n",
                    garage.endpoint
                );
                (Some(garage), toml)
            }
            None if std::env::var("CI").is_ok_and(|v| v == "true") => {
                skip(
                    test,
                    "garage is not installed (cargo install garage --locked)",
                );
                return None;
            }
            None => {
                println!("{test}: garage is not installed: the archive is a shared directory");
                (None, String::new())
            }
        };
        let shared = dir.path().join("shared-archive");
        let db_url = pg.fresh_db();
        let mut replicas = Vec::new();
        for i in 1..=2 {
            let port = free_port();
            let cfg = dir.path().join(format!("collector{i}.toml"));
            std::fs::write(
                &cfg,
                format!(
                    "[server]\nlisten = \"127.0.0.1:{port}\"\n\
                     [storage]\ndata_dir = \"{data}\"\n{archive}\
                     [catalog]\nurl = \"{db_url}\"\nconnect_timeout = \"2s\"\n{auth}",
                    data = dir.path().join(format!("data{i}")).display(),
                ),
            )
            .unwrap();
            if garage.is_none() {
                let data = dir.path().join(format!("data{i}"));
                std::fs::create_dir_all(&shared).unwrap();
                std::fs::create_dir_all(&data).unwrap();
                std::os::unix::fs::symlink(&shared, data.join("archive")).unwrap();
            }
            let log = dir.path().join(format!("collector{i}.log"));
            replicas.push(Replica::spawn(
                &cfg,
                format!("http://127.0.0.1:{port}"),
                &log,
            ));
        }
        for r in &replicas {
            wait_up(&r.url).await;
        }
        let (rr_port, fo_port) = (free_port(), free_port());
        let server = |r: &Replica| r.url.trim_start_matches("http://").to_owned();
        let hcfg = dir.path().join("haproxy.cfg");
        std::fs::write(
            &hcfg,
            format!(
                "global\n    maxconn 4096\n\
                 defaults\n    mode http\n    timeout connect 1s\n    timeout client 120s\n\
                 \x20   timeout server 120s\n    option redispatch\n\
                 \x20   retries 3\n    option http-no-delay\n    option httpchk GET /healthz\n\
                 \x20   default-server inter 200ms fall 1 rise 1\n\
                 frontend rr\n    bind 127.0.0.1:{rr_port}\n    default_backend replicas\n\
                 frontend failover\n    bind 127.0.0.1:{fo_port}\n    default_backend primary\n\
                 backend replicas\n    balance roundrobin\n\
                 \x20   server r1 {a} check\n    server r2 {b} check\n\
                 backend primary\n    server r1 {a} check\n    server r2 {b} check backup\n",
                a = server(&replicas[0]),
                b = server(&replicas[1]),
            ),
        )
        .unwrap();
        let haproxy = Proc(
            Command::new(haproxy)
                .arg("-f")
                .arg(&hcfg)
                .arg("-db")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.path().join("haproxy.log")).unwrap())
                .spawn()
                .unwrap(),
        );
        let rr = format!("http://127.0.0.1:{rr_port}");
        let failover = format!("http://127.0.0.1:{fo_port}");
        wait_up(&rr).await;
        wait_up(&failover).await;
        Some(Cluster {
            pg,
            replicas,
            rr,
            failover,
            db_url,
            _haproxy: haproxy,
            _garage: garage,
            dir,
        })
    }

    fn client(&self, url: &str) -> flightrec_uplink::CollectorConfig {
        flightrec_uplink::CollectorConfig {
            url: url.into(),
            rate_limit: "0".into(),
            ..Default::default()
        }
    }

    /// Snapshots catalogued, and distinct ids among them, straight from PostgreSQL.
    fn catalogued(&self) -> (i64, i64) {
        let url = self.db_url.clone();
        std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            let r = c
                .query_one(
                    "SELECT count(*), count(DISTINCT snapshot_id) FROM snapshots",
                    &[],
                )
                .unwrap();
            (r.get(0), r.get(1))
        })
        .join()
        .unwrap()
    }

    fn logs(&self) -> String {
        let mut s = String::new();
        for f in ["collector1.log", "collector2.log", "haproxy.log"] {
            s.push_str(&format!(
                "--- {f}\n{}\n",
                std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default()
            ));
        }
        s
    }
}

/// Uploads `path` until it is acknowledged, as a recorder's spool does (it keeps the file and
/// retries); returns the outcome of the attempt that succeeded and the attempts made.
async fn upload_until_done(
    cfg: &flightrec_uplink::CollectorConfig,
    path: &Path,
    within: Duration,
) -> (Outcome, u32) {
    let deadline = Instant::now() + within;
    let mut attempts = 0;
    loop {
        attempts += 1;
        match upload(cfg, path).await {
            Ok(o) => return (o, attempts),
            Err(e) if Instant::now() < deadline => {
                println!("retrying {}: {e}", path.display());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{}: still failing: {e}", path.display()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_behind_haproxy_on_postgres_and_garage() {
    let test = "two_replicas_behind_haproxy_on_postgres_and_garage";
    let Some(mut cl) = Cluster::start(test, "[auth]\nopen = true\n").await else {
        return;
    };
    let files = tempfile::tempdir().unwrap();

    // 1. Fifty recorders upload at once through the balancer: each snapshot catalogued once.
    let mut tasks = Vec::new();
    for n in 0..50u64 {
        let (path, sid) = bulk(files.path(), 1000 + n, &format!("host-{n}"), 1_500);
        let cfg = cl.client(&cl.rr);
        tasks.push(tokio::spawn(async move {
            let (out, _) = upload_until_done(&cfg, &path, Duration::from_secs(60)).await;
            assert!(matches!(out, Outcome::Uploaded { .. }), "{sid}: {out:?}");
            (path, sid)
        }));
    }
    let mut uploaded = Vec::new();
    for t in tasks {
        uploaded.push(t.await.unwrap());
    }
    assert_eq!(cl.catalogued(), (50, 50), "{}", cl.logs());
    // Sent again, through either replica: already there, nothing added.
    for (path, _) in uploaded.iter().take(4) {
        let out = upload(&cl.client(&cl.rr), path).await.unwrap();
        assert_eq!(out, Outcome::AlreadyArchived);
    }
    assert_eq!(cl.catalogued(), (50, 50));
    // Both replicas answer for every snapshot (one catalog, one bucket).
    let (path0, sid0) = &uploaded[0];
    for r in &cl.replicas {
        assert_eq!(download(&r.url, sid0).await, std::fs::read(path0).unwrap());
    }

    // 2. kill -9 of the replica taking an upload: the upload resumes on the other one,
    //    byte-identical, without starting over.
    let (path, sid) = bulk(files.path(), 7, "web-kill", 16_000); // ~3 MiB
    let bytes = std::fs::read(&path).unwrap();
    let mut slow = cl.client(&cl.failover);
    slow.rate_limit = "2MiB".into();
    slow.chunk_size = "128KiB".into();
    let (s2, p2) = (slow.clone(), path.clone());
    let first = tokio::spawn(async move { upload(&s2, &p2).await });
    tokio::time::sleep(Duration::from_millis(700)).await;
    cl.replicas[0].kill_9();
    let err = first.await.unwrap().expect_err("replica 1 died mid-upload");
    println!("first attempt ended with: {err}");
    let st = get_json(&format!("{}/v1/uploads/{sid}", cl.replicas[1].url), "").await;
    let had = st["offset"].as_u64().unwrap();
    assert!(
        had > 0,
        "replica 2 sees the session replica 1 took in: {st}"
    );
    let (out, _) = upload_until_done(&slow, &path, Duration::from_secs(30)).await;
    match out {
        Outcome::Uploaded { sent } => assert!(
            sent < bytes.len() as u64,
            "resumed from {had}, sent {sent} of {}",
            bytes.len()
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(download(&cl.failover, &sid).await, bytes, "byte-identical");
    assert_eq!(cl.catalogued(), (51, 51));

    // Replica 1 back, for the rest.
    let cfg1 = cl.replicas[0].config.clone();
    let url1 = cl.replicas[0].url.clone();
    cl.replicas[0] = Replica::spawn(&cfg1, url1, &cl.dir.path().join("collector1.log"));
    wait_up(&cl.replicas[0].url).await;
    let pids: Vec<u32> = cl.replicas.iter().map(Replica::pid).collect();

    // 3. PostgreSQL restarted under load: uploads in flight fail over the outage and go
    //    through once it is back; the replicas recover by themselves, not restarted.
    let mut tasks = Vec::new();
    for n in 0..20u64 {
        let (path, _) = bulk(files.path(), 2000 + n, &format!("load-{n}"), 3_000);
        let cfg = cl.client(&cl.rr);
        tasks.push(tokio::spawn(async move {
            upload_until_done(&cfg, &path, Duration::from_secs(90)).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    tokio::task::block_in_place(|| {
        cl.pg.stop("fast").unwrap();
        std::thread::sleep(Duration::from_secs(2));
        cl.pg.start_again().unwrap();
    });
    let mut retried = 0;
    for t in tasks {
        let (out, attempts) = t.await.unwrap();
        // AlreadyArchived: an attempt whose entry was committed just before the database
        // went away, but whose answer was not (it closes the session after): the retry finds
        // it catalogued. Either way once.
        assert!(
            matches!(out, Outcome::Uploaded { .. } | Outcome::AlreadyArchived),
            "{out:?}"
        );
        retried += u32::from(attempts > 1);
    }
    println!("{retried} of 20 uploads needed another attempt over the restart");
    assert_eq!(cl.catalogued(), (71, 71), "{}", cl.logs());
    for (r, pid) in cl.replicas.iter_mut().zip(pids) {
        assert!(r.alive(), "{}", cl.logs());
        assert_eq!(r.pid(), pid, "no replica restarted");
        let list = get_json(&format!("{}/v1/snapshots?limit=1", r.url), "").await;
        assert_eq!(list["items"].as_array().unwrap().len(), 1);
    }
}

const ADMIN: &str = "admin-token-0123456789";

fn recorder_token(host: &str) -> String {
    format!("write-token-{host}-xxxxxxxx")
}

/// POSTs a group trigger for `group` to `url` with `token`; expects 200, returns the answer.
async fn fire(url: &str, token: &str, group: &str) -> serde_json::Value {
    let r = http()
        .post(format!("{url}/v1/trigger"))
        .bearer_auth(token)
        .json(&serde_json::json!({"scope": "group", "group": group, "reason": "slow"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{url} {group}");
    r.json().await.unwrap()
}

/// Replica `r`'s own view of `group`: its replica id and every registered host with the
/// replica id of the one it is connected to.
async fn view_of(r: &Replica, group: &str) -> (String, Vec<(String, String)>) {
    let v = get_json(&format!("{}/v1/groups", r.url), ADMIN).await;
    let hosts = v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["group"] == group)
        .flat_map(|g| g["hosts"].as_array().unwrap().iter())
        .map(|h| {
            let s = |k: &str| h[k].as_str().unwrap().to_owned();
            (s("host_id"), s("replica"))
        })
        .collect();
    (v["replica"].as_str().unwrap().to_owned(), hosts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_trigger_through_haproxy_reaches_listeners_on_both_replicas_within_50_ms() {
    let test = "group_trigger_through_haproxy_reaches_listeners_on_both_replicas_within_50_ms";
    let hosts: Vec<String> = (0..6).map(|i| format!("web-{i}")).collect();
    let mut auth = format!("[auth]\nadmins = [\"{ADMIN}\"]\n");
    for h in &hosts {
        auth.push_str(&format!(
            "[[auth.recorders]]\nhost_id = \"{h}\"\ntoken = \"{}\"\ngroups = [\"checkout\"]\n",
            recorder_token(h)
        ));
    }
    let Some(mut cl) = Cluster::start(test, &auth).await else {
        return;
    };
    // Every recorder connects through the balancer, as a deployment's would.
    let mut rxs = Vec::new();
    for h in &hosts {
        let mut cfg = cl.client(&cl.rr);
        cfg.token = recorder_token(h);
        rxs.push(crate::group::join_via(cfg, h, "checkout").0);
    }
    // Each replica lists all six, each with the replica it landed on; the two agree.
    let mut views = Vec::new();
    for _ in 0..300 {
        views = vec![
            view_of(&cl.replicas[0], "checkout").await,
            view_of(&cl.replicas[1], "checkout").await,
        ];
        if views.iter().all(|v| v.1.len() == hosts.len()) && views[0].1 == views[1].1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let on = |i: usize| -> Vec<String> {
        let (me, hosts) = &views[i];
        hosts
            .iter()
            .filter(|h| &h.1 == me)
            .map(|h| h.0.clone())
            .collect()
    };
    let on = (on(0), on(1));
    println!(
        "registered on replica 1: {:?}, on replica 2: {:?}",
        on.0, on.1
    );
    assert_eq!(views[0].1, views[1].1, "{}", cl.logs());
    assert_eq!(on.0.len() + on.1.len(), hosts.len(), "{views:?}");
    assert!(
        !on.0.is_empty() && !on.1.is_empty(),
        "the balancer put listeners on both replicas: {on:?}"
    );
    for round in 0..5 {
        let (resp, answered, each) =
            crate::group::fire_and_time(&mut rxs, fire(&cl.rr, ADMIN, "checkout")).await;
        let worst = each.iter().max().copied().unwrap();
        println!(
            "round {round}: trigger {} answered in {answered:?}; each listener had it after {each:?}",
            resp["trigger_id"]
        );
        assert!(
            worst < Duration::from_millis(50),
            "fan-out through the balancer took {worst:?}: {each:?}"
        );
        assert_eq!(resp["recipients"], serde_json::json!(hosts));
    }
    // A recorder triggers its group through the replica it is not connected to: allowed, and
    // the recipients are all six, wherever they are connected.
    for (host, other) in [(&on.0[0], &cl.replicas[1]), (&on.1[0], &cl.replicas[0])] {
        let (resp, _, each) = crate::group::fire_and_time(
            &mut rxs,
            fire(&other.url, &recorder_token(host), "checkout"),
        )
        .await;
        println!("{host} through the other replica: each listener had it after {each:?}");
        assert_eq!(resp["recipients"], serde_json::json!(hosts));
        let view = get_json(
            &format!(
                "{}/v1/triggers/{}",
                cl.rr,
                resp["trigger_id"].as_str().unwrap()
            ),
            ADMIN,
        )
        .await;
        assert_eq!(view["missing"], serde_json::json!(hosts));
    }

    // kill -9 of replica 1: its recorders reconnect through the balancer to replica 2, whose
    // newer registrations replace the dead replica's in the catalog; a trigger reaches all.
    cl.replicas[0].kill_9();
    let mut view = (String::new(), Vec::new());
    for _ in 0..150 {
        view = view_of(&cl.replicas[1], "checkout").await;
        if view.1.len() == hosts.len() && view.1.iter().all(|h| h.1 == view.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        view.1.len() == hosts.len() && view.1.iter().all(|h| h.1 == view.0),
        "all on replica 2 after replica 1 died: {view:?}"
    );
    let (resp, _, each) =
        crate::group::fire_and_time(&mut rxs, fire(&cl.rr, ADMIN, "checkout")).await;
    println!("after replica 1 died: each listener had it after {each:?}");
    assert_eq!(resp["recipients"], serde_json::json!(hosts));
    let worst = each.iter().max().copied().unwrap();
    assert!(worst < Duration::from_millis(50), "{each:?}");
}
