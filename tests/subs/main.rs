//! End-to-end tests of the subscription API (`/v1/subscriptions`, `/v1/updates/{table}`):
//! each test starts the real `verdigris` binary in its own temporary directory on 127.0.0.1
//! ephemeral ports and reads the long-lived NDJSON streams incrementally over HTTP/1.1 and
//! h2c. Nodes are killed when a test ends, even on panic. Clients use `TCP_NODELAY`
//! ([`support::Api::with_nodelay`]), as real clients do; without it every h2c request waits
//! ~40 ms for a delayed ACK, which made the h2c half of the suite 40× slower.
//!
//! - [`client`]: a validating subscription client that rebuilds the result from the events.
//! - [`api`]: headers and event shapes, statement forms, row-id lifetimes, silent no-op
//!   writes, dedupe, joining, `GET` by id and `from` replay, every pre-stream and in-stream
//!   error, `/v1/updates/{table}`, value encodings.
//! - [`concurrency`]: identical subscribes racing, and subscribing/joining/resuming while a
//!   writer commits continuously.
//! - [`queries`]: results stay equal to a fresh run of the query for LEFT JOIN, subqueries,
//!   aggregates, GROUP BY, DISTINCT, ORDER BY … LIMIT and UNION under a pseudo-random workload;
//!   parameters in every position; column names.
//! - [`aggregates`]: aggregates and DISTINCT maintained from before-images stay exact under
//!   random workloads on several seeds, a continuously committing writer, and a restart.
//! - [`durability`]: resume after a graceful restart and after SIGKILL, the trimmed change log.
//! - [`failure`]: a round whose persist fails publishes nothing, is retried, and loses
//!   nothing across a crash.
//! - [`isolation`]: a slow initial query or a slow re-run delays no other subscription.
//! - [`slow`]: a listener that stops reading is cut off with a resumable error.
//! - [`syntax`]: valid SQLite statements must work as subscriptions exactly as in
//!   `/v1/queries` (no rejections, no silent change of meaning).

#[path = "../support/mod.rs"]
mod support;

mod admin;
mod aggregates;
mod api;
mod client;
mod concurrency;
mod durability;
mod failure;
mod isolation;
mod queries;
mod slow;
mod syntax;

/// Two related replicated tables, a simple one and one with a composite key.
pub const SCHEMA: &str = "\
CREATE TABLE t (id INTEGER NOT NULL PRIMARY KEY, a TEXT, b INTEGER);
CREATE TABLE teams (id INTEGER NOT NULL PRIMARY KEY, title TEXT);
CREATE TABLE users (id INTEGER NOT NULL PRIMARY KEY, name TEXT, team INTEGER, score INTEGER);
CREATE TABLE kv (k TEXT NOT NULL, n INTEGER NOT NULL, v TEXT, PRIMARY KEY (k, n));
";

/// Defines `<name>_http1` and `<name>_h2c` tests calling `async fn <name>(proto: Proto)`.
macro_rules! both_protocols {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn http1() {
                    super::$name(crate::support::Proto::Http1).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn h2c() {
                    super::$name(crate::support::Proto::H2c).await
                }
            }
        )*
    };
}
pub(crate) use both_protocols;

#[test]
fn bin_path_is_known() {
    assert!(std::path::Path::new(env!("CARGO_BIN_EXE_verdigris")).exists());
}
