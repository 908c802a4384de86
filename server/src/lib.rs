//! Verdigris: a gossip-replicated SQLite database for fleets of servers.
//!
//! See ARCHITECTURE.md at the repository root for the bird's-eye view.

pub mod crdt;
pub mod store;
