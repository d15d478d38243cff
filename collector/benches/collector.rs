//! Collector benchmarks (run by `bench/collector.sh`): ingest throughput on loopback through
//! the real uploader, and catalog list/filter latency with 100k entries. Prints each number
//! with its target from DESIGN.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flightrec_collector::catalog::{Catalog, Entry, Query};
use flightrec_collector::config::Config;
use flightrec_uplink::CollectorConfig;
use flightrec_uplink::bucket::TokenBucket;
use schemas::Record;
use schemas::file::SnapshotWriter;

fn snapshot(path: &std::path::Path, n: u64, records: usize) -> u64 {
    let mut b = flightrec_reader::synth::SnapshotBuilder::new(2);
    b.manifest.snapshot_id = format!("{:032x}", 0xbe00 + n);
    b.manifest.host.host_id = "bench".into();
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut w = SnapshotWriter::new(file, &b.manifest, 1).unwrap();
    for cpu in 0..2 {
        // Half random, half regular payload: compresses about as real event data does.
        let recs: Vec<Record> = (0..records)
            .map(|i| {
                let mut r = Record::ZERO;
                r.seq = i as u64 + 1;
                r.ts_ns = i as u64 * 977;
                r.cpu = cpu;
                r.kind = 1;
                for p in r.payload.iter_mut().take(5) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *p = x;
                }
                r
            })
            .collect();
        w.write_stream(cpu, &recs).unwrap();
    }
    let mut f = w.finish().unwrap();
    std::io::Write::flush(&mut f).unwrap();
    std::fs::metadata(path).unwrap().len()
}

async fn ingest() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.storage.data_dir = dir.path().join("data");
    config.server.listen = "127.0.0.1:0".into();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let state = flightrec_collector::AppState::open(config).unwrap();
    tokio::spawn(flightrec_collector::serve(
        state.clone(),
        listener,
        std::future::pending(),
    ));
    let files: Vec<_> = (0..6)
        .map(|n| {
            let p = dir.path().join(format!("s{n}.frs"));
            let size = snapshot(&p, n, 360_000);
            (p, size)
        })
        .collect();
    let total: u64 = files.iter().map(|f| f.1).sum();
    let cfg = CollectorConfig {
        url,
        rate_limit: "0".into(),
        chunk_size: "8MiB".into(),
        ..Default::default()
    };
    let client = flightrec_uplink::http_client(&cfg).unwrap();
    let bucket = Arc::new(TokenBucket::new(0, 0));
    // Two uploads at a time (two recorders), as many as this machine has cores.
    let start = Instant::now();
    let mut tasks = Vec::new();
    for pair in files.chunks(files.len() / 2) {
        let (client, cfg, bucket) = (client.clone(), cfg.clone(), bucket.clone());
        let pair = pair.to_vec();
        tasks.push(tokio::spawn(async move {
            for (p, _) in pair {
                flightrec_uplink::spool::upload_file(&client, &cfg, &bucket, &p, |_| {})
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let mb_s = total as f64 / secs / 1e6;
    println!(
        "ingest: {} snapshots, {:.1} MB in {secs:.2} s = {mb_s:.0} MB/s (target >= 200 MB/s: {})",
        files.len(),
        total as f64 / 1e6,
        if mb_s >= 200.0 { "met" } else { "MISSED" }
    );
    assert_eq!(state.catalog.totals().unwrap().0, files.len() as u64);
}

fn entries(n: u64) -> Vec<Entry> {
    let t0 = 1_795_000_000_000_000_000u64;
    (0..n)
        .map(|i| Entry {
            snapshot_id: format!("{:032x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            name: "bench".into(),
            host_id: format!("host-{:03}", i % 200),
            frozen_realtime_ns: t0 + i * 30_000_000_000,
            trigger_source: ["hook", "rule", "cli", "group"][(i % 4) as usize].into(),
            trigger_reason: format!("GET /api/{} took {} ms", i % 50, 100 + i % 900),
            tags: if i % 10 == 0 {
                vec!["slow".into(), format!("dc{}", i % 3)]
            } else {
                vec![format!("dc{}", i % 3)]
            },
            group: (i % 4 == 3).then(|| format!("g{}", i % 7)),
            bytes: 1_000_000 + i,
            ..Default::default()
        })
        .collect()
}

fn time(label: &str, catalog: &dyn Catalog, q: &Query) {
    let mut samples: Vec<Duration> = (0..30)
        .map(|_| {
            let t = Instant::now();
            let page = catalog.list(q).unwrap();
            std::hint::black_box(page);
            t.elapsed()
        })
        .collect();
    samples.sort();
    let p50 = samples[samples.len() / 2];
    let max = samples[samples.len() - 1];
    println!(
        "catalog 100k, {label}: p50 {:.2} ms, max {:.2} ms (target < 50 ms: {})",
        p50.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
        if max < Duration::from_millis(50) {
            "met"
        } else {
            "MISSED"
        }
    );
}

fn catalog() {
    let dir = tempfile::tempdir().unwrap();
    let c = flightrec_collector::catalog::sqlite::SqliteCatalog::open(&dir.path().join("c.db"))
        .unwrap();
    let t = Instant::now();
    for chunk in entries(100_000).chunks(10_000) {
        c.insert_many(chunk).unwrap();
    }
    println!(
        "catalog: 100k entries inserted in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let t0 = 1_795_000_000_000_000_000u64;
    time("newest 50", &c, &Query::default());
    time(
        "host filter",
        &c,
        &Query {
            host: Some("host-042".into()),
            ..Default::default()
        },
    );
    time(
        "source + tag",
        &c,
        &Query {
            source: Some("hook".into()),
            tag: Some("slow".into()),
            ..Default::default()
        },
    );
    time(
        "time range (one day)",
        &c,
        &Query {
            from_ns: Some(t0 + 10_000 * 30_000_000_000),
            to_ns: Some(t0 + 10_000 * 30_000_000_000 + 86_400_000_000_000),
            ..Default::default()
        },
    );
    time(
        "reason substring",
        &c,
        &Query {
            reason: Some("/api/7 ".into()),
            ..Default::default()
        },
    );
    time(
        "group",
        &c,
        &Query {
            group: Some("g3".into()),
            ..Default::default()
        },
    );
    // Deep pagination: the 1000th page through the cursor.
    let mut q = Query::default();
    for _ in 0..1000 {
        let p = c.list(&q).unwrap();
        q.cursor = p.next_cursor;
    }
    time("page 1001 by cursor", &c, &q);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let only = args.iter().skip(1).find(|a| !a.starts_with('-'));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if only.is_none_or(|o| o == "ingest") {
        rt.block_on(ingest());
    }
    if only.is_none_or(|o| o == "catalog") {
        catalog();
    }
}
