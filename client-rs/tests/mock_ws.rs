//! The WebSocket subscription driver against a scripted node (no `verdigris` process):
//! gaps, `too_slow`, silent connections, giving up. The real node's behavior is covered by
//! the workspace's `tests/client`.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use verdigris_client::{
    Backoff, ChangeType, Client, Error, ResetReason, SubEvent, SubscribeOptions, Subscription,
};

const WAIT: Duration = Duration::from_secs(10);

/// `(authorization, subprotocol)` of every upgrade request.
type Upgrades = Arc<Mutex<Vec<(Option<String>, Option<String>)>>>;

/// A scripted node: hands each accepted WebSocket to the test.
struct Mock {
    addr: SocketAddr,
    conns: mpsc::Receiver<Conn>,
    upgrades: Upgrades,
}

struct Conn(WebSocketStream<TcpStream>);

impl Conn {
    /// The next client message (pings and pongs skipped).
    async fn recv(&mut self) -> Value {
        loop {
            let m = tokio::time::timeout(WAIT, self.0.next())
                .await
                .expect("a client message in time")
                .expect("socket open")
                .expect("socket ok");
            if let Message::Text(t) = m {
                return serde_json::from_str(t.as_str()).expect("client JSON");
            }
        }
    }

    async fn send(&mut self, v: Value) {
        self.0
            .send(Message::text(v.to_string()))
            .await
            .expect("send");
    }
}

// The handshake callback's error type is tungstenite's (a whole HTTP response).
#[allow(clippy::result_large_err)]
async fn mock() -> Mock {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel(8);
    let upgrades: Upgrades = Arc::new(Mutex::new(Vec::new()));
    let seen = upgrades.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let seen = seen.clone();
            let cb = move |req: &Request, mut resp: Response| {
                let h = |n: &str| {
                    req.headers()
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                };
                seen.lock()
                    .unwrap()
                    .push((h("authorization"), h("sec-websocket-protocol")));
                resp.headers_mut().insert(
                    "sec-websocket-protocol",
                    HeaderValue::from_static("verdigris.v1"),
                );
                Ok(resp)
            };
            match tokio_tungstenite::accept_hdr_async(tcp, cb).await {
                Ok(ws) => {
                    if tx.send(Conn(ws)).await.is_err() {
                        return;
                    }
                }
                Err(e) => eprintln!("mock handshake failed: {e}"),
            }
        }
    });
    Mock {
        addr,
        conns: rx,
        upgrades,
    }
}

impl Mock {
    async fn conn(&mut self) -> Conn {
        tokio::time::timeout(WAIT, self.conns.recv())
            .await
            .expect("a connection in time")
            .expect("mock running")
    }
}

fn fast() -> Backoff {
    Backoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(50),
        ..Backoff::default()
    }
}

async fn next<T: std::fmt::Debug>(sub: &mut Subscription<T>) -> SubEvent<T> {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("an event in time")
        .expect("stream open")
        .expect("no error")
}

/// Answers a fresh subscribe: columns (naming `qid`), rows, eoq at `cid`.
async fn snapshot(conn: &mut Conn, id: &Value, qid: &str, rows: &[i64], cid: u64) {
    conn.send(json!({"id": id, "columns": ["id"], "query_id": qid, "hash": "h"}))
        .await;
    for (i, r) in rows.iter().enumerate() {
        conn.send(json!({"id": id, "row": [i + 1, [r]]})).await;
    }
    conn.send(json!({"id": id, "eoq": {"time": 0.0, "change_id": cid}}))
        .await;
}

#[tokio::test]
async fn a_gap_resets_and_resubscribes_without_from() {
    let mut m = mock().await;
    let c = Client::builder([m.addr])
        .bearer_token("tok")
        .backoff(fast())
        .build()
        .unwrap();
    let mut sub = c.subscribe::<(i64,)>("SELECT id FROM t", SubscribeOptions::websocket());
    let node = tokio::spawn(async move {
        let mut conn = m.conn().await;
        let s = conn.recv().await;
        assert_eq!(s["type"], "subscribe");
        assert_eq!(s["sql"], "SELECT id FROM t");
        assert!(s.get("from").is_none());
        let id = s["id"].clone();
        snapshot(&mut conn, &id, "q1", &[1], 0).await;
        conn.send(json!({"id": id, "change": ["insert", 2, [2], 1]}))
            .await;
        conn.send(json!({"id": id, "change": ["insert", 3, [3], 3]}))
            .await;
        // The client drops the broken subscription and starts over.
        assert_eq!(conn.recv().await, json!({"type": "unsubscribe", "id": id}));
        conn.send(json!({"id": id, "unsubscribed": {}})).await;
        let s = conn.recv().await;
        assert_eq!(s["type"], "subscribe");
        assert!(
            s.get("from").is_none() && s.get("query_id").is_none(),
            "{s}"
        );
        assert_ne!(s["id"], id, "a new id");
        snapshot(&mut conn, &s["id"], "q2", &[1, 2, 3], 3).await;
        let upgrades = m.upgrades.lock().unwrap().clone();
        assert_eq!(
            upgrades,
            vec![(Some("Bearer tok".into()), Some("verdigris.v1".into()))]
        );
        conn
    });
    assert!(matches!(next(&mut sub).await, SubEvent::Columns(_)));
    assert_eq!(next(&mut sub).await, SubEvent::Row(1, (1,)));
    assert_eq!(
        next(&mut sub).await,
        SubEvent::EndOfQuery { change_id: Some(0) }
    );
    assert_eq!(
        next(&mut sub).await,
        SubEvent::Change(ChangeType::Insert, 2, (2,), 1)
    );
    assert_eq!(
        next(&mut sub).await,
        SubEvent::Reset(ResetReason::Gap {
            expected: 2,
            got: 3
        })
    );
    assert!(matches!(next(&mut sub).await, SubEvent::Columns(_)));
    for i in 1..=3 {
        assert_eq!(next(&mut sub).await, SubEvent::Row(i, (i as i64,)));
    }
    assert_eq!(
        next(&mut sub).await,
        SubEvent::EndOfQuery { change_id: Some(3) }
    );
    assert_eq!(sub.query_id().as_deref(), Some("q2"));
    node.await.unwrap();
}

