//! Arbitrary bytes as one packet of the compact ring format, walked as the recorder validates
//! a frozen ring (`scan_packet`) and as readers decode it (`walk_packet`): neither may panic or
//! run past the packet, and every record the walk decodes was counted by the scan.
#![no_main]

use libfuzzer_sys::fuzz_target;
use schemas::compact::{self, PACKET_SIZE, header};

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    // The first bytes choose the packet's number, lap and where the walk ends; the rest is the
    // packet, its header forced to the chosen number half of the time so the records are read.
    let number = u64::from(data[0]);
    let lap = u64::from(data[1]) & header::LAP_MASK;
    let end = usize::from(u16::from_le_bytes([data[2], data[3]])) % (PACKET_SIZE + 1);
    let mut packet = [0u8; PACKET_SIZE];
    let body = &data[4..];
    let n = body.len().min(PACKET_SIZE);
    packet[..n].copy_from_slice(&body[..n]);
    if number % 2 == 0 {
        packet[..8].copy_from_slice(&(number + 1).to_le_bytes());
    }
    let mut scanned = 0usize;
    let scan = compact::scan_packet(&packet, number, lap, end, |_| scanned += 1);
    let mut walked = 0usize;
    let walk = compact::walk_packet(&packet, number, lap, end, 0, |f| {
        assert!(f.offset + 8 <= PACKET_SIZE);
        walked += 1;
    });
    assert_eq!(scan.is_some(), walk.is_some());
    assert!(walked <= scanned, "walked {walked}, scanned {scanned}");
});
