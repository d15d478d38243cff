//! `GET /metrics` and alerts that take snapshots, against the real thing: Debian's
//! `prometheus` scrapes the daemon and `promtool` checks its exposition; a Prometheus rule fires
//! through Debian's `prometheus-alertmanager` into the hook's `/v1/alertmanager`, and the daemon
//! takes exactly one snapshot for the alert, with its labels as tags.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Daemon, TOKEN, free_port, read, snapshots_in, status};
use crate::readers::available;
use crate::util::{Privileged, privileged, scratch_dir};

const METRICS_TOKEN: &str = "metrics-test-token-0123";

/// One GET; the status and the body as text.
pub(super) fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (code, body)
}

/// The value of the sample `name{labels}` (labels as written in the exposition).
pub(super) fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A child process killed on drop.
pub(super) struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `f` every 200 ms until it returns something, or fails after `secs` saying `what`.
pub(super) fn until<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} within {secs} s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub(super) fn start_prometheus(dir: &Path, config: &str) -> (Server, SocketAddr) {
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let port = free_port();
    let child = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .expect("start prometheus");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let server = Server(child);
    until(30, "prometheus ready", || {
        TcpStream::connect(addr)
            .ok()
            .and_then(|_| (get(addr, "/-/ready", None).0 == 200).then_some(()))
    });
    (server, addr)
}

/// A PromQL instant query's result vector.
pub(super) fn query(prom: SocketAddr, q: &str) -> Vec<Value> {
    let enc: String = q
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (code, body) = get(prom, &format!("/api/v1/query?query={enc}"), None);
    assert_eq!(code, 200, "query {q}: {body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// The privileges `test` needs when it can run: root, BTF, and `tool` (from the Debian package
/// `what`) answering `--version`.
pub(super) fn can_run(test: &str, what: &str, tool: &str) -> Option<Privileged> {
    let p = privileged(test)?;
    available(test, what, Command::new(tool).arg("--version")).then_some(p)
}

/// Where the daemon serves `GET /metrics`.
pub(super) fn metrics_addr(d: &Daemon) -> SocketAddr {
    status(&d.config)["metrics_listen"]
        .as_str()
        .expect("metrics on")
        .parse()
        .unwrap()
}

/// The YAML block of docs/metrics.md whose first line is `# FILE`, with `# FILE` dropped.
fn doc_yaml(file: &str) -> String {
    let doc = include_str!("../../../docs/metrics.md");
    let head = format!("```yaml\n# {file}\n");
    let start = doc
        .find(&head)
        .unwrap_or_else(|| panic!("no {file} in docs/metrics.md"))
        + head.len();
    let len = doc[start..].find("```").expect("closed block");
    doc[start..start + len].to_owned()
}

/// Runs `tool args… FILE` on `text` written to `dir/name`; fails with its output unless it
/// succeeds.
fn check_file(tool: &str, args: &[&str], dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let out = Command::new(tool).args(args).arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "{tool} {args:?} on the docs' {name}: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn metrics_pass_promtool_and_a_real_prometheus_scrapes_them() {
    let test = "metrics_pass_promtool_and_a_real_prometheus_scrapes_them";
    let Some(_p) = can_run(
        test,
        "prometheus and promtool (Debian package prometheus)",
        "promtool",
    ) else {
        return;
    };
    let d = Daemon::start("metrics", |c| {
        c.metrics.listen = "127.0.0.1:0".into();
        c.metrics.token = METRICS_TOKEN.into();
    });
    let st = status(&d.config);
    let addr = metrics_addr(&d);

    // One hook call, to be counted by status code.
    let (code, _) = d.post(r#"{"reason":"metrics test"}"#);
    assert_eq!(code, 202);
    assert_eq!(get(addr, "/metrics", None).0, 401, "the token is asked for");
    assert_eq!(get(addr, "/metrics", Some("wrong-token-0123456")).0, 401);
    let (code, text) = get(addr, "/metrics", Some(METRICS_TOKEN));
    assert_eq!(code, 200, "{text}");

    // promtool finds nothing to say about the exposition.
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        sample(&text, "flightrec_events_written_total{cpu=\"0\"}").is_some_and(|v| v > 0.0),
        "{text}"
    );
    // The in-kernel histograms are on with the metrics, and promtool read them above.
    for family in [
        "flightrec_runqueue_latency_seconds histogram",
        "flightrec_preemptions_total counter",
        "flightrec_block_latency_seconds histogram",
        "flightrec_syscall_latency_seconds histogram",
        "flightrec_hardirq_seconds histogram",
        "flightrec_softirq_seconds histogram",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family}\n")),
            "{family}: {text}"
        );
    }
    assert!(text.contains("flightrec_syscall_latency_seconds_bucket{syscall=\""));
    assert_eq!(
        sample(&text, "flightrec_hook_requests_total{code=\"202\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "flightrec_triggers_total{source=\"hook\",outcome=\"admitted\"}"
        ),
        Some(1.0),
        "{text}"
    );

    // A real Prometheus scrapes it with the token and sees events counted on every CPU.
    let dir = scratch_dir("metrics-prometheus");
    // The alert rules docs/metrics.md proposes are valid.
    let rules = doc_yaml("/etc/prometheus/rules/flightrec.yml");
    check_file("promtool", &["check", "rules"], &dir, "rules.yml", &rules);
    std::fs::write(dir.join("token"), METRICS_TOKEN).unwrap();
    let (_prom, prom) = start_prometheus(
        &dir,
        &format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             scrape_configs:\n  - job_name: flightrec\n    authorization:\n      \
             credentials_file: {}\n    static_configs:\n      - targets: ['{addr}']\n",
            dir.join("token").display()
        ),
    );
    let ncpu = st["cpus"].as_array().unwrap().len();
    let rows = until(30, "prometheus scraped the recorder", || {
        let r = query(prom, "flightrec_events_written_total");
        (r.len() == ncpu).then_some(r)
    });
    assert!(rows.iter().all(|r| r["metric"]["job"] == "flightrec"));
    let up = query(prom, "up{job=\"flightrec\"}");
    assert_eq!(up[0]["value"][1], "1");
}

