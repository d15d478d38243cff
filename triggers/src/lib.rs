//! flightrec's trigger sources and the one governor they all go through.
//!
//! - [`trigger`]: the normalised [`Trigger`] and the hook's JSON body with its limits;
//! - [`governor`]: cooldown, budgets, dedupe, coalescing, post window and pre-trigger fill, pure
//!   and driven by an injected clock;
//! - [`hook`]: the HTTP hook router and server, generic over [`hook::SnapshotService`] (the
//!   recorder implements it, so this crate does not depend on the recorder);
//! - [`rules`]: kernel latency rule configuration and its validation;
//! - [`client`]: a small hook client;
//! - [`tower`]: a tower layer that calls the hook for slow requests of a Rust HTTP service;
//! - [`group`]: the seam where group triggers will be handed to the collector;
//! - [`alertmanager`]: Alertmanager's webhook payload, each firing alert a trigger.

pub mod alertmanager;
pub mod client;
pub mod governor;
pub mod group;
pub mod hook;
pub mod rules;
pub mod tower;
pub mod trigger;

pub use trigger::{Scope, Source, Trigger};

/// A configuration value is wrong; the message names the field and what is allowed. The
/// same error as every flightrec configuration's.
pub use schemas::config::ConfigError;
