//! Kernel rule hits: the eBPF programs report a rule's match on the `RULE_HITS` ring buffer;
//! each becomes a trigger (`triggers::rules::rule_trigger`) and goes through the governor.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Shared;

/// Reads kernel rule hits as they come (the ring buffer wakes the reader; nothing is polled).
pub(super) async fn read_rule_hits(
    shared: Arc<Shared>,
    hits: aya::maps::RingBuf<aya::maps::MapData>,
) -> std::io::Result<()> {
    // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged, for as long as the
    // AsyncFd owns the RingBuf.
    let mut fd = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(hits, tokio::io::Interest::READABLE)
    }
    .map_err(std::io::Error::from)?;
    loop {
        let mut guard = fd.readable_mut().await?;
        let mut batch = Vec::new();
        {
            let rb = guard.get_inner_mut();
            while let Some(item) = rb.next() {
                if item.len() >= size_of::<schemas::RuleHit>() {
                    // SAFETY: the programs write whole RuleHit values; read_unaligned copes
                    // with the ring buffer's 8-byte alignment.
                    batch.push(unsafe {
                        std::ptr::read_unaligned(item.as_ptr() as *const schemas::RuleHit)
                    });
                }
            }
        }
        guard.clear_ready();
        for hit in batch {
            shared.rule_hits.fetch_add(1, Ordering::Relaxed);
            let t = triggers::rules::rule_trigger(&shared.rules, &hit);
            let _ = shared.trigger(t);
        }
    }
}
