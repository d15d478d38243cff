//! The parallel merge (`parallel::open`, which `analyze` reads with) against the sequential
//! one (`dump::open`): the same events in the same order, ties across CPUs included, and the
//! same error at the same place when a stream is damaged.

use std::path::{Path, PathBuf};

use flightrec_reader::synth::{SnapshotBuilder, Task};

fn file(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("parallel");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{name}.frs"))
}

/// Four CPUs, many batches each (more than the channel holds), and timestamps that tie across
/// CPUs every few events.
fn big(path: &Path) {
    let mut b = SnapshotBuilder::new(4);
    for cpu in 0..4u32 {
        let t: Task = (100 + cpu, 100 + cpu, "app");
        for i in 0..9_000u64 {
            // Every CPU's calls start on the same even microseconds: ties.
            let start = 1_000_000 + i * 2_000 + u64::from(cpu % 2) * (i % 3);
            b.syscall(cpu, t, 110, i, 0, start, start + 700 + u64::from(cpu));
        }
    }
    b.write(path).unwrap();
}

fn sequential(path: &Path) -> Vec<String> {
    let (_, evs) = flightrec_reader::dump::open(path).unwrap();
    evs.map(|e| match e {
        Ok(e) => e.to_json().to_string(),
        Err(e) => format!("error: {e}"),
    })
    .collect()
}

fn parallel(path: &Path) -> Vec<String> {
    let (_, evs) = flightrec_reader::parallel::open(path).unwrap();
    evs.map(|e| match e {
        Ok(e) => e.to_json().to_string(),
        Err(e) => format!("error: {e}"),
    })
    .collect()
}

#[test]
fn the_parallel_merge_yields_the_sequential_order() {
    let path = file("order");
    big(&path);
    let want = sequential(&path);
    assert_eq!(want.len(), 4 * 9_000 * 2);
    let got = parallel(&path);
    assert!(
        got == want,
        "the parallel merge differs from the sequential one"
    );
}

#[test]
fn a_damaged_stream_fails_at_the_same_event_in_both_merges() {
    let path = file("damaged");
    big(&path);
    // Flip bytes in the middle of the file: inside a compressed stream, past the index.
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() / 2;
    for b in &mut bytes[at..at + 64] {
        *b ^= 0xa5;
    }
    let damaged = file("damaged-2");
    std::fs::write(&damaged, &bytes).unwrap();
    let want = sequential(&damaged);
    assert!(
        want.last().is_some_and(|l| l.starts_with("error: ")),
        "the damage went unnoticed: {:?}",
        want.last()
    );
    assert_eq!(parallel(&damaged), want);
}

#[test]
fn an_early_drop_stops_the_decoding_threads() {
    let path = file("drop");
    big(&path);
    let threads = || {
        std::fs::read_dir("/proc/self/task")
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let before = threads();
    for _ in 0..5 {
        let (_, mut evs) = flightrec_reader::parallel::open(&path).unwrap();
        assert!(evs.next().is_some());
    }
    // Each dropped merge's threads see their channel closed at their next send and end.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while threads() > before && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(threads() <= before, "decoding threads outlive their merge");
}