#[test]
fn an_alert_through_alertmanager_takes_exactly_one_snapshot_with_its_labels() {
    let test = "an_alert_through_alertmanager_takes_exactly_one_snapshot_with_its_labels";
    let Some(_p) = privileged(test) else {
        return;
    };
    if !available(
        test,
        "prometheus (Debian package prometheus)",
        Command::new("prometheus").arg("--version"),
    ) || !available(
        test,
        "alertmanager (Debian package prometheus-alertmanager)",
        Command::new("prometheus-alertmanager").arg("--version"),
    ) {
        return;
    }
    let d = Daemon::start("alerts", |c| {
        c.metrics.listen = "127.0.0.1:0".into();
    });
    let st = status(&d.config);
    let metrics = st["metrics_listen"]
        .as_str()
        .expect("metrics on")
        .to_owned();
    let dir = scratch_dir("alerts-servers");
    std::fs::write(dir.join("hook.token"), TOKEN).unwrap();
    // The receiver docs/metrics.md proposes is valid (its token file here).
    let receiver = doc_yaml("/etc/prometheus/alertmanager.yml").replace(
        "/etc/flightrec/hook.token",
        &dir.join("hook.token").display().to_string(),
    );
    check_file("amtool", &["check-config"], &dir, "receiver.yml", &receiver);

    // Alertmanager: every alert to the hook, re-sent often, so duplicates do arrive.
    let am_port = free_port();
    std::fs::write(
        dir.join("alertmanager.yml"),
        format!(
            "route:\n  receiver: flightrec\n  group_by: [alertname]\n  group_wait: 0s\n  \
             group_interval: 1s\n  repeat_interval: 2s\nreceivers:\n  - name: flightrec\n    \
             webhook_configs:\n      - url: http://{}/v1/alertmanager\n        max_alerts: 64\n        \
             http_config:\n          authorization:\n            credentials_file: {}\n",
            d.hook,
            dir.join("hook.token").display()
        ),
    )
    .unwrap();
    let am = Command::new("prometheus-alertmanager")
        .arg(format!(
            "--config.file={}",
            dir.join("alertmanager.yml").display()
        ))
        .arg(format!("--storage.path={}", dir.join("am").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
        // No gossip: it would listen on every address.
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("alertmanager.log")).unwrap())
        .spawn()
        .expect("start alertmanager");
    let _am = Server(am);

    // Prometheus scrapes the recorder and fires a rule on one of its in-kernel histograms: the
    // 99th percentile syscall latency is above zero as soon as anything makes a syscall.
    std::fs::write(
        dir.join("rules.yml"),
        "groups:\n  - name: flightrec\n    rules:\n      - alert: RecorderBusy\n        \
         expr: histogram_quantile(0.99, sum by (le) \
         (rate(flightrec_syscall_latency_seconds_bucket[5s]))) > 0\n        for: 0s\n        \
         labels: {severity: page, team: storage}\n        \
         annotations: {summary: the recorder records}\n",
    )
    .unwrap();
    let (_prom, prom) = start_prometheus(
        &dir,
        &format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             rule_files: ['{}']\n\
             alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{am_port}']\n\
             scrape_configs:\n  - job_name: flightrec\n    static_configs:\n      - targets: ['{metrics}']\n",
            dir.join("rules.yml").display()
        ),
    );
    until(60, "the rule fired in prometheus", || {
        (!query(
            prom,
            "ALERTS{alertname=\"RecorderBusy\",alertstate=\"firing\"}",
        )
        .is_empty())
        .then_some(())
    });
    let first = until(60, "a snapshot for the alert", || {
        snapshots_in(d.spool())
            .into_iter()
            .find(|p| read(p).0.trigger.source == "alert")
    });
    // Alertmanager re-sends the firing alert every few seconds: each is a duplicate.
    until(30, "a re-sent alert suppressed as a duplicate", || {
        let st = status(&d.config);
        st["triggers"]["by_source"]["alert"]["suppressed"]["duplicate"]
            .as_u64()
            .filter(|&n| n >= 1)
    });
    let alert_snaps: Vec<_> = snapshots_in(d.spool())
        .into_iter()
        .filter(|p| read(p).0.trigger.source == "alert")
        .collect();
    assert_eq!(
        alert_snaps,
        vec![first.clone()],
        "one snapshot for one alert"
    );
    let (m, _) = read(&first);
    assert_eq!(m.trigger.reason, "RecorderBusy");
    let tags = &m.trigger.fields["tags"];
    assert_eq!(tags["alertname"], "RecorderBusy");
    assert_eq!(tags["severity"], "page");
    assert_eq!(tags["team"], "storage");
    assert!(
        !m.trigger.fields["alert"]["fingerprint"]
            .as_str()
            .unwrap_or("")
            .is_empty()
    );
    assert_eq!(
        m.trigger.fields["alert"]["annotations"]["summary"],
        "the recorder records"
    );
}
