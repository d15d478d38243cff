//! `[governor]`: the one policy every trigger source goes through.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use schemas::config::ConfigError;
use schemas::units::format_duration;

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
    /// Least time between two admitted snapshots, e.g. "5s" (triggers in between are
    /// suppressed).
    #[serde(with = "schemas::units::duration")]
    pub cooldown: Duration,
    /// Budget shared by all sources of this host.
    pub host_budget: Budget,
    /// Budget of each source (hook, rule, cli, group) on its own.
    pub source_budget: Budget,
    /// A trigger with the signature of one admitted less than this long ago is a duplicate.
    #[serde(with = "schemas::units::duration")]
    pub dedupe_window: Duration,
    /// Post-trigger window when a trigger asks for none (keep recording, then freeze).
    #[serde(with = "schemas::units::duration")]
    pub default_post: Duration,
    /// Longest post-trigger window a trigger may ask for.
    #[serde(with = "schemas::units::duration")]
    pub max_post: Duration,
    /// Least recording time since the previous freeze before a new snapshot, so a snapshot
    /// never holds an almost empty window.
    #[serde(with = "schemas::units::duration")]
    pub min_prefill: Duration,
}

impl Default for GovernorConfig {
    fn default() -> Self {
        GovernorConfig {
            cooldown: Duration::from_secs(5),
            host_budget: Budget {
                burst: 5,
                per_minute: 6,
            },
            source_budget: Budget {
                burst: 3,
                per_minute: 4,
            },
            dedupe_window: Duration::from_secs(60),
            default_post: Duration::ZERO,
            max_post: Duration::from_secs(10),
            min_prefill: Duration::from_millis(500),
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
                return Err(ConfigError::Invalid(format!(
                    "{name}.burst must be at least 1 (0 would refuse every trigger)"
                )));
            }
        }
        if self.default_post > self.max_post {
            return Err(ConfigError::Invalid(format!(
                "governor.default_post {} is above governor.max_post {}",
                format_duration(self.default_post),
                format_duration(self.max_post)
            )));
        }
        if self.max_post > Duration::from_secs(600) {
            return Err(ConfigError::Invalid(format!(
                "governor.max_post {} is above 10 minutes: the rings would have long \
                 overwritten the moment of the trigger",
                format_duration(self.max_post)
            )));
        }
        Ok(())
    }
}
