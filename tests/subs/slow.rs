//! A subscriber that stops reading is eventually disconnected with a final in-stream
//! `{"error": "subscriber too slow: disconnected after change id N; resume with
//! GET /v1/subscriptions/<id>?from=N"}`; writes and other subscribers are unaffected, and
//! resuming with `from=N` yields exactly the changes after N.
//!
//! The slow subscriber is a raw HTTP/1.1 client on a socket with a tiny receive buffer that
//! reads nothing while thousands of separate transactions each change the subscribed row
//! with a 16 KiB value (one change per matcher round, so one queued batch per write).

use crate::client::{parse_change, Sub};
use crate::support::{Api, NodeDir, Proto};
use crate::SCHEMA;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Writes per phase before checking whether the slow subscriber was cut off.
const PHASE_WRITES: usize = 2500;
/// Overall limit for provoking the disconnection.
const LAG_DEADLINE: Duration = Duration::from_secs(90);

fn value(i: usize) -> String {
    format!("{i:08}-{}", "x".repeat(16 * 1024))
}

/// Decodes as much of a chunked body as is complete: (data, saw the final 0-size chunk).
fn dechunk(raw: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        let Some(eol) = raw[pos..].windows(2).position(|w| w == b"\r\n") else {
            return (out, false);
        };
        let size_text = std::str::from_utf8(&raw[pos..pos + eol]).expect("chunk size line");
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .unwrap_or_else(|e| panic!("bad chunk size {size_text:?}: {e}"));
        let start = pos + eol + 2;
        if size == 0 {
            return (out, true);
        }
        if raw.len() < start + size + 2 {
            return (out, false);
        }
        out.extend_from_slice(&raw[start..start + size]);
        assert_eq!(
            &raw[start + size..start + size + 2],
            b"\r\n",
            "chunk terminator"
        );
        pos = start + size + 2;
    }
}

/// The raw slow subscriber: the bytes read so far (head included).
struct RawSub {
    conn: TcpStream,
    raw: Vec<u8>,
}

impl RawSub {
    async fn open(api: &Api, sql: &str) -> RawSub {
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        sock.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let mut conn = tokio::time::timeout(Duration::from_secs(10), sock.connect(api.addr))
            .await
            .expect("connect timeout")
            .expect("connect");
        let body = serde_json::to_vec(&json!(sql)).unwrap();
        let head = format!(
            "POST /v1/subscriptions HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n",
            api.addr,
            body.len()
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        conn.write_all(&body).await.unwrap();
        let mut s = RawSub {
            conn,
            raw: Vec::new(),
        };
        // Read just the response head: the listener is registered once it is sent.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !s.raw.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut buf = [0u8; 512];
            let n = tokio::time::timeout_at(deadline, s.conn.read(&mut buf))
                .await
                .expect("no response head within 30 s")
                .expect("read");
            assert!(n > 0, "connection closed before the response head");
            s.raw.extend_from_slice(&buf[..n]);
        }
        s
    }

