//! Client configuration: node addresses, protocol, token, timeouts and limits.

use crate::backoff::Backoff;
use crate::error::{Error, Result};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// One node's API address, `host:port` (an IP address or a name resolved at connect time).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeAddr(String);

impl NodeAddr {
    /// Parses `host:port`, `[v6]:port`, optionally prefixed by `http://` (ignored).
    pub fn parse(s: &str) -> Result<NodeAddr> {
        let s = s.trim();
        let s = s.strip_prefix("http://").unwrap_or(s).trim_end_matches('/');
        let bad = || {
            Error::Config(format!(
                "{s:?} is not a node address; expected host:port, e.g. 127.0.0.1:8080"
            ))
        };
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        if host.is_empty() || port.parse::<u16>().is_err() || s.contains(['/', ' ', '@']) {
            return Err(bad());
        }
        if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
            return Err(bad());
        }
        Ok(NodeAddr(s.to_string()))
    }

    /// `host:port`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<SocketAddr> for NodeAddr {
    fn from(a: SocketAddr) -> Self {
        NodeAddr(a.to_string())
    }
}

/// Anything that names a node: a [`SocketAddr`], a `"host:port"` string, a [`NodeAddr`].
pub trait IntoNodeAddr {
    fn into_node_addr(self) -> Result<NodeAddr>;
}

impl IntoNodeAddr for NodeAddr {
    fn into_node_addr(self) -> Result<NodeAddr> {
        Ok(self)
    }
}
impl IntoNodeAddr for SocketAddr {
    fn into_node_addr(self) -> Result<NodeAddr> {
        Ok(self.into())
    }
}
impl IntoNodeAddr for &SocketAddr {
    fn into_node_addr(self) -> Result<NodeAddr> {
        Ok((*self).into())
    }
}
impl IntoNodeAddr for &str {
    fn into_node_addr(self) -> Result<NodeAddr> {
        NodeAddr::parse(self)
    }
}
impl IntoNodeAddr for String {
    fn into_node_addr(self) -> Result<NodeAddr> {
        NodeAddr::parse(&self)
    }
}
impl IntoNodeAddr for &String {
    fn into_node_addr(self) -> Result<NodeAddr> {
        NodeAddr::parse(self)
    }
}

/// The HTTP protocol for requests (the WebSocket always upgrades an HTTP/1.1 connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HttpVersion {
    /// HTTP/1.1 with keep-alive: a pool of connections per node.
    #[default]
    Http1,
    /// HTTP/2 cleartext with prior knowledge (h2c), as Corrosion's client speaks: one
    /// connection per node carries every request and subscription.
    H2c,
}

/// Everything the client was built with.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub nodes: Vec<NodeAddr>,
    pub token: Option<String>,
    pub http_version: HttpVersion,
    pub connect_timeout: Duration,
    pub request_timeout: Option<Duration>,
    pub request_attempts: Option<u32>,
    pub backoff: Backoff,
    pub ws_ping_interval: Duration,
    pub ws_idle_timeout: Duration,
    pub subscription_buffer: usize,
    pub ws_buffer_bytes: usize,
    pub max_line_bytes: usize,
    pub max_ws_requests: usize,
}

/// Builds a [`Client`](crate::Client).
///
/// ```
/// use std::time::Duration;
/// use verdigris_client::{Backoff, Client, HttpVersion};
///
/// let client = Client::builder(["10.0.0.1:8080", "10.0.0.2:8080"])
///     .bearer_token("secret")
///     .http_version(HttpVersion::H2c)
///     .request_timeout(Duration::from_secs(10))
///     .backoff(Backoff { max_attempts: Some(20), ..Backoff::default() })
///     .build()?;
/// # Ok::<(), verdigris_client::Error>(())
/// ```
#[derive(Debug)]
pub struct ClientBuilder {
    nodes: Vec<Result<NodeAddr>>,
    cfg: Config,
}

