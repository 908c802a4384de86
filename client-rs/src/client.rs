//! [`Client`]: transactions, queries and subscriptions against a list of nodes, with
//! failover.

use crate::config::{ClientBuilder, Config, IntoNodeAddr, NodeAddr, Nodes};
use crate::error::{Error, Result};
use crate::http::{check, Http, Lines};
use crate::live::LiveQuery;
use crate::query::QueryStream;
use crate::subscription::{SubscribeOptions, Subscription};
use crate::types::ws::{ClientMessage, ServerBody};
use crate::types::{ExecResponse, SqliteValue, Statement};
use crate::ws::WsHandle;
use bytes::Bytes;
use hyper::Method;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Largest transaction answer read.
const MAX_EXEC_BODY: usize = 16 << 20;

/// A client of one or several Verdigris (or Corrosion) nodes. Cheap to clone: clones share
/// connections, the current node and the WebSocket.
///
/// Requests go to the current node; when it cannot be reached (connection refused, reset,
/// timeout) or answers 5xx (503: at its concurrency limit), the next node becomes current
/// and the request is retried there, with backoff after each full round of the nodes.
/// 4xx answers (bad SQL, authentication) are returned at once.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cfg: Arc<Config>,
    nodes: Arc<Nodes>,
    http: Http,
    /// The WebSocket connection task, started on first use (again if its runtime ended).
    ws: Mutex<Option<WsHandle>>,
}

/// Whether a failed request may be sent again.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Reads: any transient failure.
    Idempotent,
    /// Writes: only when the node certainly did not run it (no connection, 503).
    NotSent,
}

impl Client {
    /// A client with default settings for `addrs` (`SocketAddr`s or `"host:port"` strings).
    pub fn new<I, A>(addrs: I) -> Result<Client>
    where
        I: IntoIterator<Item = A>,
        A: IntoNodeAddr,
    {
        ClientBuilder::new(addrs).build()
    }

    /// A builder for a client of `addrs`.
    pub fn builder<I, A>(addrs: I) -> ClientBuilder
    where
        I: IntoIterator<Item = A>,
        A: IntoNodeAddr,
    {
        ClientBuilder::new(addrs)
    }

    pub(crate) fn from_config(cfg: Config) -> Client {
        let http = Http::new(&cfg);
        let nodes = Arc::new(Nodes::new(cfg.nodes.clone()));
        Client {
            inner: Arc::new(Inner {
                cfg: Arc::new(cfg),
                nodes,
                http,
                ws: Mutex::new(None),
            }),
        }
    }

    pub(crate) fn config(&self) -> &Config {
        &self.inner.cfg
    }
    pub(crate) fn nodes(&self) -> &Arc<Nodes> {
        &self.inner.nodes
    }
    pub(crate) fn http(&self) -> &Http {
        &self.inner.http
    }

    /// The WebSocket connection task, started on first use. A task that is gone (its
    /// Tokio runtime shut down) is replaced.
    pub(crate) fn ws_handle(&self) -> WsHandle {
        let mut ws = self.inner.ws.lock().unwrap_or_else(|p| p.into_inner());
        match &*ws {
            Some(h) if !h.is_closed() => h.clone(),
            _ => {
                let h = WsHandle::spawn(self.inner.cfg.clone(), self.inner.nodes.clone());
                *ws = Some(h.clone());
                h
            }
        }
    }

    /// The node requests currently go to.
    pub fn current_node(&self) -> NodeAddr {
        self.inner.nodes.current().1.clone()
    }

    /// Runs `attempt` on the current node, failing over per `retry`.
    async fn with_failover<R, F, Fut>(&self, retry: Retry, mut attempt: F) -> Result<R>
    where
        F: FnMut(NodeAddr) -> Fut,
        Fut: Future<Output = Result<R>>,
    {
        let nodes = &self.inner.nodes;
        let max = self
            .inner
            .cfg
            .request_attempts
            .unwrap_or_else(|| (2 * nodes.len() as u32).max(3));
        let mut failures = 0u32;
        loop {
            let (idx, addr) = nodes.current();
            let err = match attempt(addr.clone()).await {
                Ok(r) => return Ok(r),
                Err(e) => e,
            };
            let again = match retry {
                Retry::Idempotent => err.is_retryable(),
                Retry::NotSent => matches!(err, Error::Connect { .. }) || err.status() == Some(503),
            };
            if err.is_retryable() {
                // Even when the request cannot be repeated, the next one goes elsewhere.
                nodes.advance(idx);
            }
            if !again {
                return Err(err);
            }
            failures += 1;
            if failures >= max {
                return Err(Error::Exhausted {
                    attempts: failures,
                    last: Box::new(err),
                });
            }
            tracing::info!(node = %addr, attempt = failures, "request failed, retrying: {err}");
            if failures.is_multiple_of(nodes.len() as u32) {
                // A full round of the nodes failed: wait before the next.
                let round = failures / nodes.len() as u32 - 1;
                tokio::time::sleep(self.inner.cfg.backoff.delay(round)).await;
            }
        }
    }

