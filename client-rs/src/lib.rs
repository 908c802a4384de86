//! Rust client for Verdigris nodes (and, over HTTP/NDJSON, Fly.io's
//! Corrosion): transactions, queries, and subscriptions that survive disconnections and
//! node failures.
//!
//! The wire vocabulary is the [`verdigris_api_types`] crate, re-exported as [`types`] (and
//! its main types at the root): [`Statement`], [`SqliteValue`], [`ExecResponse`],
//! [`QueryEvent`]/[`TypedQueryEvent`], and the WebSocket messages in [`types::ws`].
//!
//! # Writing and reading
//!
//! ```no_run
//! use verdigris_client::{Client, SqliteValue, Statement};
//!
//! # async fn f() -> verdigris_client::Result<()> {
//! let client = Client::new(["127.0.0.1:8080", "127.0.0.1:8081"])?;
//! let r = client
//!     .execute(&[Statement::with_params(
//!         "INSERT INTO todos (id, title) VALUES (?, ?)",
//!         [SqliteValue::from(1), "write docs".into()],
//!     )])
//!     .await?;
//! println!("version {:?}", r.version);
//!
//! // Rows decode from their array of cells: tuples, or structs with fields in column order.
//! let todos: Vec<(i64, String)> = client.query_as("SELECT id, title FROM todos").await?;
//! # Ok(()) }
//! ```
//!
//! # Subscriptions
//!
//! [`Client::subscribe`] returns a [`Subscription`], a [`Stream`](futures_util::Stream) of
//! [`SubEvent`]s: the rows, then every change. The client tracks the last change id and, after
//! a disconnection, resumes from it; when it cannot (a gap, a failover to another node, a
//! consumer that fell behind) it emits [`SubEvent::Reset`] and a fresh snapshot. Subscriptions
//! go over the client's one WebSocket by default ([`Transport::WebSocket`], multiplexed: a
//! stalled consumer never holds up the others), or one HTTP stream each
//! ([`Transport::Ndjson`]).
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use verdigris_client::{Client, SubEvent, SubscribeOptions};
//!
//! # async fn f() -> verdigris_client::Result<()> {
//! let client = Client::new(["127.0.0.1:8080"])?;
//! let mut sub = client.subscribe::<(String, String, String)>(
//!     "SELECT id, app, address FROM machines WHERE state = 'started' AND healthy = 1",
//!     SubscribeOptions::default(),
//! );
//! while let Some(ev) = sub.next().await {
//!     match ev? {
//!         SubEvent::Reset(why) => println!("starting over ({why:?})"),
//!         SubEvent::Columns(cols) => println!("columns {cols:?}"),
//!         SubEvent::Row(rid, (id, app, addr)) => println!("{rid}: {id} {app} {addr}"),
//!         SubEvent::EndOfQuery { change_id } => println!("snapshot at {change_id:?}"),
//!         SubEvent::Change(kind, rid, row, cid) => println!("#{cid} {kind:?} {rid}: {row:?}"),
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! [`LiveQuery`] folds the events into the current rows and reports what changed.
//!
//! # Failover and retries
//!
//! Requests go to the current node; connection failures and 5xx answers move on to the next
//! node, with [`Backoff`] (100 ms doubling to 10 s, full jitter) between rounds. 4xx answers
//! (bad SQL, authentication) are returned at once, and an `Err` from a subscription is fatal.
//! A transaction is sent again only when the node certainly did not run it.

mod backoff;
mod client;
mod config;
mod error;
mod http;
mod live;
mod query;
mod sub;
mod subscription;
mod ws;

/// The wire types of the Verdigris API (`verdigris-api-types`).
pub use verdigris_api_types as types;
pub use verdigris_api_types::{
    ChangeId, ChangeType, ExecResponse, ExecResult, QueryEvent, RowId, SqliteValue, Statement,
    TypedQueryEvent,
};

pub use backoff::{Backoff, Jitter};
pub use client::Client;
pub use config::{ClientBuilder, HttpVersion, IntoNodeAddr, NodeAddr};
pub use error::{BoxError, Error, Result};
pub use live::{LiveQuery, LiveState, LiveUpdate};
pub use query::QueryStream;
pub use sub::{ResetReason, SubEvent};
pub use subscription::{SubscribeOptions, Subscription, Transport};
