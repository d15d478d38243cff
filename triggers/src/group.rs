//! Group triggers: one slow request, one correlated set of snapshots from every host it touched.
//!
//! Fan-out is the collector's job. The daemon keeps an `Option<Arc<dyn GroupForwarder>>`; until a
//! collector client implements this trait and is configured, a `scope: "group"` trigger is
//! answered with [`crate::hook::Refused::GroupUnavailable`] (HTTP 501) instead of being quietly
//! taken as a local one.

use crate::trigger::Trigger;

/// Hands a group trigger to whatever fans it out to the group's recorders.
pub trait GroupForwarder: Send + Sync + 'static {
    /// Forwards `trigger`; returns the group trigger id that every host's snapshot will carry.
    fn forward(&self, trigger: &Trigger) -> Result<String, ForwardError>;
}

/// A group trigger that could not be handed on; the source says why.
#[derive(Debug, thiserror::Error)]
#[error("group trigger to the collector failed")]
pub struct ForwardError(#[source] pub Box<dyn std::error::Error + Send + Sync>);
