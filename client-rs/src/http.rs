//! HTTP requests to one node (hyper 1, HTTP/1.1 keep-alive or h2c), error classification,
//! and NDJSON line reading.

use crate::config::{Config, HttpVersion, NodeAddr};
use crate::error::{Error, Result};
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::time::Duration;

/// Largest error body read to extract its message.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Sends requests to any node; connection pooling is per node address.
#[derive(Debug, Clone)]
pub(crate) struct Http {
    client: HyperClient<HttpConnector, Full<Bytes>>,
    auth: Option<HeaderValue>,
    request_timeout: Option<Duration>,
    pub max_line: usize,
}

impl Http {
    pub fn new(cfg: &Config) -> Http {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_connect_timeout(Some(cfg.connect_timeout));
        conn.enforce_http(true);
        // A long-lived NDJSON stream from a node that vanished without a reset is noticed
        // by TCP keep-alive (about 30 s) instead of never.
        conn.set_keepalive(Some(Duration::from_secs(15)));
        conn.set_keepalive_interval(Some(Duration::from_secs(5)));
        conn.set_keepalive_retries(Some(3));
        let mut b = HyperClient::builder(TokioExecutor::new());
        b.pool_idle_timeout(Duration::from_secs(60))
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new());
        if cfg.http_version == HttpVersion::H2c {
            // HTTP/2 pings on connections with open streams, as the WebSocket does.
            b.http2_only(true)
                .http2_keep_alive_interval(cfg.ws_ping_interval)
                .http2_keep_alive_timeout(cfg.ws_idle_timeout.saturating_sub(cfg.ws_ping_interval));
        }
        Http {
            client: b.build(conn),
            auth: cfg.token.as_ref().map(|t| {
                let mut v = HeaderValue::from_str(&format!("Bearer {t}"))
                    .expect("token validated by the builder");
                v.set_sensitive(true);
                v
            }),
            request_timeout: cfg.request_timeout,
            max_line: cfg.max_line_bytes,
        }
    }

    /// The same client with another request timeout.
    pub fn with_timeout(&self, t: Option<Duration>) -> Http {
        Http {
            request_timeout: t,
            ..self.clone()
        }
    }

    /// Sends one request and waits for the response head (bounded by the request timeout).
    /// Any status is `Ok`; see [`check`] for turning error statuses into [`Error::Http`].
    pub async fn send(
        &self,
        addr: &NodeAddr,
        method: Method,
        path_and_query: &str,
        body: Option<Bytes>,
    ) -> Result<Response<Incoming>> {
        let uri = format!("http://{addr}{path_and_query}");
        let mut req = Request::builder().method(method).uri(&uri);
        if body.is_some() {
            req = req.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        if let Some(a) = &self.auth {
            req = req.header(AUTHORIZATION, a.clone());
        }
        let req = req
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| Error::Config(format!("cannot build a request for {uri}: {e}")))?;
        let fut = self.client.request(req);
        let res = match self.request_timeout {
            Some(t) => tokio::time::timeout(t, fut)
                .await
                .map_err(|_| Error::Timeout {
                    addr: addr.to_string(),
                    after: t,
                })?,
            None => fut.await,
        };
        res.map_err(|e| {
            // hyper's own text is terse ("client error (Connect)"): keep the causes.
            let source = chain(&e).into();
            if e.is_connect() {
                Error::Connect {
                    addr: addr.to_string(),
                    source,
                }
            } else {
                Error::Transport {
                    addr: addr.to_string(),
                    source,
                }
            }
        })
    }

    /// Reads a whole body (bounded by the request timeout and `limit` bytes).
    pub async fn read_body(&self, addr: &NodeAddr, body: Incoming, limit: usize) -> Result<Bytes> {
        let fut = read_limited(addr, body, limit);
        match self.request_timeout {
            Some(t) => tokio::time::timeout(t, fut)
                .await
                .map_err(|_| Error::Timeout {
                    addr: addr.to_string(),
                    after: t,
                })?,
            None => fut.await,
        }
    }
}

/// An error and its causes, `a: b: c`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

async fn read_limited(addr: &NodeAddr, mut body: Incoming, limit: usize) -> Result<Bytes> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Error::Transport {
            addr: addr.to_string(),
            source: chain(&e).into(),
        })?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(Error::decode(
                    format!("the answer of {addr}"),
                    format!("longer than {limit} bytes"),
                ));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// The node's message in an error body: `{"error": "…"}`, else the body as text.
pub(crate) fn error_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct E {
        error: String,
    }
    match serde_json::from_slice::<E>(body) {
        Ok(e) => e.error,
        Err(_) => String::from_utf8_lossy(body).trim().to_string(),
    }
}

/// `Ok(resp)` for a 2xx status; otherwise reads the body and returns [`Error::Http`].
pub(crate) async fn check(
    http: &Http,
    addr: &NodeAddr,
    resp: Response<Incoming>,
) -> Result<Response<Incoming>> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status().as_u16();
    let message = match http.read_body(addr, resp.into_body(), MAX_ERROR_BODY).await {
        Ok(b) => error_message(&b),
        Err(e) => format!("(error body unreadable: {e})"),
    };
    Err(Error::Http {
        addr: addr.to_string(),
        status,
        message,
    })
}

/// Splits a streamed body into lines as they arrive.
pub(crate) struct Lines {
    body: Incoming,
    buf: BytesMut,
    max: usize,
    addr: String,
    eof: bool,
}

impl Lines {
    pub fn new(addr: &NodeAddr, body: Incoming, max: usize) -> Lines {
        Lines {
            body,
            buf: BytesMut::new(),
            max,
            addr: addr.to_string(),
            eof: false,
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The next non-empty line (without its `\n`), `None` at the end of the body.
    pub async fn next_line(&mut self) -> Result<Option<Bytes>> {
        let mut scanned = 0;
        loop {
            if let Some(pos) = self.buf[scanned..].iter().position(|b| *b == b'\n') {
                let line = self.buf.split_to(scanned + pos + 1).freeze();
                let line = line.slice(..line.len() - 1);
                scanned = 0;
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Ok(Some(line));
            }
            scanned = self.buf.len();
            if self.buf.len() > self.max {
                return Err(Error::decode(
                    format!("a line from {}", self.addr),
                    format!("longer than {} bytes", self.max),
                ));
            }
            if self.eof {
                if self.buf.iter().all(u8::is_ascii_whitespace) {
                    return Ok(None);
                }
                // A last line without its newline.
                let rest = self.buf.split().freeze();
                return Ok(Some(rest));
            }
            match self.body.frame().await {
                None => self.eof = true,
                Some(Err(e)) => {
                    return Err(Error::Transport {
                        addr: self.addr.clone(),
                        source: chain(&e).into(),
                    })
                }
                Some(Ok(frame)) => {
                    if let Ok(mut data) = frame.into_data() {
                        while data.has_remaining() {
                            let chunk = data.chunk();
                            self.buf.extend_from_slice(chunk);
                            let n = chunk.len();
                            data.advance(n);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies() {
        assert_eq!(
            error_message(br#"{"error":"no such table: x"}"#),
            "no such table: x"
        );
        assert_eq!(error_message(b" plain text \n"), "plain text");
        // A failed transaction's body carries more fields; the message is still found.
        assert_eq!(
            error_message(
                br#"{"error":"bad","results":[{"error":"bad"}],"time":0,"version":null}"#
            ),
            "bad"
        );
    }
}