#[tokio::test]
async fn too_slow_resumes_from_the_last_change() {
    let mut m = mock().await;
    let c = Client::builder([m.addr]).backoff(fast()).build().unwrap();
    let mut sub = c.subscribe::<(i64,)>("SELECT id FROM t", SubscribeOptions::websocket());
    let node = tokio::spawn(async move {
        let mut conn = m.conn().await;
        let s = conn.recv().await;
        let id = s["id"].clone();
        snapshot(&mut conn, &id, "q1", &[1], 5).await;
        conn.send(json!({"id": id, "change": ["update", 1, [10], 6]}))
            .await;
        conn.send(json!({"id": id, "error": "slow", "code": "too_slow", "last_change_id": 6}))
            .await;
        let s = conn.recv().await;
        assert_eq!(s["type"], "subscribe");
        assert_eq!(s["query_id"], "q1");
        assert_eq!(s["from"], 6);
        assert!(s.get("sql").is_none(), "{s}");
        conn.send(json!({"id": s["id"], "change": ["update", 1, [11], 7]}))
            .await;
        conn
    });
    let _ = (
        next(&mut sub).await,
        next(&mut sub).await,
        next(&mut sub).await,
    );
    assert_eq!(
        next(&mut sub).await,
        SubEvent::Change(ChangeType::Update, 1, (10,), 6)
    );
    // No reset: the changes continue.
    assert_eq!(
        next(&mut sub).await,
        SubEvent::Change(ChangeType::Update, 1, (11,), 7)
    );
    assert_eq!(sub.last_change_id(), Some(7));
    node.await.unwrap();
}

#[tokio::test]
async fn a_silent_connection_is_replaced_and_subscriptions_resume() {
    let mut m = mock().await;
    let c = Client::builder([m.addr])
        .backoff(fast())
        .ws_ping_interval(Duration::from_millis(100))
        .ws_idle_timeout(Duration::from_millis(400))
        .build()
        .unwrap();
    let mut sub = c.subscribe::<(i64,)>("SELECT id FROM t", SubscribeOptions::websocket());
    let node = tokio::spawn(async move {
        let mut first = m.conn().await;
        let s = first.recv().await;
        snapshot(&mut first, &s["id"], "q1", &[1], 2).await;
        // Then silence: no frames, no pongs (the socket is not read any more).
        let mut second = m.conn().await;
        let s = second.recv().await;
        assert_eq!(
            (&s["query_id"], &s["from"]),
            (&json!("q1"), &json!(2)),
            "{s}"
        );
        second
            .send(json!({"id": s["id"], "change": ["delete", 1, [1], 3]}))
            .await;
        (first, second)
    });
    let _ = (
        next(&mut sub).await,
        next(&mut sub).await,
        next(&mut sub).await,
    );
    assert_eq!(
        next(&mut sub).await,
        SubEvent::Change(ChangeType::Delete, 1, (1,), 3)
    );
    node.await.unwrap();
}

#[tokio::test]
async fn subscriptions_give_up_per_the_backoff_policy() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let c = Client::builder([dead])
        .backoff(Backoff {
            max_attempts: Some(3),
            ..fast()
        })
        .build()
        .unwrap();
    for opts in [SubscribeOptions::ndjson(), SubscribeOptions::websocket()] {
        let mut sub = c.subscribe::<(i64,)>("SELECT 1", opts.clone());
        let e = tokio::time::timeout(WAIT, sub.next())
            .await
            .expect("gives up in time")
            .expect("an item")
            .expect_err("an error");
        assert!(
            matches!(&e, Error::Exhausted { attempts: 3, last } if matches!(**last, Error::Connect { .. })),
            "{opts:?}: {e}"
        );
        assert!(sub.next().await.is_none());
    }
    // Requests over the WebSocket fail the same way.
    assert!(matches!(c.ws_ping().await, Err(Error::Exhausted { .. })));
}
