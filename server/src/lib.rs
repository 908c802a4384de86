//! Verdigris: a gossip-replicated SQLite database for fleets of servers.
//!
//! See ARCHITECTURE.md at the repository root for the bird's-eye view.

pub mod activity;
pub mod admin;
pub mod api;
pub mod backup;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod crdt;
pub mod inspect;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod store;
pub mod subs;
pub mod watchdog;
