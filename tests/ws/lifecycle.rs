//! Closing: node shutdown, dead peers, and clients too slow for their subscriptions.

use crate::sock::{Opts, Sock};
use crate::support::NodeDir;
use crate::SCHEMA;
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_sockets_with_going_away() {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let mut ws = Sock::connect(node.addr()).await;
    ws.subscribe("s", "SELECT * FROM t").await;
    // An NDJSON subscriber too: its stream ends, so shutdown does not wait on it.
    let mut http = node
        .http1()
        .open_post("/v1/subscriptions", &json!("SELECT * FROM t"))
        .await;
    http.expect_line(Duration::from_secs(10)).await;
    let t0 = std::time::Instant::now();
    let stopper = std::thread::spawn(move || node.stop());
    // The subscription learns why it ends, then the socket closes.
    let m = ws.next_for("s").await;
    assert_eq!(m["code"], "shutdown", "{m}");
    let close = ws
        .closed(Duration::from_secs(15))
        .await
        .expect("a close frame");
    assert_eq!(close.code, CloseCode::Away);
    assert!(close.reason.contains("shutting down"), "{}", close.reason);
    let status = stopper.join().unwrap();
    assert!(status.success(), "{status}");
    // (Graceful shutdown gives open requests up to 5 s; nothing should need it.)
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "stopping took {:?}",
        t0.elapsed()
    );
    while let Some(line) = http.next_line(Duration::from_secs(5)).await {
        assert!(
            line.get("eoq").is_some() || line.get("row").is_some(),
            "{line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_answers_no_ping_is_closed() {
    let dir = NodeDir::builder()
        .schema(SCHEMA)
        .tail("[api.ws]\nping_interval_secs = 1\nidle_timeout_secs = 3")
        .build();
    let node = dir.start();
    // `quiet` completes the handshake, then never answers: a raw socket that only reads.
    let mut quiet = tokio::net::TcpStream::connect(node.addr()).await.unwrap();
    let req = format!(
        "GET /v1/ws HTTP/1.1\r\nhost: {}\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\
         sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        node.addr()
    );
    quiet.write_all(req.as_bytes()).await.unwrap();
    let mut chatty = Sock::connect(node.addr()).await;
    // `chatty` reads (so its library answers pings) for 5 s and stays open.
    let t0 = std::time::Instant::now();
    while t0.elapsed() < Duration::from_secs(5) {
        assert!(chatty.try_next(Duration::from_millis(200)).await.is_none());
    }
    chatty.sync("p").await;
    // `quiet` got pings, then a close frame 1008 naming the setting, then EOF.
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), quiet.read_to_end(&mut raw))
        .await
        .expect("the node closes the quiet socket")
        .unwrap();
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(
        raw.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&raw[..head_end])
    );
    let frames = server_frames(&raw[head_end..]);
    let (op, payload) = frames.last().expect("frames").clone();
    assert!(
        frames[..frames.len() - 1].iter().all(|(op, _)| *op == 0x9),
        "pings first"
    );
    assert_eq!(op, 0x8, "a close frame last");
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1008);
    let reason = String::from_utf8_lossy(&payload[2..]);
    assert!(reason.contains("idle_timeout_secs"), "{reason}");
}

/// Unmasked server frames (opcode, payload) of small payloads.
fn server_frames(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while b.len() >= 2 {
        let op = b[0] & 0x0f;
        let len = (b[1] & 0x7f) as usize;
        assert!(len < 126 && b[1] & 0x80 == 0, "small unmasked frames only");
        out.push((op, b[2..2 + len].to_vec()));
        b = &b[2 + len..];
    }
    out
}

fn value(i: usize) -> String {
    format!("{i:08}-{}", "x".repeat(16 * 1024))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_too_slow_for_its_subscription_gets_too_slow_and_resumes() {
    let dir = NodeDir::builder()
        .schema(SCHEMA)
        .tail("[api.ws]\nwrite_timeout_secs = 300")
        .build();
    let node = dir.start();
    let w = node.http1().with_nodelay();
    w.write(&json!([[
        "INSERT INTO t VALUES (1, ?, 0), (2, 'x', 0)",
        [value(0)]
    ]]))
    .await;
    let slow_opts = Opts {
        recv_buffer: Some(4096),
        ..Opts::default()
    };
    let mut slow = Sock::try_connect(node.addr(), slow_opts).await.unwrap();
    slow.subscribe("s", "SELECT id, a FROM t WHERE id = 1")
        .await;
    let mut other = Sock::connect(node.addr()).await;
    other
        .subscribe("o", "SELECT id, b FROM t WHERE id = 2")
        .await;

    // Each write is its own change batch; the slow client reads nothing meanwhile.
    let mut i = 0;
    let mut changes = Vec::new();
    let err = 'outer: loop {
        // Under load, rounds coalesce writes into fewer batches: allow many phases.
        assert!(i < 30_000, "no too_slow error after {i} writes");
        for _ in 0..1500 {
            i += 1;
            w.write(&json!([["UPDATE t SET a = ? WHERE id = 1", [value(i)]]]))
                .await;
        }
        w.write(&json!([["UPDATE t SET b = ? WHERE id = 2", [i]]]))
            .await;
        // The other socket is unaffected.
        let (_, _, cells, _) = other.change("o").await;
        assert_eq!(cells, json!([2, i]));
        // Drain what the slow client was sent; stop at the error or when nothing more comes.
        while let Some(m) = slow.try_next(Duration::from_secs(2)).await {
            let m = m.expect("socket open");
            if m.get("error").is_some() {
                break 'outer m;
            }
            let c = &m["change"];
            changes.push(c[3].as_u64().unwrap());
        }
    };
    assert_eq!(err["code"], "too_slow", "{err}");
    let last = err["last_change_id"].as_u64().expect("last_change_id");
    let want: Vec<u64> = (1..=last).collect();
    assert_eq!(changes, want, "contiguous changes up to the error");
    assert!(last < i as u64);
    // Resume from there on the same socket (the id is free after the error).
    slow.send(json!({"type": "subscribe", "id": "s", "sql": "SELECT id, a FROM t WHERE id = 1", "from": last}))
        .await;
    let (_, row_id, _, id) = slow.change("s").await;
    assert_eq!((row_id, id), (1, last + 1));
    assert!(node.panics().is_empty(), "{:?}", node.panics());
}
