//! lttng-analyses (through babeltrace 1) on the exported planted snapshot: syscall, irq, I/O
//! latency and scheduling statistics equal to what was planted.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

use super::{REALTIME_OFFSET, T0, export_planted, planted};
use crate::readers::{PYTHON, available, lttng_mi};

/// Cells of a result row as plain values: names, numbers, durations; processes as
/// `comm (tid)`.
fn cells(row: &Value) -> Vec<Value> {
    row.as_array()
        .unwrap()
        .iter()
        .map(|c| match c["class"].as_str().unwrap() {
            "process" => format!("{} ({})", c["name"].as_str().unwrap(), c["tid"]).into(),
            "irq" => c["nr"].clone(),
            "cpu" => c["id"].clone(),
            "syscall" | "disk" => c["name"].clone(),
            _ => c.get("value").cloned().unwrap_or(Value::Null),
        })
        .collect()
}

fn table<'a>(results: &'a [Value], class: &str) -> &'a Value {
    results
        .iter()
        .find(|r| {
            r["class"] == class
                || r["class"]["title"]
                    .as_str()
                    .is_some_and(|t| t.contains(class))
        })
        .unwrap_or_else(|| panic!("no {class} table in {results:?}"))
}

#[test]
fn lttng_analyses_agree_with_the_plant() {
    let test = "lttng_analyses_agree_with_the_plant";
    if !available(
        test,
        "lttng-analyses with python3-babeltrace",
        Command::new(PYTHON).args(["-c", "import lttnganalyses, babeltrace"]),
    ) {
        return;
    }
    let (_snap, out) = export_planted("analyses", &planted());
    let trace = out.join("kernel");
    let j = |v: serde_json::Value| v;

    // Per-thread syscall counts and min/avg/max latencies (ns).
    let r = lttng_mi("syscallstats-mi", &trace);
    let app: Vec<Vec<Value>> = table(&r, "app (100, TID: 100)")["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| cells(row)[..5].to_vec())
        .collect();
    assert_eq!(
        app,
        [
            vec![
                j("getppid".into()),
                j(2.into()),
                j(500.into()),
                j(650.0.into()),
                j(800.into())
            ],
            vec![
                j("write".into()),
                j(1.into()),
                j(10_000.into()),
                j(10_000.0.into()),
                j(10_000.into())
            ],
        ]
    );
    let db = &table(&r, "db (200, TID: 200)")["data"];
    assert_eq!(
        cells(&db[0])[..5],
        [
            j("fsync".into()),
            j(1.into()),
            j(10_000.into()),
            j(10_000.0.into()),
            j(10_000.into())
        ]
    );

    // Hard irq 42 twice (3 us, 1 us); NET_RX softirq once (2 us).
    let r = lttng_mi("irqstats-mi", &trace);
    let hard = &table(&r, "hard-stats")["data"];
    assert_eq!(hard.as_array().unwrap().len(), 1);
    assert_eq!(
        cells(&hard[0])[..5],
        [
            j(42.into()),
            j(2.into()),
            j(1000.into()),
            j(2000.0.into()),
            j(3000.into())
        ]
    );
    assert_eq!(hard[0][0]["name"], "eth0");
    let soft = &table(&r, "soft-stats")["data"];
    assert_eq!(
        cells(&soft[0])[..5],
        [
            j(3.into()),
            j(1.into()),
            j(2000.into()),
            j(2000.0.into()),
            j(2000.into())
        ]
    );

    // The write and fsync as I/O syscalls, the block write as a 5 us request on sda (8,0).
    let r = lttng_mi("iolatencystats-mi", &trace);
    let sys: BTreeMap<String, Vec<Value>> = table(&r, "syscall-latency-stats")["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let c = cells(row);
            (c[0].as_str().unwrap().to_owned(), c[1..5].to_vec())
        })
        .collect();
    assert_eq!(
        sys["Write"],
        [
            j(1.into()),
            j(10_000.into()),
            j(10_000.0.into()),
            j(10_000.into())
        ]
    );
    assert_eq!(
        sys["Sync"],
        [
            j(1.into()),
            j(10_000.into()),
            j(10_000.0.into()),
            j(10_000.into())
        ]
    );
    assert_eq!(sys["Read"][0], 0);
    let disk = &table(&r, "disk-latency-stats")["data"];
    assert_eq!(
        cells(&disk[0])[..5],
        [
            j("(8,0)".into()),
            j(1.into()),
            j(5000.into()),
            j(5000.0.into()),
            j(5000.into())
        ]
    );

    // One wakeup followed by its switch: db woken by app, 1 us later on CPU 1.
    let r = lttng_mi("schedlog-mi", &trace);
    let rows = r[0]["data"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let wake = T0 as i64 + 40_000 + REALTIME_OFFSET;
    assert_eq!(
        cells(&rows[0]),
        [
            j(wake.into()),
            j((wake + 1000).into()),
            j(1000.into()),
            j(120.into()),
            j(1.into()),
            j("db (200)".into()),
            j("app (100)".into())
        ]
    );
    // The human-readable log prints the same row.
    let o = Command::new(PYTHON)
        .args(["/usr/bin/lttng-schedlog", "--no-intersection"])
        .arg(&trace)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && text.contains("db (200)") && text.contains("app (100)"),
        "{text}"
    );
}
