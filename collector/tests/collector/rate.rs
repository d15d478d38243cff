//! The upload rate limit, measured where the bytes arrive: the collector's received-bytes
//! counter, sampled every few milliseconds over more than 10 s.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::util::{Server, bulk, upload};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_holds_within_5_percent_over_10_s() {
    // On the embedded catalog in both runs of the suite: this measures the uploader's pacing,
    // and on PostgreSQL every chunk also commits its bytes to the shared catalog, whose
    // latency on a loaded machine would show here as pacing error (the bucket does not bank
    // the time a chunk waits for its acknowledgement).
    let srv = Server::start(|c| c.catalog.url = String::new()).await;
    let rate = 512u64 << 10;
    let (path, _) = bulk(srv.dir.path(), 77, "web-1", 46_000);
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size > 11 * rate, "file of {size} bytes lasts over 10 s");
    let mut cfg = srv.client_config("");
    cfg.rate_limit = "512KiB".into();
    cfg.chunk_size = "128KiB".into();
    let up = tokio::spawn(async move { upload(&cfg, &path).await });
    let counter = &srv.state.metrics.received_bytes;
    let mut samples: Vec<(Instant, u64)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !up.is_finished() && Instant::now() < deadline {
        let b = counter.load(Ordering::Relaxed);
        if samples.last().is_none_or(|(_, last)| *last != b) {
            samples.push((Instant::now(), b));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    up.await.unwrap().unwrap();
    // From the first chunk's arrival to the last's: whole chunks paced in between.
    let (t0, b0) = samples[1];
    let (t1, b1) = *samples.last().unwrap();
    let secs = t1.duration_since(t0).as_secs_f64();
    let measured = (b1 - b0) as f64 / secs;
    println!(
        "rate limit {rate} B/s: measured {measured:.0} B/s over {secs:.2} s ({:+.2} %)",
        100.0 * (measured / rate as f64 - 1.0)
    );
    assert!(secs >= 10.0, "measured over {secs} s");
    assert!(
        (measured / rate as f64 - 1.0).abs() <= 0.05,
        "measured {measured:.0} B/s against a limit of {rate}"
    );
}
