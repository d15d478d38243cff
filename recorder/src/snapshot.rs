//! Turning a frozen epoch into a snapshot file: manifest (with statedump) plus one compressed
//! stream per CPU, written to a temporary name, synced, then renamed, so a reader never sees a
//! partial file.
//!
//! The records go from the frozen rings into zstd CPU by CPU, in batches
//! ([`FrozenRecords::records`]): the memory a snapshot takes is the compressor's and a batch's,
//! whatever the ring size. The manifest is written first with the coverage validated at the
//! freeze and rewritten in place (it is written with room to spare) in the rare case reading
//! found a slot overwritten since.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use schemas::file::{EXTENSION, SnapshotWriter};
use schemas::manifest::{FilterInfo, Manifest, RecorderInfo, TriggerInfo};

use crate::config::Config;
use crate::error::SnapshotError;
use crate::rings::FrozenRecords;
use crate::statedump;

/// A written snapshot.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Written {
    /// Path of the file.
    pub path: PathBuf,
    /// Its snapshot id.
    pub snapshot_id: String,
    /// Bytes on disk.
    pub bytes: u64,
    /// Records in the file.
    pub records: u64,
    /// Records overwritten before the freeze.
    pub overwritten: u64,
    /// Records lost (not completely written at the freeze).
    pub lost: u64,
}

pub use schemas::clock::{random_id, utc_stamp};

/// Whether `name` can start a snapshot file name: 1–128 of `[A-Za-z0-9._-]`, not starting with `.`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && !name.starts_with('.')
}

/// Writes `frozen` as a snapshot file in `dir`, named `NAME-YYYYmmddTHHMMSSZ-ID8.frs`.
pub fn write(
    frozen: &impl FrozenRecords,
    config: &Config,
    dir: &Path,
    name: Option<&str>,
    trigger: TriggerInfo,
) -> Result<Written, SnapshotError> {
    write_with_id(frozen, config, dir, name, trigger, random_id())
}