impl ClientBuilder {
    pub(crate) fn new<I, A>(addrs: I) -> ClientBuilder
    where
        I: IntoIterator<Item = A>,
        A: IntoNodeAddr,
    {
        ClientBuilder {
            nodes: addrs
                .into_iter()
                .map(IntoNodeAddr::into_node_addr)
                .collect(),
            cfg: Config {
                nodes: Vec::new(),
                token: None,
                http_version: HttpVersion::Http1,
                connect_timeout: Duration::from_secs(5),
                request_timeout: Some(Duration::from_secs(60)),
                request_attempts: None,
                backoff: Backoff::default(),
                ws_ping_interval: Duration::from_secs(15),
                ws_idle_timeout: Duration::from_secs(45),
                subscription_buffer: 4096,
                ws_buffer_bytes: 64 << 20,
                max_line_bytes: 64 << 20,
                max_ws_requests: 10_000,
            },
        }
    }

    /// Sends `Authorization: Bearer <token>` on every request and on the WebSocket upgrade.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.cfg.token = Some(token.into());
        self
    }

    /// HTTP/1.1 keep-alive (default) or h2c.
    pub fn http_version(mut self, v: HttpVersion) -> Self {
        self.cfg.http_version = v;
        self
    }

    /// Time limit for establishing a TCP connection (default 5 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.cfg.connect_timeout = d;
        self
    }

    /// Time limit for a request's answer (default 60 s): the whole answer of a transaction,
    /// the response head of a query or subscription (their streams may last longer).
    /// `None` disables it.
    pub fn request_timeout(mut self, d: impl Into<Option<Duration>>) -> Self {
        self.cfg.request_timeout = d.into();
        self
    }

    /// Reconnection and retry policy (default: 100 ms doubling to 10 s, full jitter, forever
    /// for subscriptions).
    pub fn backoff(mut self, b: Backoff) -> Self {
        self.cfg.backoff = b;
        self
    }

    /// Attempts per request (`execute`, `query`) across the nodes before giving up
    /// (default: two rounds over the nodes, at least 3).
    pub fn request_attempts(mut self, n: u32) -> Self {
        self.cfg.request_attempts = Some(n.max(1));
        self
    }

    /// How often the WebSocket connection (and an h2c connection with open streams) pings
    /// the node (default 15 s).
    pub fn ws_ping_interval(mut self, d: Duration) -> Self {
        self.cfg.ws_ping_interval = d;
        self
    }

    /// A WebSocket connection that received nothing for this long is considered dead and
    /// replaced (default 45 s); an h2c connection whose ping is not answered within this
    /// minus the ping interval is closed.
    pub fn ws_idle_timeout(mut self, d: Duration) -> Self {
        self.cfg.ws_idle_timeout = d;
        self
    }

    /// Changes buffered per WebSocket subscription before it counts as fallen behind
    /// (default 4096). The connection never waits for one slow consumer: a subscription
    /// whose buffer fills is unsubscribed on the node, and re-subscribes with a fresh
    /// snapshot ([`SubEvent::Reset`](crate::SubEvent::Reset)) when its consumer reads again.
    pub fn subscription_buffer(mut self, n: usize) -> Self {
        self.cfg.subscription_buffer = n.max(1);
        self
    }

    /// Bytes buffered per WebSocket subscription or query (all events, snapshot and query
    /// rows included) before it counts as fallen behind (default 64 MiB). A query over it
    /// fails with [`Error::Lagged`].
    pub fn ws_buffer_bytes(mut self, n: usize) -> Self {
        self.cfg.ws_buffer_bytes = n.max(64 * 1024);
        self
    }

    /// Longest NDJSON line accepted (default 64 MiB); a longer one is a decode error.
    pub fn max_line_bytes(mut self, n: usize) -> Self {
        self.cfg.max_line_bytes = n.max(1024);
        self
    }

    /// Subscriptions and requests in flight on the WebSocket at once (default 10,000).
    pub fn max_ws_requests(mut self, n: usize) -> Self {
        self.cfg.max_ws_requests = n.max(1);
        self
    }

    pub fn build(mut self) -> Result<crate::Client> {
        for n in self.nodes {
            self.cfg.nodes.push(n?);
        }
        if self.cfg.nodes.is_empty() {
            return Err(Error::Config("no node address given".into()));
        }
        if let Some(t) = &self.cfg.token {
            if t.is_empty()
                || t.bytes()
                    .any(|b| b.is_ascii_control() || b == b' ' || !b.is_ascii())
            {
                return Err(Error::Config(
                    "the bearer token must be non-empty printable ASCII without spaces".into(),
                ));
            }
        }
        if self.cfg.ws_idle_timeout <= self.cfg.ws_ping_interval {
            return Err(Error::Config(format!(
                "ws_idle_timeout ({:?}) must be longer than ws_ping_interval ({:?})",
                self.cfg.ws_idle_timeout, self.cfg.ws_ping_interval
            )));
        }
        Ok(crate::Client::from_config(self.cfg))
    }
}

