//! Round trips and hostile inputs for the snapshot file format.

use std::io::Cursor;

use schemas::file::{FormatError, Snapshot, SnapshotWriter};
use schemas::manifest::{CpuCoverage, Manifest};
use schemas::{EventKind, RECORD_SIZE, Record, SyscallEntry};

fn records(cpu: u32, n: u64) -> Vec<Record> {
    (0..n)
        .map(|i| {
            let mut r = Record {
                seq: i + 1,
                ts_ns: 1_000 + i * 10,
                pid: 7,
                tid: 8,
                kind: EventKind::SyscallEntry as u16,
                cpu,
                ..Record::ZERO
            };
            r.set_payload(SyscallEntry {
                id: 110,
                args: [i, 0, 0, 0, 0, 0],
            });
            r
        })
        .collect()
}

fn manifest() -> Manifest {
    Manifest {
        snapshot_id: "0123456789abcdef0123456789abcdef".into(),
        name: "test".into(),
        coverage: vec![CpuCoverage {
            cpu: 0,
            records_kept: 100,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn file(streams: &[(u32, Vec<Record>)]) -> Vec<u8> {
    let mut w = SnapshotWriter::new(Vec::new(), &manifest(), 3).unwrap();
    for (cpu, recs) in streams {
        w.write_stream(*cpu, recs).unwrap();
    }
    w.finish().unwrap()
}

#[test]
fn round_trip() {
    let a = records(0, 100);
    let b = records(1, 3);
    let bytes = file(&[(0, a.clone()), (1, b.clone()), (2, vec![])]);
    let (m, streams) = Snapshot::read_all(&mut Cursor::new(&bytes)).unwrap();
    assert_eq!(m, manifest());
    assert_eq!(streams, vec![a, b, vec![]]);
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = file(&[(0, records(0, 50)), (1, records(1, 5))]);
    for len in 0..bytes.len() {
        let res = Snapshot::read_all(&mut Cursor::new(&bytes[..len]));
        assert!(
            res.is_err(),
            "truncated to {len} of {} bytes was accepted",
            bytes.len()
        );
    }
}

#[test]
fn every_single_byte_flip_is_caught() {
    // Metadata is covered by the trailer's CRC and compressed data by zstd's checksum, so a
    // flipped byte anywhere must be an error, never a panic or a silently different snapshot.
    // (zstd ignores a few bits of its entropy tables; a flip there decodes to the very same
    // records, which the checksum then confirms, so "same content" is accepted too.)
    let streams = [(0, records(0, 20)), (1, records(1, 3))];
    let bytes = file(&streams);
    let want: Vec<Vec<Record>> = streams.iter().map(|s| s.1.clone()).collect();
    let snap = Snapshot::read_index(&mut Cursor::new(&bytes)).unwrap();
    let in_data = |i: usize| {
        snap.streams
            .iter()
            .any(|s| (s.offset..s.offset + s.compressed_len).contains(&(i as u64)))
    };
    for i in 0..bytes.len() {
        for mask in [0x01, 0x41, 0x80] {
            let mut bad = bytes.clone();
            bad[i] ^= mask;
            if let Ok((m, got)) = Snapshot::read_all(&mut Cursor::new(&bad)) {
                assert!(
                    m == manifest() && got == want,
                    "flip {mask:#x} at byte {i} changed the snapshot silently"
                );
                assert!(
                    in_data(i),
                    "flip {mask:#x} at metadata byte {i} was accepted"
                );
            }
        }
    }
}

#[test]
fn hostile_lengths_are_rejected_without_allocating() {
    let mut bytes = file(&[(0, records(0, 2))]);
    // Manifest length of 2^63.
    let mut bad = bytes.clone();
    bad[16..24].copy_from_slice(&(1u64 << 63).to_le_bytes());
    assert!(matches!(
        Snapshot::read_all(&mut Cursor::new(&bad)),
        Err(FormatError::Corrupt(_))
    ));
    // Record count of 2^40 with a matching uncompressed length.
    let manifest_len = u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize;
    let sec = 24 + manifest_len;
    bytes[sec + 8..sec + 16].copy_from_slice(&(1u64 << 40).to_le_bytes());
    bytes[sec + 24..sec + 32].copy_from_slice(&((1u64 << 40) * RECORD_SIZE as u64).to_le_bytes());
    assert!(matches!(
        Snapshot::read_all(&mut Cursor::new(&bytes)),
        Err(FormatError::Corrupt(_))
    ));
}

#[test]
fn decompression_bomb_is_rejected() {
    // A section that declares one record but whose zstd frame inflates to 64 MiB of zeros.
    let good = file(&[(0, records(0, 1))]);
    let manifest_len = u64::from_le_bytes(good[16..24].try_into().unwrap()) as usize;
    let sec = 24 + manifest_len;
    let bomb = zstd::bulk::compress(&vec![0u8; 64 << 20], 19).unwrap();
    let mut bad = good[..sec].to_vec();
    bad.extend_from_slice(&1u32.to_le_bytes());
    bad.extend_from_slice(&0u32.to_le_bytes());
    bad.extend_from_slice(&1u64.to_le_bytes());
    bad.extend_from_slice(&(bomb.len() as u64).to_le_bytes());
    bad.extend_from_slice(&(RECORD_SIZE as u64).to_le_bytes());
    bad.extend_from_slice(&bomb);
    let end = bad.len() as u64;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&bad[..sec + 32]);
    bad.extend_from_slice(&0xFFFF_FFFFu32.to_le_bytes());
    bad.extend_from_slice(&1u32.to_le_bytes());
    bad.extend_from_slice(&end.to_le_bytes());
    bad.extend_from_slice(&crc.finalize().to_le_bytes());
    bad.extend_from_slice(&0u32.to_le_bytes());
    let err = Snapshot::read_all(&mut Cursor::new(&bad)).unwrap_err();
    assert!(
        err.to_string().contains("more than its declared records"),
        "{err}"
    );
}

#[test]
fn bad_magic_and_version() {
    let mut bytes = file(&[]);
    bytes[8] = 3;
    let err = Snapshot::read_all(&mut Cursor::new(&bytes)).unwrap_err();
    assert!(matches!(err, FormatError::UnsupportedVersion(3)));
    assert_eq!(
        err.to_string(),
        "unsupported snapshot format version 3 (this build reads versions 1 to 2)"
    );
    assert!(matches!(
        Snapshot::read_all(&mut Cursor::new(b"not a snapshot at all, no".as_slice())),
        Err(FormatError::BadMagic)
    ));
}

#[test]
fn trailing_garbage_and_duplicate_cpu_are_rejected() {
    let mut bytes = file(&[(0, records(0, 1))]);
    bytes.push(0);
    assert!(Snapshot::read_all(&mut Cursor::new(&bytes)).is_err());
    let dup = file(&[(0, records(0, 1)), (0, records(0, 1))]);
    assert!(Snapshot::read_all(&mut Cursor::new(&dup)).is_err());
}

/// A file written stream by stream in batches, with its manifest rewritten after the streams,
/// reads back exactly like one written from whole slices, and is checked just as strictly.
#[test]
fn streamed_sections_and_a_rewritten_manifest_round_trip() {
    let a = records(0, 10_000);
    let b = records(1, 7);
    let mut w = SnapshotWriter::with_room(Cursor::new(Vec::new()), &manifest(), 3, 128).unwrap();
    for (cpu, recs) in [(0, &a), (1, &b), (2, &Vec::new())] {
        let mut s = w.begin_stream(cpu).unwrap();
        for batch in recs.chunks(999) {
            s.write(batch).unwrap();
        }
        assert_eq!(s.records(), recs.len() as u64);
        s.finish().unwrap();
    }
    let mut m = manifest();
    m.coverage[0].records_kept = 10_000;
    m.coverage[0].records_lost = 12_345;
    w.rewrite_manifest(&m).unwrap();
    let bytes = w.finish().unwrap().into_inner();
    let (got, streams) = Snapshot::read_all(&mut Cursor::new(&bytes)).unwrap();
    assert_eq!(got, m);
    assert_eq!(streams, vec![a, b, vec![]]);
    for len in (0..bytes.len()).step_by(97) {
        assert!(Snapshot::read_all(&mut Cursor::new(&bytes[..len])).is_err());
    }
    // A patched section header is covered by the metadata checksum like any other.
    let snap = Snapshot::read_index(&mut Cursor::new(&bytes)).unwrap();
    let mut bad = bytes.clone();
    bad[snap.streams[1].offset as usize - 24] ^= 1; // record count of cpu 1
    assert!(Snapshot::read_all(&mut Cursor::new(&bad)).is_err());
}

#[test]
fn a_rewritten_manifest_that_does_not_fit_is_refused() {
    let mut w = SnapshotWriter::with_room(Cursor::new(Vec::new()), &manifest(), 3, 4).unwrap();
    let mut m = manifest();
    m.name = "a much longer name than the room left".into();
    assert!(matches!(
        w.rewrite_manifest(&m),
        Err(FormatError::Corrupt(_))
    ));
}

/// Packets as the recorder writes them into a file: the records of `recs` (in ring order)
/// encoded, numbered from 0 with lap tag 0, padded; a full timestamp opens each packet, and a
/// record after one of the same task in its packet leaves its task out.
fn packets_of(recs: &[Record]) -> Vec<(Vec<u8>, u64)> {
    use schemas::compact::{self, PACKET_HEADER_SIZE, PACKET_SIZE};
    let mut out: Vec<(Vec<u8>, u64)> = Vec::new();
    let mut cur: Option<(Vec<u8>, usize, u64)> = None;
    let mut last_task = None;
    for r in recs {
        let task = Some((r.tid, r.pid));
        let same = cur.is_some() && last_task == task;
        let mut b = compact::encode_record(r, false, same, 0, 1);
        if cur
            .as_ref()
            .is_some_and(|(_, off, _)| off + b.len() > PACKET_SIZE)
        {
            let (mut p, off, n) = cur.take().unwrap();
            compact::fill_pad(&mut p, off, 0);
            out.push((p, n));
            b = compact::encode_record(r, false, false, 0, 1);
        }
        last_task = task;
        let (p, off, n) = cur.get_or_insert_with(|| {
            let mut p = vec![0u8; PACKET_SIZE];
            p[..8].copy_from_slice(&(out.len() as u64 + 1).to_le_bytes());
            p[8..16].copy_from_slice(&r.ts_ns.to_le_bytes());
            (p, PACKET_HEADER_SIZE, 0)
        });
        p[*off..*off + b.len()].copy_from_slice(&b);
        *off += b.len();
        *n += 1;
    }
    if let Some((mut p, off, n)) = cur {
        compact::fill_pad(&mut p, off, 0);
        out.push((p, n));
    }
    out
}

/// A file of one packet stream; `lie` is added to the first packet's record count (a writer
/// that declares more or fewer records than its packets hold).
fn packet_file(cpu: u32, packets: &[(Vec<u8>, u64)], lie: i64) -> Vec<u8> {
    let mut w = SnapshotWriter::new(Cursor::new(Vec::new()), &manifest(), 3).unwrap();
    let mut s = w.begin_packet_stream(cpu).unwrap();
    for (i, (p, n)) in packets.iter().enumerate() {
        let n = if i == 0 {
            n.saturating_add_signed(lie)
        } else {
            *n
        };
        s.write_packet(p, n).unwrap();
    }
    s.finish().unwrap();
    w.finish().unwrap().into_inner()
}

/// Records of one CPU in ring order: every 50th written late, after the 3 that interrupted
/// its program, as nested programs do; 100,000 of them, several reorder batches.
fn ring_order(cpu: u32) -> Vec<Record> {
    let mut recs = records(cpu, 100_000);
    for chunk in recs.chunks_mut(50) {
        if chunk.len() == 50 {
            chunk[46..].rotate_right(1);
        }
    }
    recs
}

#[test]
fn packet_streams_decode_in_time_order() {
    // Three threads in runs of 1 to 7 records: records leave their task out within a run and
    // carry it where the task changes.
    let mut ring = ring_order(1);
    for (i, r) in ring.iter_mut().enumerate() {
        r.tid = 8 + ((i / (1 + i % 7)) % 3) as u32;
    }
    let packets = packets_of(&ring);
    assert!(packets.len() > 100);
    let bytes = packet_file(1, &packets, 0);
    let (_, streams) = Snapshot::read_all(&mut Cursor::new(&bytes)).unwrap();
    let mut want = ring.clone();
    want.sort_by_key(|r| r.ts_ns);
    assert_eq!(streams.len(), 1);
    let got = &streams[0];
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(
            (g.ts_ns, g.kind, g.tid, g.pid, g.cpu),
            (w.ts_ns, w.kind, w.tid, w.pid, 1)
        );
        assert_eq!(
            g.payload::<SyscallEntry>().args[0],
            w.payload::<SyscallEntry>().args[0]
        );
    }
    // The index says what the section holds.
    let snap = Snapshot::read_index(&mut Cursor::new(&bytes)).unwrap();
    assert!(snap.streams[0].packets);
    assert_eq!(snap.streams[0].record_count, ring.len() as u64);
}

#[test]
fn damaged_or_lying_packet_streams_are_errors() {
    let ring = ring_order(0);
    let packets = packets_of(&ring);
    let read = |bytes: &[u8]| Snapshot::read_all(&mut Cursor::new(bytes)).map(|_| ());
    // A record header of another lap in the middle of packet 3: the top byte of its seventh
    // record's header (the first record carries its task, 24 bytes; the others leave it out,
    // 16 bytes each).
    let mut bad = packets.clone();
    bad[3].0[16 + 24 + 16 * 5 + 7] ^= 0x80;
    let err = read(&packet_file(0, &bad, 0)).unwrap_err();
    assert!(
        err.to_string()
            .contains("packet 3 of cpu 0: damaged record"),
        "{err}"
    );
    // A packet out of its place.
    let mut bad = packets.clone();
    bad.swap(1, 2);
    let err = read(&packet_file(0, &bad, 0)).unwrap_err();
    assert!(err.to_string().contains("damaged packet header"), "{err}");
    // More records than declared, and fewer.
    for lie in [-1, 1] {
        let err = read(&packet_file(0, &packets, lie)).unwrap_err();
        assert!(err.to_string().contains("declared"), "{lie}: {err}");
    }
    // A record far older than the reorder window allows.
    let mut far = ring.clone();
    far[60_000].ts_ns = 5;
    let err = read(&packet_file(0, &packets_of(&far), 0)).unwrap_err();
    assert!(err.to_string().contains("out of time order"), "{err}");
    // A packet section in a format-1 file.
    let mut v1 = packet_file(0, &packets, 0);
    v1[8] = 1;
    assert!(read(&v1).is_err());
}

/// Packets of random bytes in a well-formed file (valid checksums, so the decoder goes past the
/// framing): every one decodes to an error or to records, never a panic or a hang. Half keep a
/// valid packet number and lap-0 headers, so the record walk itself sees the hostile bytes.
#[test]
fn random_packets_in_a_well_formed_file_never_panic() {
    use schemas::compact::{PACKET_SIZE, header};
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for case in 0..300 {
        let n = 1 + (next() % 3) as usize;
        let packets: Vec<(Vec<u8>, u64)> = (0..n)
            .map(|i| {
                let mut p: Vec<u8> = (0..PACKET_SIZE).map(|_| next() as u8).collect();
                if case % 2 == 0 {
                    p[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
                    // Record headers of lap 0 with random lengths, kinds and flags.
                    let mut off = 16;
                    while off + 8 <= PACKET_SIZE {
                        let w = next() & !(header::LAP_MASK << header::LAP_SHIFT);
                        p[off..off + 8].copy_from_slice(&w.to_le_bytes());
                        off += 8 * (1 + (next() % 12) as usize);
                    }
                }
                (p, next() % 300)
            })
            .collect();
        let bytes = packet_file(case % 4, &packets, 0);
        let _ = Snapshot::read_all(&mut Cursor::new(&bytes));
    }
}
