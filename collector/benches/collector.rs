//! Collector benchmarks (run by `bench/collector.sh`): ingest throughput on loopback through
//! the real uploader, catalog list/filter latency with 100k entries (SQLite) and with millions
//! in PostgreSQL (`catalog-pg`, given a database), and ingest through one replica against two
//! (`replicas`, given both, as `bench/collector_replicas.sh` starts them). Prints each number
//! with its target.

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

/// Uploads `files` through `url`, `uploaders` at a time, each file once; returns the seconds.
async fn upload_all(url: &str, files: &[(std::path::PathBuf, u64)], uploaders: usize) -> f64 {
    let cfg = CollectorConfig {
        url: url.into(),
        rate_limit: "0".into(),
        chunk_size: "8MiB".into(),
        ..Default::default()
    };
    let client = flightrec_uplink::http_client(&cfg).unwrap();
    let bucket = Arc::new(TokenBucket::new(0, 0));
    let queue = Arc::new(std::sync::Mutex::new(files.to_vec()));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..uploaders {
        let (client, cfg, bucket, queue) =
            (client.clone(), cfg.clone(), bucket.clone(), queue.clone());
        tasks.push(tokio::spawn(async move {
            // Bounded: each task takes files off one finite list until it is empty.
            while let Some((p, _)) = { queue.lock().unwrap().pop() } {
                let out = flightrec_uplink::spool::upload_file(&client, &cfg, &bucket, &p, |_| {})
                    .await
                    .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                assert!(
                    matches!(out, flightrec_uplink::spool::Outcome::Uploaded { .. }),
                    "{}: {out:?}",
                    p.display()
                );
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed().as_secs_f64()
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Ingest through one replica (`FLIGHTREC_BENCH_ONE`) against two behind a balancer
/// (`FLIGHTREC_BENCH_TWO`), each on its own database and archive, so the same files are new
/// to both. Each round generates fresh snapshots and uploads them to both, the order
/// alternating between rounds.
async fn replicas() {
    let (Ok(one), Ok(two)) = (
        std::env::var("FLIGHTREC_BENCH_ONE"),
        std::env::var("FLIGHTREC_BENCH_TWO"),
    ) else {
        println!(
            "replicas: skipped: FLIGHTREC_BENCH_ONE and FLIGHTREC_BENCH_TWO are not set \
             (bench/collector_replicas.sh sets them)"
        );
        return;
    };
    let rounds: u64 = env_or("FLIGHTREC_BENCH_ROUNDS", 3);
    let nfiles: u64 = env_or("FLIGHTREC_BENCH_FILES", 16);
    let uploaders: usize = env_or("FLIGHTREC_BENCH_UPLOADERS", 4);
    let records: usize = env_or("FLIGHTREC_BENCH_RECORDS", 90_000);
    let mut rates: [Vec<f64>; 2] = Default::default();
    for round in 0..rounds {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<_> = (0..nfiles)
            .map(|i| {
                let p = dir.path().join(format!("s{i}.frs"));
                let n = 0x1_0000 * (round + 1) + i;
                (p.clone(), snapshot(&p, n, records))
            })
            .collect();
        let total: u64 = files.iter().map(|f| f.1).sum();
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for which in order {
            let url = [&one, &two][which];
            let secs = upload_all(url, &files, uploaders).await;
            let mb_s = total as f64 / secs / 1e6;
            println!(
                "replicas: round {}, {} replica{}: {} snapshots, {:.1} MB in {secs:.2} s = \
                 {mb_s:.1} MB/s",
                round + 1,
                which + 1,
                if which == 0 { "" } else { "s" },
                files.len(),
                total as f64 / 1e6
            );
            rates[which].push(mb_s);
        }
    }
    // Each round's ratio compares runs of the same files close in time; their median is the
    // figure, as the machine's other load moves both runs of a round alike.
    let mut ratios: Vec<f64> = rates[1].iter().zip(&rates[0]).map(|(b, a)| b / a).collect();
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    let (m1, m2, mr) = (
        median(&mut rates[0]),
        median(&mut rates[1]),
        median(&mut ratios),
    );
    println!(
        "replicas: median of {rounds} rounds: 1 replica {m1:.1} MB/s, 2 replicas {m2:.1} MB/s; \
         ratio 2/1 per round {}, median {mr:.2}",
        shown.join(" ")
    );
}

async fn ingest() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.storage.data_dir = dir.path().join("data");
    config.server.listen = "127.0.0.1:0".into();
    // No tokens on loopback, as the replicas bench runs its collectors.
    config.auth.open = true;
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
    // Two uploads at a time (two recorders), as many as this machine has cores.
    let secs = upload_all(&url, &files, 2).await;
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
    time_n("catalog 100k", 30, label, catalog, q);
}

fn time_n(what: &str, n: usize, label: &str, catalog: &dyn Catalog, q: &Query) {
    let mut samples: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            let page = catalog.list(q).unwrap();
            std::hint::black_box(page);
            t.elapsed()
        })
        .collect();
    samples.sort();
    let p50 = samples[samples.len() / 2];
    let p99 = samples[(samples.len() * 99).div_ceil(100) - 1];
    let max = samples[samples.len() - 1];
    println!(
        "{what}, {label}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (target p99 < 50 ms: {})",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
        if p99 < Duration::from_millis(50) {
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

/// The same queries on the PostgreSQL catalog at `FLIGHTREC_BENCH_PG_URL`, filled (once) with
/// `FLIGHTREC_BENCH_PG_ROWS` entries (default 1 M; the figure is 10 M) generated by
/// the server itself; p99 of 200 pages of 50 each.
fn catalog_pg() {
    use flightrec_collector::catalog::postgres::{PgCatalog, PoolOptions};
    let Ok(url) = std::env::var("FLIGHTREC_BENCH_PG_URL") else {
        println!(
            "catalog-pg: skipped: FLIGHTREC_BENCH_PG_URL is not set (bench/collector_pg.sh sets it)"
        );
        return;
    };
    let rows: i64 = std::env::var("FLIGHTREC_BENCH_PG_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let c = PgCatalog::open(&url, PoolOptions::default()).unwrap();
    let have = c.totals().unwrap().0 as i64;
    if have < rows {
        let t = Instant::now();
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let mut from = have;
        while from < rows {
            let to = (from + 1_000_000).min(rows) - 1;
            client.execute(PG_FILL, &[&from, &to]).unwrap();
            client.execute(PG_FILL_TAGS, &[&from, &to]).unwrap();
            from = to + 1;
            println!("catalog-pg: {from} entries");
        }
        client.batch_execute("ANALYZE").unwrap();
        println!(
            "catalog-pg: {} entries generated in {:.0} s",
            rows - have,
            t.elapsed().as_secs_f64()
        );
    }
    let what = format!("catalog-pg {}", c.totals().unwrap().0);
    let t0 = 1_795_000_000_000_000_000u64;
    let span = rows as u64 * 30_000_000_000;
    let queries = [
        ("newest 50", Query::default()),
        (
            "host filter",
            Query {
                host: Some("host-042".into()),
                ..Default::default()
            },
        ),
        (
            "source + tag",
            Query {
                source: Some("hook".into()),
                tag: Some("slow".into()),
                ..Default::default()
            },
        ),
        (
            "time range (one day, mid-way)",
            Query {
                from_ns: Some(t0 + span / 2),
                to_ns: Some(t0 + span / 2 + 86_400_000_000_000),
                ..Default::default()
            },
        ),
        (
            "reason substring",
            Query {
                reason: Some("/api/7 ".into()),
                ..Default::default()
            },
        ),
        (
            "group",
            Query {
                group: Some("g3".into()),
                ..Default::default()
            },
        ),
    ];
    for (label, q) in &queries {
        time_n(&what, 200, label, &c, q);
    }
    let mut q = Query::default();
    for _ in 0..1000 {
        let p = c.list(&q).unwrap();
        q.cursor = p.next_cursor;
    }
    time_n(&what, 200, "page 1001 by cursor", &c, &q);
}

/// Entries `$1..=$2` as `entries` makes them, generated in the database.
const PG_FILL: &str = "
INSERT INTO snapshots (snapshot_id, frozen_realtime_ns, host_id, trigger_source, trigger_reason,
                       trigger_id, group_name, bytes, entry)
SELECT id, ts, host, src, reason, NULL, grp, bytes, json_build_object(
    'snapshot_id', id, 'name', 'bench', 'host_id', host, 'hostname', host,
    'kernel_release', '6.1.0', 'frozen_realtime_ns', ts, 'frozen_monotonic_ns', 0,
    'trigger_source', src, 'trigger_reason', reason, 'trigger_id', NULL, 'group', grp,
    'tags', CASE WHEN i % 10 = 0 THEN json_build_array('slow', 'dc' || i % 3)
                 ELSE json_build_array('dc' || i % 3) END,
    'ncpu', 2, 'records', 0, 'overwritten', 0, 'lost', 0, 'oldest_ns', 0, 'newest_ns', 0,
    'realtime_minus_monotonic_ns', 0, 'clock_uncertainty_ns', 0, 'host_clock_offset_ns', NULL,
    'bytes', bytes, 'sha256', '', 'archive_key', '', 'received_realtime_ns', ts)::text
FROM (SELECT i, lpad(to_hex(i), 32, '0') AS id,
             1795000000000000000 + i * 30000000000 AS ts,
             'host-' || lpad((i % 200)::text, 3, '0') AS host,
             (ARRAY['hook', 'rule', 'cli', 'group'])[i % 4 + 1] AS src,
             'GET /api/' || i % 50 || ' took ' || 100 + i % 900 || ' ms' AS reason,
             CASE WHEN i % 4 = 3 THEN 'g' || i % 7 END AS grp,
             1000000 + i AS bytes
      FROM generate_series($1::BIGINT, $2::BIGINT) AS i) AS s";

const PG_FILL_TAGS: &str = "
INSERT INTO tags (tag, snapshot_id)
SELECT 'dc' || i % 3, lpad(to_hex(i), 32, '0') FROM generate_series($1::BIGINT, $2::BIGINT) AS i
UNION ALL
SELECT 'slow', lpad(to_hex(i), 32, '0') FROM generate_series($1::BIGINT, $2::BIGINT) AS i
WHERE i % 10 = 0";

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
    if only.is_none_or(|o| o == "catalog-pg") {
        catalog_pg();
    }
    if only.is_none_or(|o| o == "replicas") {
        rt.block_on(replicas());
    }
}