/// [`write`] with a given snapshot id: a triggered snapshot keeps the id its trigger was
/// answered with, so the hook's `{snapshot_id}`, the file's manifest and the collector's catalog
/// all name it the same way.
pub fn write_with_id(
    frozen: &impl FrozenRecords,
    config: &Config,
    dir: &Path,
    name: Option<&str>,
    trigger: TriggerInfo,
    snapshot_id: String,
) -> Result<Written, SnapshotError> {
    let name = name.unwrap_or("snapshot");
    if !valid_name(name) {
        return Err(SnapshotError::BadName(name.to_owned()));
    }
    let ncpu = frozen.coverage().len() as u32;
    let mut manifest = Manifest {
        snapshot_id: snapshot_id.clone(),
        name: name.to_owned(),
        frozen_realtime_ns: frozen.frozen_realtime_ns(),
        frozen_monotonic_ns: frozen.frozen_monotonic_ns(),
        host: statedump::host_info(&config.recorder.host_id, ncpu),
        clocks: statedump::clock_offsets(),
        recorder: RecorderInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            ring_slots: config.ring_packets().unwrap_or(0),
            record_size: schemas::RECORD_SIZE as u32,
            ring_bytes: config.ring_packets().unwrap_or(0) * schemas::compact::PACKET_SIZE as u64,
            classes: config.events.enabled(),
            filter: FilterInfo {
                pids: config.filter.pids.clone(),
                comms: config.filter.comms.clone(),
                cgroups: config.filter.cgroups.clone(),
                follow_children: config.filter.follow_children,
            },
        },
        trigger,
        coverage: frozen.coverage().to_vec(),
        // The capabilities the daemon keeps are effective only while the statedump runs.
        statedump: crate::daemon::caps::while_raised(|| statedump::statedump(config.statedump.fds)),
    };
    let werr = |path: &Path| {
        let path = path.to_owned();
        move |source| SnapshotError::Write { path, source }
    };
    flightrec_uplink::private::create_dir(dir).map_err(werr(dir))?;
    let file_name = format!(
        "{name}-{}-{}.{EXTENSION}",
        utc_stamp(frozen.frozen_realtime_ns()),
        &snapshot_id[..8]
    );
    let path = dir.join(&file_name);
    let tmp = dir.join(format!(".{file_name}.tmp"));
    let result = (|| {
        // Private from the first byte: the statedump holds command lines, which may hold secrets.
        let file = flightrec_uplink::private::create_file(&tmp).map_err(werr(&tmp))?;
        // Room for the coverage to be rewritten with a few more digits per CPU.
        let room = 64 + 64 * ncpu as usize;
        let mut w = SnapshotWriter::with_room(
            BufWriter::with_capacity(1 << 20, file),
            &manifest,
            config.recorder.compression_level,
            room,
        )?;
        let mut changed = false;
        for cpu in 0..ncpu {
            // The ring's own packets when they can go as they are (format 2: no decoding, a
            // third of the bytes to compress), else records in time order.
            let got = if frozen.has_packets(cpu) {
                let mut stream = w.begin_packet_stream(cpu)?;
                let got = frozen.packets(cpu, &mut |p, n| stream.write_packet(p, n))?;
                stream.finish()?;
                got
            } else {
                let mut stream = w.begin_stream(cpu)?;
                let got = frozen.records(cpu, &mut |recs| stream.write(recs))?;
                stream.finish()?;
                got
            };
            let c = &mut manifest.coverage[cpu as usize];
            let before = *c;
            got.apply_to(c);
            changed |= *c != before;
        }
        if changed {
            w.rewrite_manifest(&manifest)?;
        }
        let mut buf = w.finish()?;
        buf.flush().map_err(werr(&tmp))?;
        let file = buf.into_inner().map_err(|e| SnapshotError::Write {
            path: tmp.clone(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(werr(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(werr(&path))?;
        // The rename is durable once the directory is synced.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok::<_, SnapshotError>(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    Ok(Written {
        path,
        snapshot_id,
        bytes,
        records: manifest.coverage.iter().map(|c| c.records_kept).sum(),
        overwritten: manifest
            .coverage
            .iter()
            .map(|c| c.records_overwritten)
            .sum(),
        lost: manifest.coverage.iter().map(|c| c.records_lost).sum(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rings::Frozen;

    #[test]
    fn names() {
        assert!(valid_name("slow-request_42.v1"));
        assert!(!valid_name("../etc/passwd"));
        assert!(!valid_name(".hidden"));
        assert!(!valid_name(""));
        assert!(!valid_name("a b"));
    }

    /// Probe 5a: with umask 000 a snapshot was 0666 in a 0777 directory, and another user read
    /// the statedump's command lines (a `--db-password=...` among them).
    #[test]
    fn snapshot_files_are_not_world_readable_whatever_the_umask() {
        use std::os::unix::fs::MetadataExt;
        let base = std::env::temp_dir().join(format!("flightrec-snapmode-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let frozen = Frozen {
            cpus: vec![Vec::new()],
            coverage: vec![Default::default()],
            frozen_monotonic_ns: 1,
            frozen_realtime_ns: 1_700_000_000_000_000_000,
            kernel_frozen: false,
        };
        let trigger = TriggerInfo {
            source: "test".into(),
            reason: "modes".into(),
            fields: Default::default(),
        };
        let dir = base.join("spool");
        // SAFETY: umask has no preconditions; it is put back at once.
        let old = unsafe { libc::umask(0) };
        let w = write(&frozen, &Config::default(), &dir, Some("modes"), trigger);
        // SAFETY: as above.
        unsafe { libc::umask(old) };
        let w = w.unwrap();
        let file = std::fs::metadata(&w.path).unwrap().mode() & 0o777;
        let dirm = std::fs::metadata(&dir).unwrap().mode() & 0o777;
        assert_eq!((file, dirm), (0o640, 0o750), "{}", w.path.display());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
