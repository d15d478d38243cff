//! The governor: one decision procedure for every trigger source, so a storm of slow requests,
//! a flapping kernel rule and an impatient operator together still cost a bounded number of
//! snapshots.
//!
//! It is pure: the caller passes the time (`CLOCK_MONOTONIC` ns) into every call, which keeps it
//! table-testable. Decisions, in order:
//!
//! 1. a snapshot is being taken (admitted, not yet [`Governor::finished`]): the trigger
//!    **joins** it (coalescing) — it costs no budget;
//! 2. **cooldown**: less than `cooldown` since the last admitted snapshot;
//! 3. **duplicate**: its signature was admitted less than `dedupe_window` ago;
//! 4. **prefill**: less than `min_prefill` recorded since the last freeze (skipped for
//!    triggers the kernel already froze for: their window is what it is);
//! 5. **source budget**, then **host budget** (token buckets);
//! 6. otherwise **admitted**, with its post-trigger window.

mod config;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

pub use config::{Budget, GovernorConfig};

use crate::trigger::{Source, Trigger};

/// Why a trigger was suppressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SuppressReason {
    /// Too soon after the previous snapshot.
    Cooldown,
    /// The same signature was admitted recently.
    Duplicate,
    /// The rings have not recorded long enough since the last freeze.
    Prefill,
    /// This source spent its budget.
    SourceBudget,
    /// The host spent its budget.
    HostBudget,
}

impl SuppressReason {
    /// The name used in counters, logs and HTTP answers.
    pub fn as_str(self) -> &'static str {
        match self {
            SuppressReason::Cooldown => "cooldown",
            SuppressReason::Duplicate => "duplicate",
            SuppressReason::Prefill => "prefill",
            SuppressReason::SourceBudget => "source_budget",
            SuppressReason::HostBudget => "host_budget",
        }
    }
}

/// What the governor decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Take a new snapshot with this id, freezing `post_ms` after now.
    Admitted {
        /// Id of the new snapshot.
        snapshot_id: String,
        /// Post-trigger window, ms.
        post_ms: u64,
    },
    /// A snapshot is being taken: the trigger joins it.
    Joined {
        /// Id of the snapshot it joins.
        snapshot_id: String,
    },
    /// No snapshot for this trigger.
    Suppressed {
        /// Why.
        reason: SuppressReason,
        /// When trying again could succeed, ms from now.
        retry_after_ms: u64,
    },
}

/// Decision counts of one source.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceCounters {
    /// Triggers that started a snapshot.
    pub admitted: u64,
    /// Triggers that joined a snapshot being taken.
    pub coalesced: u64,
    /// Suppressed triggers by reason.
    pub suppressed: BTreeMap<String, u64>,
}

/// Decision counts, shown by `flightrec status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Triggers that started a snapshot.
    pub admitted: u64,
    /// Triggers that joined a snapshot being taken.
    pub coalesced: u64,
    /// Suppressed triggers by reason.
    pub suppressed: BTreeMap<String, u64>,
    /// The same, per source.
    pub by_source: BTreeMap<String, SourceCounters>,
}

/// A token bucket counted in millionths of a token, so refills and retry hints are exact.
#[derive(Clone, Debug)]
struct Bucket {
    budget: Budget,
    micro: u64,
    at_ns: u64,
}

const MICRO: u64 = 1_000_000;

impl Bucket {
    fn new(budget: Budget, now_ns: u64) -> Bucket {
        Bucket {
            budget,
            micro: budget.burst as u64 * MICRO,
            at_ns: now_ns,
        }
    }

    fn refill(&mut self, now_ns: u64) {
        // per_minute tokens per 60e9 ns = per_minute micro-tokens per 60_000 ns.
        let dt = now_ns.saturating_sub(self.at_ns);
        let add = dt.saturating_mul(self.budget.per_minute as u64) / 60_000;
        self.micro = self
            .micro
            .saturating_add(add)
            .min(self.budget.burst as u64 * MICRO);
        self.at_ns = self.at_ns.max(now_ns);
    }

    /// Takes a token, or says in how many ms one will be there (`u64::MAX`: never).
    fn take(&mut self, now_ns: u64) -> Result<(), u64> {
        self.refill(now_ns);
        if self.micro >= MICRO {
            self.micro -= MICRO;
            return Ok(());
        }
        if self.budget.per_minute == 0 {
            return Err(u64::MAX);
        }
        let missing = MICRO - self.micro;
        Err((missing * 60).div_ceil(self.budget.per_minute as u64 * 1000))
    }

    fn give_back(&mut self) {
        self.micro = (self.micro + MICRO).min(self.budget.burst as u64 * MICRO);
    }
}

/// Most signatures remembered for dedupe; older ones are forgotten first.
const MAX_SIGNATURES: usize = 4096;

/// The decision state. See the module documentation for the order of the checks.
pub struct Governor {
    config: GovernorConfig,
    new_id: Box<dyn FnMut() -> String + Send>,
    host: Bucket,
    sources: HashMap<Source, Bucket>,
    started_ns: u64,
    last_admitted_ns: Option<u64>,
    last_freeze_ns: Option<u64>,
    pending: Option<String>,
    seen: HashMap<String, u64>,
    counters: Counters,
}

