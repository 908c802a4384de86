//! Operability tests on real processes: `verdigris dev` ([`dev`]), `GET /metrics` parsed
//! with a Prometheus text-format parser ([`metrics`]), the watchdog reporting and exiting
//! ([`watchdog`]), periodic snapshots and rebuilding a node from one ([`snapshots`]), and
//! startup errors that name the setting and the fix ([`errors`]).

// The serial lock is held across awaits on purpose: it keeps whole multi-process tests from
// overlapping, and each test has its own runtime, so nothing else waits on it there.
#![allow(clippy::await_holding_lock)]

#[path = "../support/mod.rs"]
mod support;

mod dev;
mod errors;
mod metrics;
mod node;
mod snapshots;
mod watchdog;