    /// Runs statements as one transaction (`POST /v1/transactions`).
    ///
    /// Retried on another node only when the node certainly did not run it (connection
    /// refused, 503). After a reset or timeout the outcome is unknown and the error is
    /// returned (the next request goes to the next node).
    pub async fn execute(&self, stmts: &[Statement]) -> Result<ExecResponse> {
        self.execute_inner(stmts, None).await
    }

    /// [`Client::execute`] with the node's transaction timeout set to `timeout` (the
    /// request waits at least that long, plus 5 s).
    pub async fn execute_with_timeout(
        &self,
        stmts: &[Statement],
        timeout: Duration,
    ) -> Result<ExecResponse> {
        self.execute_inner(stmts, Some(timeout)).await
    }

    async fn execute_inner(
        &self,
        stmts: &[Statement],
        timeout: Option<Duration>,
    ) -> Result<ExecResponse> {
        let body =
            Bytes::from(serde_json::to_vec(stmts).map_err(|e| Error::decode("the statements", e))?);
        let path = match timeout {
            Some(t) => format!("/v1/transactions?timeout={}", t.as_secs_f64()),
            None => "/v1/transactions".to_string(),
        };
        let longer;
        let http = match self.wait_limit(timeout) {
            Some(t) if timeout.is_some() => {
                longer = self.inner.http.with_timeout(Some(t));
                &longer
            }
            _ => &self.inner.http,
        };
        self.with_failover(Retry::NotSent, |addr| {
            let (body, path) = (body.clone(), path.as_str());
            async move {
                let resp = http.send(&addr, Method::POST, path, Some(body)).await?;
                let resp = check(http, &addr, resp).await?;
                let bytes = http
                    .read_body(&addr, resp.into_body(), MAX_EXEC_BODY)
                    .await?;
                let r: ExecResponse = serde_json::from_slice(&bytes)
                    .map_err(|e| Error::decode(format!("the transaction answer of {addr}"), e))?;
                match r.error {
                    Some(message) => Err(Error::Server {
                        code: None,
                        message,
                    }),
                    None => Ok(r),
                }
            }
        })
        .await
    }

    /// Runs a read-only query (`POST /v1/queries`) and streams its events.
    pub async fn query(&self, stmt: impl Into<Statement>) -> Result<QueryStream> {
        self.query_typed(stmt).await
    }