    /// Reads everything available until the body ends or nothing arrives for `idle`.
    async fn drain(&mut self, idle: Duration) {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            // The final zero-size chunk (checked fully by `parts`).
            if self.raw.ends_with(b"\r\n0\r\n\r\n") && self.parts().2 {
                return;
            }
            match tokio::time::timeout(idle, self.conn.read(&mut buf)).await {
                Err(_) => return,
                Ok(Ok(0)) => return,
                Ok(Ok(n)) => self.raw.extend_from_slice(&buf[..n]),
                Ok(Err(e)) => panic!("slow subscriber read failed: {e}"),
            }
        }
    }

    /// (head, decoded body, body complete).
    fn parts(&self) -> (String, Vec<u8>, bool) {
        let end = self.raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let head = String::from_utf8_lossy(&self.raw[..end]).to_lowercase();
        assert!(
            head.contains("transfer-encoding: chunked"),
            "expected a chunked stream: {head}"
        );
        let (body, done) = dechunk(&self.raw[end..]);
        (head, body, done)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_subscriber_is_cut_off_and_can_resume() {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let w = node.http1().with_nodelay();
    w.write(&json!([[
        "INSERT INTO t VALUES (1, ?, 0), (2, 'other', 0)",
        [value(0)]
    ]]))
    .await;
    let sql = "SELECT id, a FROM t WHERE id = 1";
    let mut slow = RawSub::open(&node.http1().with_nodelay(), sql).await;
    let head = slow.parts().0;
    assert!(head.starts_with("http/1.1 200"), "{head}");

    // An active subscriber of the same subscription, and one of another subscription.
    let mut active = Sub::post(&node.h2c().with_nodelay(), &json!(sql)).await;
    assert_eq!(active.eoq_change_id, 0);
    let id = active.id.clone();
    assert!(head.contains(&format!("corro-query-id: {id}")), "{head}");
    let other_q = json!("SELECT id, b FROM t WHERE id = 2");
    let mut other = Sub::post(&node.http1().with_nodelay(), &other_q).await;
    let reader = tokio::spawn(async move {
        // Reads until the final value; validates every event on the way.
        loop {
            let c = active
                .try_change(Duration::from_secs(120))
                .await
                .expect("active subscriber: no change for 120 s");
            if c.cells[1].as_str().is_some_and(|s| s.starts_with("final")) {
                return active;
            }
        }
    });

    let deadline = tokio::time::Instant::now() + LAG_DEADLINE;
    let mut i = 0;
    let t0 = std::time::Instant::now();
    let cut_off = loop {
        eprintln!("phase start at {:?}, {i} writes", t0.elapsed());
        for _ in 0..PHASE_WRITES {
            i += 1;
            w.write(&json!([["UPDATE t SET a = ? WHERE id = 1", [value(i)]]]))
                .await;
        }
        w.write(&json!([["UPDATE t SET b = ? WHERE id = 2", [i]]]))
            .await;
        eprintln!("phase writes done at {:?}, {i} writes", t0.elapsed());
        slow.drain(Duration::from_secs(3)).await;
        eprintln!("drained at {:?}, {} bytes", t0.elapsed(), slow.raw.len());
        if slow.parts().2 {
            break true;
        }
        if tokio::time::Instant::now() > deadline {
            break false;
        }
    };
    w.write(&json!(["UPDATE t SET a = 'final' WHERE id = 1"]))
        .await;
    let (_, body, _) = slow.parts();
    let lines: Vec<Value> = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("NDJSON line"))
        .collect();
    assert!(
        cut_off,
        "after {i} writes the slow subscriber's stream has not ended ({} lines read)",
        lines.len()
    );
    assert!(lines[0].get("columns").is_some(), "{}", lines[0]);
    assert!(lines[1].get("row").is_some() && lines[2].get("eoq").is_some());
    let mut last = 0;
    for ev in &lines[3..lines.len() - 1] {
        let c = parse_change(ev);
        assert_eq!(c.id, last + 1, "contiguous ids on the slow stream");
        last = c.id;
    }
    let err = lines.last().unwrap()["error"]
        .as_str()
        .unwrap_or_else(|| panic!("last line must be the error: {}", lines.last().unwrap()))
        .to_string();
    let want = format!(
        "subscriber too slow: disconnected after change id {last}; resume with GET /v1/subscriptions/{id}?from={last}"
    );
    assert_eq!(err, want);

    // The active subscriber saw every change; resuming from N yields exactly those after N.
    let active = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("active subscriber did not reach the final value in 60 s")
        .expect("active subscriber task failed");
    assert!(
        last < active.last,
        "cut off before the end ({last} of {})",
        active.last
    );
    for proto in [Proto::Http1, Proto::H2c] {
        let mut r = Sub::resume(&node.api(proto).with_nodelay(), &id, last).await;
        r.until_id(active.last).await;
        assert_eq!(r.changes[..], active.changes[last as usize..]);
    }
    other.sync(&w, &other_q).await;
    assert!(node.panics().is_empty(), "{:?}", node.panics());
}
