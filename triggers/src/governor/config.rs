//! `[governor]`: the one policy every trigger source goes through.

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// A token bucket: `burst` triggers at once, refilled at `per_minute`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Triggers that may be admitted back to back (bucket size, at least 1).
    pub burst: u32,
    /// Tokens added per minute (0: the burst is never refilled).
    pub per_minute: u32,
}

/// `[governor]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GovernorConfig {
    /// Least time between two admitted snapshots, ms (triggers in between are suppressed).
    pub cooldown_ms: u64,
    /// Budget shared by all sources of this host.
    pub host_budget: Budget,
    /// Budget of each source (hook, rule, cli, group) on its own.
    pub source_budget: Budget,
    /// A trigger with the signature of one admitted less than this long ago is a duplicate, ms.
    pub dedupe_window_ms: u64,
    /// Post-trigger window when a trigger asks for none, ms (keep recording, then freeze).
    pub default_post_ms: u64,
    /// Longest post-trigger window a trigger may ask for, ms.
    pub max_post_ms: u64,
    /// Least recording time since the previous freeze before a new snapshot, ms, so a snapshot
    /// never holds an almost empty window.
    pub min_prefill_ms: u64,
}

impl Default for GovernorConfig {
    fn default() -> Self {
        GovernorConfig {
            cooldown_ms: 5_000,
            host_budget: Budget {
                burst: 5,
                per_minute: 6,
            },
            source_budget: Budget {
                burst: 3,
                per_minute: 4,
            },
            dedupe_window_ms: 60_000,
            default_post_ms: 0,
            max_post_ms: 10_000,
            min_prefill_ms: 500,
        }
    }
}

impl GovernorConfig {
    /// Checks values the types alone do not constrain.
    pub fn check(&self) -> Result<(), ConfigError> {
        for (name, b) in [
            ("governor.host_budget", self.host_budget),
            ("governor.source_budget", self.source_budget),
        ] {
            if b.burst == 0 {
                return Err(ConfigError(format!(
                    "{name}.burst must be at least 1 (0 would refuse every trigger)"
                )));
            }
        }
        if self.default_post_ms > self.max_post_ms {
            return Err(ConfigError(format!(
                "governor.default_post_ms {} is above governor.max_post_ms {}",
                self.default_post_ms, self.max_post_ms
            )));
        }
        if self.max_post_ms > 600_000 {
            return Err(ConfigError(format!(
                "governor.max_post_ms {} is above 10 minutes: the rings would have long \
                 overwritten the moment of the trigger",
                self.max_post_ms
            )));
        }
        Ok(())
    }
}
