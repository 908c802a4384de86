//! Long-lived NDJSON responses (subscription and updates streams) read incrementally, line by
//! line as they arrive, with a time limit per line; and clients with `TCP_NODELAY`.

use super::{full, Api, Proto, ReqBody, Resp, HTTP_TIMEOUT};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::header::HeaderMap;
use hyper::{Method, StatusCode, Version};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::time::Duration;

/// What [`LineStream::poll_line`] found.
#[derive(Debug)]
pub enum Next {
    /// One complete NDJSON line, parsed.
    Line(Value),
    /// The body ended cleanly (no partial line pending).
    End,
    /// Reading the body failed (connection reset, h2 stream error…).
    Failed(String),
    /// Nothing complete arrived within the time limit (the stream is still usable).
    Timeout,
}

impl Next {
    pub fn is_timeout(&self) -> bool {
        matches!(self, Next::Timeout)
    }
}

/// A response whose body is read incrementally, one NDJSON line at a time, as it arrives
/// (subscription and updates streams never end on their own).
pub struct LineStream {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub what: String,
    body: Option<hyper::body::Incoming>,
    buf: Vec<u8>,
}

impl LineStream {
    /// A response header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Waits up to `timeout` for the next complete line. Cancel-safe: a timeout loses nothing.
    pub async fn poll_line(&mut self, timeout: Duration) -> Next {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                let line = &line[..line.len() - 1];
                return Next::Line(serde_json::from_slice(line).unwrap_or_else(|e| {
                    panic!(
                        "{}: NDJSON line is not JSON ({e}): {:?}",
                        self.what,
                        String::from_utf8_lossy(line)
                    )
                }));
            }
            let Some(body) = self.body.as_mut() else {
                assert!(
                    self.buf.is_empty(),
                    "{}: stream ended in the middle of a line: {:?}",
                    self.what,
                    String::from_utf8_lossy(&self.buf)
                );
                return Next::End;
            };
            match tokio::time::timeout_at(deadline, body.frame()).await {
                Err(_) => return Next::Timeout,
                Ok(None) => self.body = None,
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Ok(Some(Err(e))) => {
                    self.body = None;
                    return Next::Failed(format!("{e:?}"));
                }
            }
        }
    }

    /// The next line, or `None` at a clean end of stream; panics on a timeout or read error.
    pub async fn next_line(&mut self, timeout: Duration) -> Option<Value> {
        match self.poll_line(timeout).await {
            Next::Line(v) => Some(v),
            Next::End => None,
            Next::Failed(e) => panic!("{}: reading the stream failed: {e}", self.what),
            Next::Timeout => panic!("{}: no complete line within {timeout:?}", self.what),
        }
    }

    /// The next line; panics at the end of the stream, on a timeout or read error.
    pub async fn expect_line(&mut self, timeout: Duration) -> Value {
        let what = self.what.clone();
        self.next_line(timeout)
            .await
            .unwrap_or_else(|| panic!("{what}: stream ended, expected another line"))
    }

    /// Asserts the stream ends (cleanly) within `timeout` without sending another line.
    pub async fn expect_end(&mut self, timeout: Duration) {
        if let Some(v) = self.next_line(timeout).await {
            panic!("{}: expected the end of the stream, got {v}", self.what);
        }
    }

    /// Reads the rest of the body (which must end within `timeout`) as a complete [`Resp`]:
    /// for non-streaming answers such as JSON errors.
    pub async fn into_resp(mut self, timeout: Duration) -> Resp {
        let mut body = std::mem::take(&mut self.buf);
        if let Some(b) = self.body.take() {
            let rest = tokio::time::timeout(timeout, b.collect())
                .await
                .unwrap_or_else(|_| panic!("{}: body did not end within {timeout:?}", self.what))
                .unwrap_or_else(|e| panic!("{}: reading the body failed: {e:?}", self.what))
                .to_bytes();
            body.extend_from_slice(&rest);
        }
        Resp {
            status: self.status,
            version: self.version,
            headers: self.headers,
            body: Bytes::from(body),
        }
    }
}

impl Api {
    /// The same client on a connector with `TCP_NODELAY` (as real clients such as reqwest
    /// set it): without it, an h2c request's separate HEADERS and DATA writes can wait for
    /// the server's delayed ACK (~40 ms per request on Linux).
    pub fn with_nodelay(mut self) -> Api {
        let mut b = Client::builder(TokioExecutor::new());
        if self.proto == Proto::H2c {
            b.http2_only(true);
        }
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        self.client = b.build(conn);
        self
    }

    /// Sends a request and returns as soon as the response head arrives (within
    /// [`HTTP_TIMEOUT`]); the body is then read with the [`LineStream`] methods.
    pub async fn open(
        &self,
        method: Method,
        path: &str,
        body: ReqBody,
        headers: &[(&str, &str)],
    ) -> LineStream {
        let req = self.request(&method, path, body, headers);
        let what = format!("{method} {path} ({:?})", self.proto);
        let resp = tokio::time::timeout(HTTP_TIMEOUT, self.client.request(req))
            .await
            .unwrap_or_else(|_| panic!("{what}: no response head within {HTTP_TIMEOUT:?}"))
            .unwrap_or_else(|e| panic!("{what}: request failed: {e:?}"));
        let expected = match self.proto {
            Proto::Http1 => Version::HTTP_11,
            Proto::H2c => Version::HTTP_2,
        };
        assert_eq!(
            resp.version(),
            expected,
            "{what}: answered with the wrong HTTP version"
        );
        let (parts, body) = resp.into_parts();
        LineStream {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            what,
            body: Some(body),
            buf: Vec::new(),
        }
    }

    /// POST a JSON value (`application/json`) and stream the answer.
    pub async fn open_post(&self, path: &str, body: &Value) -> LineStream {
        let bytes = serde_json::to_vec(body).expect("json");
        self.open(
            Method::POST,
            path,
            full(bytes),
            &[("content-type", "application/json")],
        )
        .await
    }

    /// GET and stream the answer.
    pub async fn open_get(&self, path: &str) -> LineStream {
        self.open(Method::GET, path, full(Bytes::new()), &[]).await
    }
}
