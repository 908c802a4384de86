//! End-to-end tests of a single Verdigris node: each test starts the real `verdigris` binary
//! in its own temporary directory, on 127.0.0.1 ephemeral ports, and talks to it over real
//! HTTP/1.1 and h2c, or through its CLI. Nodes are killed when a test ends, even on panic.
//!
//! - [`api`]: write/read round trips, value encodings, statement forms, atomicity.
//! - [`noop`]: which writes get a version and which get `"version": null`.
//! - [`errors`]: every HTTP error status and message, timeouts.
//! - [`status`]: `/v1/health` and `/v1/table_stats`.
//! - [`dashboard`]: the read-only views for dashboards and the embedded console's files.
//! - [`config`]: config validation, ignored Corrosion sections, bearer-token auth.
//! - [`cli`]: `--help` and the `exec` / `query` output formats.
//! - [`schema`]: `verdigris reload` with additive and destructive schema changes.
//! - [`backup`]: `verdigris backup` / `restore` round trips and actor identity.

#[path = "../support/mod.rs"]
mod support;

mod api;
mod backup;
mod cli;
mod config;
mod dashboard;
mod errors;
mod noop;
mod schema;
mod status;

#[test]
fn bin_path_is_known() {
    assert!(std::path::Path::new(env!("CARGO_BIN_EXE_verdigris")).exists());
}