/// `d` in whole ms, saturating.
fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `d` in ns, saturating.
fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn ms_left(since_ns: u64, window: std::time::Duration, now_ns: u64) -> Option<u64> {
    let elapsed = now_ns.saturating_sub(since_ns);
    let window = nanos(window);
    (elapsed < window).then(|| (window - elapsed).div_ceil(1_000_000))
}

impl Governor {
    /// A governor whose rings started recording at `now_ns`. `new_id` names admitted snapshots.
    pub fn new(
        config: GovernorConfig,
        now_ns: u64,
        new_id: impl FnMut() -> String + Send + 'static,
    ) -> Governor {
        let sources = Source::ALL
            .iter()
            .map(|&s| (s, Bucket::new(config.source_budget, now_ns)))
            .collect();
        Governor {
            host: Bucket::new(config.host_budget, now_ns),
            sources,
            config,
            new_id: Box::new(new_id),
            started_ns: now_ns,
            last_admitted_ns: None,
            last_freeze_ns: None,
            pending: None,
            seen: HashMap::new(),
            counters: Counters::default(),
        }
    }

    /// The policy in force.
    pub fn config(&self) -> &GovernorConfig {
        &self.config
    }

    /// Decides on `trigger` at `now_ns`, and counts the decision.
    pub fn decide(&mut self, now_ns: u64, trigger: &Trigger) -> Decision {
        let decision = self.decide_uncounted(now_ns, trigger);
        let per = self
            .counters
            .by_source
            .entry(trigger.source.as_str().to_owned())
            .or_default();
        match &decision {
            Decision::Admitted { .. } => {
                self.counters.admitted += 1;
                per.admitted += 1;
            }
            Decision::Joined { .. } => {
                self.counters.coalesced += 1;
                per.coalesced += 1;
            }
            Decision::Suppressed { reason, .. } => {
                *self
                    .counters
                    .suppressed
                    .entry(reason.as_str().to_owned())
                    .or_default() += 1;
                *per.suppressed
                    .entry(reason.as_str().to_owned())
                    .or_default() += 1;
            }
        }
        decision
    }

    fn decide_uncounted(&mut self, now_ns: u64, trigger: &Trigger) -> Decision {
        let suppressed = |reason, retry_after_ms| Decision::Suppressed {
            reason,
            retry_after_ms,
        };
        if let Some(id) = &self.pending {
            return Decision::Joined {
                snapshot_id: id.clone(),
            };
        }
        if let Some(t) = self.last_admitted_ns
            && let Some(left) = ms_left(t, self.config.cooldown, now_ns)
        {
            return suppressed(SuppressReason::Cooldown, left);
        }
        if let Some(&t) = self.seen.get(&trigger.signature)
            && let Some(left) = ms_left(t, self.config.dedupe_window, now_ns)
        {
            return suppressed(SuppressReason::Duplicate, left);
        }
        if !trigger.already_frozen {
            let since = self.last_freeze_ns.unwrap_or(self.started_ns);
            if let Some(left) = ms_left(since, self.config.min_prefill, now_ns) {
                return suppressed(SuppressReason::Prefill, left);
            }
        }
        let source = self
            .sources
            .get_mut(&trigger.source)
            .expect("a bucket per source");
        if let Err(left) = source.take(now_ns) {
            return suppressed(SuppressReason::SourceBudget, left);
        }
        if let Err(left) = self.host.take(now_ns) {
            // The source's token was not spent on anything.
            source.give_back();
            return suppressed(SuppressReason::HostBudget, left);
        }
        let snapshot_id = (self.new_id)();
        self.pending = Some(snapshot_id.clone());
        self.last_admitted_ns = Some(now_ns);
        if self.seen.len() >= MAX_SIGNATURES {
            let window = nanos(self.config.dedupe_window);
            self.seen
                .retain(|_, &mut t| now_ns.saturating_sub(t) < window);
            if self.seen.len() >= MAX_SIGNATURES
                && let Some(oldest) = self
                    .seen
                    .iter()
                    .min_by_key(|(_, t)| **t)
                    .map(|(k, _)| k.clone())
            {
                self.seen.remove(&oldest);
            }
        }
        self.seen.insert(trigger.signature.clone(), now_ns);
        let post_ms = trigger
            .post_ms
            .unwrap_or(millis(self.config.default_post))
            .min(millis(self.config.max_post));
        Decision::Admitted {
            snapshot_id,
            post_ms,
        }
    }

    /// The snapshot `snapshot_id` was frozen at `frozen_ns` (or failed): later triggers no longer
    /// join it, and the pre-trigger fill restarts from the freeze.
    pub fn finished(&mut self, snapshot_id: &str, frozen_ns: u64) {
        if self.pending.as_deref() == Some(snapshot_id) {
            self.pending = None;
        }
        self.note_freeze(frozen_ns);
    }

    /// The rings were frozen outside the governor (`snapshot record`): the pre-trigger fill
    /// restarts from there.
    pub fn note_freeze(&mut self, frozen_ns: u64) {
        self.last_freeze_ns = Some(self.last_freeze_ns.unwrap_or(0).max(frozen_ns));
    }

    /// The snapshot being taken, if any.
    pub fn pending(&self) -> Option<&str> {
        self.pending.as_deref()
    }

    /// Decisions so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
}

#[cfg(test)]
mod tests;
