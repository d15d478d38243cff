//! Arbitrary bytes into the snapshot decoder: it must return an error or a snapshot, never
//! panic, hang or allocate without bound; every record it yields must decode or be refused.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use schemas::event::Event;
use schemas::file::Snapshot;

fuzz_target!(|data: &[u8]| {
    if let Ok((_manifest, streams)) = Snapshot::read_all(&mut Cursor::new(data)) {
        for rec in streams.iter().flatten() {
            if let Ok(ev) = Event::decode(rec) {
                let _ = ev.to_text();
            }
        }
    }
});
