//! End-to-end tests of the subscription API (`/v1/subscriptions`, `/v1/updates/{table}`):
//! each test starts the real `verdigris` binary in its own temporary directory on 127.0.0.1
//! ephemeral ports and reads the long-lived NDJSON streams incrementally over HTTP/1.1 and
//! h2c. Nodes are killed when a test ends, even on panic.
//!
//! - [`client`]: a validating subscription client that rebuilds the result from the events.
//! - [`api`]: headers and event shapes, statement forms, row-id lifetimes, silent no-op
//!   writes, dedupe, joining, `GET` by id and `from` replay, every pre-stream and in-stream
//!   error, `/v1/updates/{table}`.
//! - [`queries`]: results stay equal to a fresh run of the query for LEFT JOIN, subqueries,
//!   aggregates, GROUP BY, DISTINCT, ORDER BY … LIMIT and UNION under a pseudo-random workload.
//! - [`durability`]: resume after a graceful restart and after SIGKILL, the trimmed change log.
//! - [`slow`]: a listener that stops reading is cut off with a resumable error.

#[path = "../support/mod.rs"]
mod support;

mod api;
mod client;
mod durability;
mod queries;
mod slow;

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