    /// [`Client::query`] with rows decoded into `T`: a tuple, or a struct whose fields are
    /// in column order, from the JSON array of cells.
    pub async fn query_typed<T: DeserializeOwned + Send + 'static>(
        &self,
        stmt: impl Into<Statement>,
    ) -> Result<QueryStream<T>> {
        self.query_with_timeout(stmt, None).await
    }

    /// [`Client::query_typed`] with the node's query timeout set to `timeout` (`None`: the
    /// node's default, `api.query_timeout_secs`; zero: no timeout).
    pub async fn query_with_timeout<T: DeserializeOwned + Send + 'static>(
        &self,
        stmt: impl Into<Statement>,
        timeout: Option<Duration>,
    ) -> Result<QueryStream<T>> {
        let path = match timeout {
            Some(t) => format!("/v1/queries?timeout={}", t.as_secs_f64()),
            None => "/v1/queries".to_string(),
        };
        let stmt = stmt.into();
        let body =
            Bytes::from(serde_json::to_vec(&stmt).map_err(|e| Error::decode("the statement", e))?);
        let http = &self.inner.http;
        self.with_failover(Retry::Idempotent, |addr| {
            let body = body.clone();
            let path = path.clone();
            async move {
                let resp = http.send(&addr, Method::POST, &path, Some(body)).await?;
                let resp = check(http, &addr, resp).await?;
                Ok(QueryStream::ndjson(Lines::new(
                    &addr,
                    resp.into_body(),
                    http.max_line,
                )))
            }
        })
        .await
    }

    /// Runs a query and decodes every row into `T`.
    ///
    /// ```no_run
    /// # async fn f(client: verdigris_client::Client) -> verdigris_client::Result<()> {
    /// #[derive(serde::Deserialize)]
    /// struct Machine { id: String, app: String, address: String }
    /// let ms: Vec<Machine> = client.query_as("SELECT id, app, address FROM machines").await?;
    /// let pairs: Vec<(i64, Option<String>)> = client.query_as("SELECT id, title FROM todos").await?;
    /// # Ok(()) }
    /// ```
    pub async fn query_as<T: DeserializeOwned + Send + 'static>(
        &self,
        stmt: impl Into<Statement>,
    ) -> Result<Vec<T>> {
        Ok(self.query_typed::<T>(stmt).await?.collect_rows().await?.1)
    }

    /// Runs a query: its column names and rows of values.
    pub async fn query_rows(
        &self,
        stmt: impl Into<Statement>,
    ) -> Result<(Vec<String>, Vec<Vec<SqliteValue>>)> {
        self.query(stmt).await?.collect_rows().await
    }

    /// Subscribes to a query: its rows, then its changes, resumed across disconnections
    /// and failovers (see [`Subscription`]). Nothing is sent until the stream is polled.
    pub fn subscribe<T: DeserializeOwned + Send + 'static>(
        &self,
        stmt: impl Into<Statement>,
        opts: SubscribeOptions,
    ) -> Subscription<T> {
        Subscription::new(self.clone(), stmt.into(), opts)
    }

    /// Subscribes and keeps the current rows (see [`LiveQuery`]).
    pub fn live_query<T: DeserializeOwned + Send + 'static>(
        &self,
        stmt: impl Into<Statement>,
        opts: SubscribeOptions,
    ) -> LiveQuery<T> {
        LiveQuery::new(self.subscribe(stmt, opts))
    }

    /// Runs a read-only query over the client's WebSocket. Errors (bad SQL included) are
    /// yielded by the stream. Rows wait for the reader up to
    /// [`ClientBuilder::ws_buffer_bytes`]; beyond, the query is abandoned with
    /// [`Error::Lagged`] (the connection never waits for one consumer).
    pub async fn ws_query(&self, stmt: impl Into<Statement>) -> Result<QueryStream> {
        self.ws_query_typed(stmt, None).await
    }

    /// [`Client::ws_query`] with typed rows and an optional node-side timeout.
    pub async fn ws_query_typed<T: DeserializeOwned + Send + 'static>(
        &self,
        stmt: impl Into<Statement>,
        timeout: Option<Duration>,
    ) -> Result<QueryStream<T>> {
        let handle = self.ws_handle();
        let feed = handle
            .query(stmt.into(), timeout.map(|t| t.as_secs_f64()))
            .await?;
        Ok(QueryStream::ws(feed, handle))
    }

    /// Runs a query over the WebSocket and decodes every row into `T`.
    pub async fn ws_query_as<T: DeserializeOwned + Send + 'static>(
        &self,
        stmt: impl Into<Statement>,
    ) -> Result<Vec<T>> {
        Ok(self
            .ws_query_typed::<T>(stmt, None)
            .await?
            .collect_rows()
            .await?
            .1)
    }

    /// Runs statements as one transaction over the WebSocket. Not retried: if the
    /// connection drops before the answer, the outcome is unknown
    /// ([`Error::ConnectionLost`]).
    pub async fn ws_execute(&self, stmts: &[Statement]) -> Result<ExecResponse> {
        self.ws_execute_inner(stmts, None).await
    }

    /// [`Client::ws_execute`] with the node's transaction timeout.
    pub async fn ws_execute_with_timeout(
        &self,
        stmts: &[Statement],
        timeout: Duration,
    ) -> Result<ExecResponse> {
        self.ws_execute_inner(stmts, Some(timeout)).await
    }

    async fn ws_execute_inner(
        &self,
        stmts: &[Statement],
        timeout: Option<Duration>,
    ) -> Result<ExecResponse> {
        let handle = self.ws_handle();
        let msg = ClientMessage::Transaction {
            id: handle.next_id('t'),
            statements: stmts.to_vec(),
            timeout: timeout.map(|t| t.as_secs_f64()),
        };
        let limit = self.wait_limit(timeout);
        let reply = self.ws_request(&handle, msg, limit).await?;
        match reply.body {
            ServerBody::Transaction(r) => match r.error {
                Some(message) => Err(Error::Server {
                    code: reply.code,
                    message,
                }),
                None => Ok(r),
            },
            ServerBody::Error(message) => Err(Error::Server {
                code: reply.code,
                message,
            }),
            other => Err(Error::decode(
                "the transaction reply",
                format!("unexpected {other:?}"),
            )),
        }
    }

    /// Pings the node over the WebSocket; the round-trip time.
    pub async fn ws_ping(&self) -> Result<Duration> {
        let handle = self.ws_handle();
        let start = Instant::now();
        let msg = ClientMessage::Ping {
            id: handle.next_id('p'),
        };
        let reply = self.ws_request(&handle, msg, self.wait_limit(None)).await?;
        match reply.body {
            ServerBody::Pong(_) => Ok(start.elapsed()),
            ServerBody::Error(message) => Err(Error::Server {
                code: reply.code,
                message,
            }),
            other => Err(Error::decode(
                "the ping reply",
                format!("unexpected {other:?}"),
            )),
        }
    }

    fn wait_limit(&self, node_timeout: Option<Duration>) -> Option<Duration> {
        let base = self.inner.cfg.request_timeout;
        match (base, node_timeout) {
            (Some(b), Some(t)) => Some(b.max(t + Duration::from_secs(5))),
            (b, _) => b,
        }
    }

    async fn ws_request(
        &self,
        handle: &WsHandle,
        msg: ClientMessage,
        limit: Option<Duration>,
    ) -> Result<crate::ws::RawMessage> {
        let fut = handle.request(msg);
        match limit {
            Some(t) => tokio::time::timeout(t, fut)
                .await
                .map_err(|_| Error::Timeout {
                    addr: self.current_node().to_string(),
                    after: t,
                })?,
            None => fut.await,
        }
    }
}
