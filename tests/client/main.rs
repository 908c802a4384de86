//! End-to-end tests of the Rust client (`client-rs`, crate `verdigris-client`) against the
//! real `verdigris` binary on 127.0.0.1.
//!
//! - [`http`]: transactions and queries (typed rows, both HTTP versions), errors that must
//!   not be retried, failover past a dead node, giving up, the bearer token.
//! - [`subs`]: subscriptions over both transports: snapshot and changes folded by
//!   `LiveQuery`, resume after a node restart (no reset), failover to another node (reset and
//!   fresh snapshot; also within a two-node cluster, continuing from the replicated rows), a change log too short to resume from, bad SQL is fatal.
//! - [`ws`]: queries, transactions and pings over the WebSocket; a subscription whose
//!   consumer stops reading does not hold up the others on the socket, and recovers.

#[path = "../support/mod.rs"]
mod support;

mod http;
mod subs;
mod ws;

use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;
use support::NodeDir;
use verdigris_client::{Backoff, Client, ClientBuilder, SubEvent, Subscription};

pub const SCHEMA: &str = "\
CREATE TABLE machines (id TEXT NOT NULL PRIMARY KEY, app TEXT, address TEXT, state TEXT, healthy INTEGER NOT NULL DEFAULT 1);
CREATE TABLE t (id INTEGER NOT NULL PRIMARY KEY, a TEXT, b INTEGER);
";

/// How long a test waits for one event before failing.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(20);

/// A loopback address nothing listens on (connections are refused).
pub fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// A node directory whose API listens on a fixed port, so that a restarted node is found
/// at the same address. `db` and `tail` are extra config lines.
pub fn fixed_port_dir(db: &str, tail: &str) -> (NodeDir, SocketAddr) {
    let addr = dead_addr();
    let dir = NodeDir::builder()
        .schema(SCHEMA)
        .raw_config(&format!(
            "[db]\npath = \"{{dir}}/data/state.db\"\nschema_paths = [\"{{dir}}/schema\"]\n{db}\n\
             [api]\naddr = \"{addr}\"\n\
             [gossip]\naddr = \"127.0.0.1:0\"\nplaintext = true\n\
             [admin]\npath = \"{{dir}}/admin.sock\"\n\n{tail}\n"
        ))
        .build();
    (dir, addr)
}

/// A client with test-sized timeouts and backoff.
pub fn builder<A: verdigris_client::IntoNodeAddr>(
    addrs: impl IntoIterator<Item = A>,
) -> ClientBuilder {
    Client::builder(addrs)
        .connect_timeout(Duration::from_secs(2))
        .request_timeout(Duration::from_secs(15))
        .backoff(Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(500),
            ..Backoff::default()
        })
}

pub fn client<A: verdigris_client::IntoNodeAddr>(addrs: impl IntoIterator<Item = A>) -> Client {
    builder(addrs).build().expect("client")
}

/// The next event, failing the test on an error, the end of the stream or a timeout.
pub async fn next<T: DeserializeOwned + Send + 'static + std::fmt::Debug>(
    sub: &mut Subscription<T>,
) -> SubEvent<T> {
    match tokio::time::timeout(EVENT_TIMEOUT, sub.next()).await {
        Err(_) => panic!("no subscription event within {EVENT_TIMEOUT:?}"),
        Ok(None) => panic!("the subscription ended"),
        Ok(Some(Err(e))) => panic!("subscription error: {e}"),
        Ok(Some(Ok(ev))) => ev,
    }
}

/// Reads a whole snapshot (`Columns`, rows, `EndOfQuery`); returns its rows and change id.
pub async fn snapshot<T: DeserializeOwned + Send + 'static + std::fmt::Debug>(
    sub: &mut Subscription<T>,
) -> (Vec<(u64, T)>, Option<u64>) {
    match next(sub).await {
        SubEvent::Columns(_) => {}
        other => panic!("expected columns, got {other:?}"),
    }
    let mut rows = Vec::new();
    loop {
        match next(sub).await {
            SubEvent::Row(rid, r) => rows.push((rid, r)),
            SubEvent::EndOfQuery { change_id } => return (rows, change_id),
            other => panic!("expected a row or eoq, got {other:?}"),
        }
    }
}