/// The node list and which one is current, shared by every request and the WebSocket.
#[derive(Debug)]
pub(crate) struct Nodes {
    addrs: Vec<NodeAddr>,
    current: AtomicUsize,
}

impl Nodes {
    pub fn new(addrs: Vec<NodeAddr>) -> Nodes {
        Nodes {
            addrs,
            current: AtomicUsize::new(0),
        }
    }

    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    /// The current node: its index and address.
    pub fn current(&self) -> (usize, &NodeAddr) {
        let i = self.current.load(Ordering::Relaxed) % self.addrs.len();
        (i, &self.addrs[i])
    }

    pub fn get(&self, i: usize) -> &NodeAddr {
        &self.addrs[i % self.addrs.len()]
    }

    /// Moves past node `failed` (if it is still current: concurrent failures of one node
    /// advance once). Returns the new current index.
    pub fn advance(&self, failed: usize) -> usize {
        let next = (failed + 1) % self.addrs.len();
        match self
            .current
            .compare_exchange(failed, next, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => {
                if self.addrs.len() > 1 {
                    tracing::info!(from = %self.addrs[failed], to = %self.addrs[next], "failing over to the next node");
                }
                next
            }
            Err(now) => now % self.addrs.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse() {
        assert_eq!(
            NodeAddr::parse("127.0.0.1:8080").unwrap().as_str(),
            "127.0.0.1:8080"
        );
        assert_eq!(
            NodeAddr::parse("http://node-1:80/").unwrap().as_str(),
            "node-1:80"
        );
        assert_eq!(
            NodeAddr::parse("[::1]:8080").unwrap().as_str(),
            "[::1]:8080"
        );
        for bad in [
            "",
            "host",
            "host:",
            ":80",
            "host:99999",
            "::1:80",
            "a b:1",
            "h:1/x",
        ] {
            assert!(NodeAddr::parse(bad).is_err(), "{bad:?}");
        }
        let sa: SocketAddr = "[::1]:9".parse().unwrap();
        assert_eq!(sa.into_node_addr().unwrap().as_str(), "[::1]:9");
    }

    #[test]
    fn advance_moves_once_per_failure() {
        let n = Nodes::new(vec![
            NodeAddr::parse("a:1").unwrap(),
            NodeAddr::parse("b:1").unwrap(),
            NodeAddr::parse("c:1").unwrap(),
        ]);
        assert_eq!(n.current().0, 0);
        assert_eq!(n.advance(0), 1);
        // A second failure report about node 0 (already left) does not skip node 1.
        assert_eq!(n.advance(0), 1);
        assert_eq!(n.advance(1), 2);
        assert_eq!(n.advance(2), 0);
        assert_eq!(n.current().1.as_str(), "a:1");
    }

    #[test]
    fn builder_validates() {
        assert!(ClientBuilder::new(Vec::<&str>::new()).build().is_err());
        assert!(ClientBuilder::new(["x"]).build().is_err());
        assert!(ClientBuilder::new(["a:1"])
            .bearer_token("a b")
            .build()
            .is_err());
        assert!(ClientBuilder::new(["a:1"])
            .ws_ping_interval(Duration::from_secs(50))
            .build()
            .is_err());
    }
}
