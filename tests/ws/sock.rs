//! A raw WebSocket test client for `GET /v1/ws`: sends JSON messages, reads server messages
//! with a time limit, and keeps messages for other ids until the test asks for them.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// How long one read may wait.
pub const READ_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Sock {
    ws: WebSocketStream<TcpStream>,
    /// Messages read but not yet taken.
    pending: VecDeque<Value>,
    /// The subprotocol the node chose, if any.
    pub protocol: Option<String>,
}

/// A refused upgrade: status and body.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: String,
}

/// Connection options.
#[derive(Default, Clone)]
pub struct Opts<'a> {
    pub path: Option<&'a str>,
    pub headers: Vec<(&'a str, String)>,
    /// SO_RCVBUF of the client socket (a small one makes a slow reader).
    pub recv_buffer: Option<u32>,
}

impl Sock {
    pub async fn connect(addr: SocketAddr) -> Sock {
        Sock::try_connect(addr, Opts::default())
            .await
            .unwrap_or_else(|r| panic!("WebSocket upgrade refused: {r:?}"))
    }

    pub async fn try_connect(addr: SocketAddr, o: Opts<'_>) -> Result<Sock, Refused> {
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        if let Some(n) = o.recv_buffer {
            sock.set_recv_buffer_size(n).expect("SO_RCVBUF");
        }
        let tcp = tokio::time::timeout(Duration::from_secs(10), sock.connect(addr))
            .await
            .expect("connect timeout")
            .expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        let url = format!("ws://{addr}{}", o.path.unwrap_or("/v1/ws"));
        let mut req = url.into_client_request().expect("request");
        for (k, v) in &o.headers {
            req.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let fut = tokio_tungstenite::client_async(req, tcp);
        match tokio::time::timeout(Duration::from_secs(10), fut)
            .await
            .expect("upgrade timeout")
        {
            Ok((ws, resp)) => Ok(Sock {
                ws,
                pending: VecDeque::new(),
                protocol: resp
                    .headers()
                    .get("sec-websocket-protocol")
                    .map(|v| v.to_str().unwrap().to_string()),
            }),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(Refused {
                status: resp.status().as_u16(),
                body: String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default())
                    .into_owned(),
            }),
            Err(e) => panic!("WebSocket connect failed: {e}"),
        }
    }

    pub async fn send(&mut self, v: Value) {
        self.send_text(&v.to_string()).await
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .expect("send");
    }

    pub async fn send_frame(&mut self, m: Message) {
        self.ws.send(m).await.expect("send");
    }

    /// The next server message (any id): `None` on a timeout, `Err` when the socket closed.
    pub async fn try_next(&mut self, wait: Duration) -> Option<Result<Value, Option<CloseFrame>>> {
        if let Some(v) = self.pending.pop_front() {
            return Some(Ok(v));
        }
        self.read(tokio::time::Instant::now() + wait).await
    }

    /// Reads the socket (not the queue) until a text message, a close, or `deadline`.
    async fn read(
        &mut self,
        deadline: tokio::time::Instant,
    ) -> Option<Result<Value, Option<CloseFrame>>> {
        loop {
            let m = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return None,
                Ok(m) => m,
            };
            match m {
                None => return Some(Err(None)),
                Some(Ok(Message::Text(t))) => {
                    return Some(Ok(serde_json::from_str(&t).unwrap_or_else(|e| {
                        panic!("server message is not JSON ({e}): {t}")
                    })))
                }
                Some(Ok(Message::Close(f))) => return Some(Err(f)),
                Some(Ok(Message::Binary(b))) => panic!("the node sent a binary frame: {b:?}"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("WebSocket read failed: {e}"),
            }
        }
    }

    /// The next server message (any id).
    pub async fn next(&mut self) -> Value {
        match self.try_next(READ_TIMEOUT).await {
            Some(Ok(v)) => v,
            Some(Err(f)) => panic!("socket closed while a message was expected: {f:?}"),
            None => panic!("no message within {READ_TIMEOUT:?}"),
        }
    }

    /// The next message for `id`; messages for other ids stay queued.
    pub async fn next_for(&mut self, id: &str) -> Value {
        if let Some(pos) = self.pending.iter().position(|v| v["id"] == id) {
            return self.pending.remove(pos).unwrap();
        }
        let deadline = tokio::time::Instant::now() + READ_TIMEOUT;
        loop {
            match self.read(deadline).await {
                Some(Ok(v)) if v["id"] == id => return v,
                Some(Ok(v)) => self.pending.push_back(v),
                Some(Err(f)) => panic!("socket closed while waiting for {id}: {f:?}"),
                None => panic!(
                    "no message for {id} within {READ_TIMEOUT:?} (queued: {:?})",
                    self.pending
                ),
            }
        }
    }

    /// A subscription's or query's snapshot: (columns message, rows, eoq).
    pub async fn snapshot(&mut self, id: &str) -> (Value, Vec<Value>, Value) {
        let cols = self.next_for(id).await;
        assert!(
            cols.get("columns").is_some(),
            "expected columns for {id}: {cols}"
        );
        let mut rows = Vec::new();
        loop {
            let m = self.next_for(id).await;
            if let Some(r) = m.get("row") {
                rows.push(r.clone());
            } else if m.get("eoq").is_some() {
                return (cols, rows, m);
            } else {
                panic!("expected row or eoq for {id}: {m}");
            }
        }
    }

    /// Subscribes to `sql` and reads its snapshot.
    pub async fn subscribe(&mut self, id: &str, sql: &str) -> (Value, Vec<Value>, Value) {
        self.send(json!({"type": "subscribe", "id": id, "sql": sql}))
            .await;
        self.snapshot(id).await
    }

    /// The next `change` for `id` as (type, row id, cells, change id).
    pub async fn change(&mut self, id: &str) -> (String, u64, Value, u64) {
        let m = self.next_for(id).await;
        let c = m
            .get("change")
            .unwrap_or_else(|| panic!("expected a change for {id}: {m}"));
        (
            c[0].as_str().unwrap().to_string(),
            c[1].as_u64().unwrap(),
            c[2].clone(),
            c[3].as_u64().unwrap(),
        )
    }

    /// Runs a transaction over the socket and returns its reply.
    pub async fn transact(&mut self, id: &str, statements: Value) -> Value {
        self.send(json!({"type": "transaction", "id": id, "statements": statements}))
            .await;
        self.next_for(id).await
    }

    /// Sends a ping and returns once its pong arrives: every message the node produced
    /// before it for this socket has been read (they are queued).
    pub async fn sync(&mut self, id: &str) {
        self.send(json!({"type": "ping", "id": id})).await;
        let pong = self.next_for(id).await;
        assert_eq!(pong, json!({"id": id, "pong": {}}));
    }

    /// Queued messages for `id` (after a [`Sock::sync`]).
    pub fn queued_for(&self, id: &str) -> Vec<Value> {
        self.pending
            .iter()
            .filter(|v| v["id"] == id)
            .cloned()
            .collect()
    }

    /// Reads until the node closes the socket; its close frame.
    pub async fn closed(&mut self, wait: Duration) -> Option<CloseFrame> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.try_next(left).await {
                Some(Ok(_)) => continue,
                Some(Err(f)) => return f,
                None => panic!("the node did not close the socket within {wait:?}"),
            }
        }
    }
}
