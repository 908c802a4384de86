//! End-to-end tests of the WebSocket endpoint `GET /v1/ws` (`docs/websocket.md`) against the
//! real `verdigris` binary on 127.0.0.1, with a raw WebSocket client ([`sock::Sock`]).
//!
//! - [`protocol`]: many subscriptions on one socket, unsubscribe, queries and transactions
//!   mixed with subscriptions, sharing with NDJSON subscribers, resume with `from` after the
//!   socket closes and after a node restart, interleaving of a large snapshot with live changes.
//! - [`errors`]: every kind of bad input gets an error tagged with its id and the socket keeps
//!   working; oversized messages close with 1009; per-socket and per-node limits; auth by
//!   header, subprotocol and query token; refused upgrades.
//! - [`lifecycle`]: close 1001 on shutdown; a peer that answers no ping is closed; a client
//!   too slow for its subscription gets `too_slow` with its last change id and resumes.

#[path = "../support/mod.rs"]
mod support;

mod errors;
mod lifecycle;
mod protocol;
mod sock;

pub const SCHEMA: &str = "\
CREATE TABLE t (id INTEGER NOT NULL PRIMARY KEY, a TEXT, b INTEGER);
CREATE TABLE big (id INTEGER NOT NULL PRIMARY KEY, v TEXT);
";
