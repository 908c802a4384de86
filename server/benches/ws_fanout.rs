//! Subscription transports measured from outside, against a real `verdigris` process on
//! 127.0.0.1 (release build), as a client sees them:
//! - memory: node RSS per idle subscription, 1,000 distinct subscriptions on one WebSocket vs
//!   one NDJSON HTTP stream per subscription;
//! - fan-out: N sockets (or N NDJSON streams) all subscribed to one query; each of 50 single-row
//!   writes goes out to all of them: p50/p99 over the writes of the time from sending the write
//!   until the *last* subscriber has the event, and node RSS per idle subscriber.
//!
//! Run: `cargo bench -p verdigris --bench ws_fanout`. `VERDIGRIS_BENCH_FANOUT` sets the
//! subscriber counts (default `1000,10000`; `0`: memory only). The bench raises its open-file limit (and so the
//! node's) to the hard limit; 10,000 subscribers need about 20,000 descriptors.

#[path = "../../tests/support/mod.rs"]
mod support;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{Node, NodeDir};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const SCHEMA: &str = "CREATE TABLE items (id INTEGER NOT NULL PRIMARY KEY, v INTEGER);";
const WRITES: usize = 50;
/// Connections opened at once while setting up.
const CONNECT_CONCURRENCY: usize = 64;

fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// A node that allows many sockets and subscriptions.
fn start() -> (NodeDir, Node) {
    let dir = NodeDir::builder()
        .schema(SCHEMA)
        .tail("[api.ws]\nmax_sockets = 50000\nmax_subscriptions = 50000")
        .api("max_concurrency = 100000")
        .build();
    let node = dir.start();
    (dir, node)
}

async fn write(api: &support::Api, sql: String) {
    api.write(&json!([sql])).await;
}

async fn fill(api: &support::Api, rows: usize) {
    write(api, format!("WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i+1 FROM n WHERE i < {}) INSERT INTO items SELECT i, 0 FROM n", rows - 1)).await;
}

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn ws_connect(addr: std::net::SocketAddr) -> Ws {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    // Small client buffers: 10,000 sockets in the bench process with the 128 KiB default would
    // take over a GiB and slow the machine the node shares.
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (ws, _) = tokio_tungstenite::client_async_with_config(
        format!("ws://{addr}/v1/ws"),
        tcp,
        Some(config),
    )
    .await
    .expect("upgrade");
    ws
}

/// Reads messages until `id`'s `eoq`.
async fn ws_until_eoq(ws: &mut Ws, id: &str) {
    ws_eoqs(ws, 1, Some(id)).await
}

/// Reads messages until `n` subscriptions (all, or only `id`) have sent their `eoq`.
async fn ws_eoqs(ws: &mut Ws, mut n: usize, id: Option<&str>) {
    while n > 0 {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if let Some(e) = v.get("error") {
                    panic!("subscribe failed: {e}");
                }
                if v.get("eoq").is_some() && id.is_none_or(|id| v["id"] == id) {
                    n -= 1;
                }
            }
            Some(Ok(_)) => {}
            other => panic!("socket ended while subscribing: {other:?}"),
        }
    }
}

/// An HTTP/1.1 NDJSON subscription: the reader after the response head.
async fn ndjson_subscribe(addr: std::net::SocketAddr, sql: &str) -> BufReader<TcpStream> {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let body = serde_json::to_vec(&json!(sql)).unwrap();
    let head = format!(
        "POST /v1/subscriptions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&body).await.unwrap();
    let mut r = BufReader::new(tcp);
    // Head, then chunked NDJSON lines until eoq.
    let mut line = String::new();
    loop {
        line.clear();
        r.read_line(&mut line).await.unwrap();
        if line.contains("\"eoq\"") {
            return r;
        }
        assert!(!line.is_empty(), "stream ended while subscribing");
        assert!(!line.contains("\"error\""), "subscribe failed: {line}");
    }
}

/// Change id of an NDJSON or WebSocket change message.
fn change_id(text: &str) -> Option<u64> {
    if !text.contains("\"change\"") {
        return None;
    }
    let v: Value = serde_json::from_str(text.trim()).ok()?;
    v["change"][3].as_u64()
}

fn settle() {
    std::thread::sleep(Duration::from_secs(2));
}

/// KiB of node memory per subscription: `n` distinct subscriptions over one WebSocket.
fn memory_ws(rt: &tokio::runtime::Runtime, n: usize) -> f64 {
    let (_dir, node) = start();
    rt.block_on(async {
        fill(&node.http1(), n).await;
        let mut ws = ws_connect(node.addr()).await;
        ws.send(Message::Text(
            json!({"type":"subscribe","id":"warm","sql":"SELECT v FROM items WHERE id = 0"})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
        ws_until_eoq(&mut ws, "warm").await;
        settle();
        let before = node.rss_kib();
        for i in 0..n {
            let sql = format!("SELECT id, v FROM items WHERE id = {i}");
            ws.send(Message::Text(
                json!({"type":"subscribe","id":format!("s{i}"),"sql":sql})
                    .to_string()
                    .into(),
            ))
            .await
            .unwrap();
        }
        ws_eoqs(&mut ws, n, None).await;
        settle();
        let kib = (node.rss_kib() - before) as f64 / n as f64;
        drop(ws);
        kib
    })
}

/// KiB of node memory per subscription: `n` distinct subscriptions, one NDJSON stream each.
fn memory_ndjson(rt: &tokio::runtime::Runtime, n: usize) -> f64 {
    let (_dir, node) = start();
    rt.block_on(async {
        fill(&node.http1(), n).await;
        let warm = ndjson_subscribe(node.addr(), "SELECT v FROM items WHERE id = 0").await;
        settle();
        let before = node.rss_kib();
        let mut streams = Vec::with_capacity(n);
        for i in 0..n {
            let sql = format!("SELECT id, v FROM items WHERE id = {i}");
            streams.push(ndjson_subscribe(node.addr(), &sql).await);
        }
        settle();
        let kib = (node.rss_kib() - before) as f64 / n as f64;
        drop((warm, streams));
        kib
    })
}

/// Per write: when each subscriber got its event (ns since `epoch`, max) and how many did.
struct Arrivals {
    epoch: Instant,
    last: Vec<AtomicU64>,
    count: Vec<AtomicUsize>,
}

impl Arrivals {
    fn record(&self, change_id: u64) {
        let i = change_id as usize - 1;
        if i < self.last.len() {
            let t = self.epoch.elapsed().as_nanos() as u64;
            self.last[i].fetch_max(t, Ordering::SeqCst);
            self.count[i].fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Fan-out of `WRITES` single-row writes to `n` subscribers of one query:
/// (p50 ms, p99 ms, KiB per idle subscriber).
fn fanout(rt: &tokio::runtime::Runtime, n: usize, websocket: bool) -> (f64, f64, f64) {
    let (_dir, node) = start();
    let addr = node.addr();
    let arrivals = Arc::new(Arrivals {
        epoch: Instant::now(),
        last: (0..WRITES).map(|_| AtomicU64::new(0)).collect(),
        count: (0..WRITES).map(|_| AtomicUsize::new(0)).collect(),
    });
    let sql = "SELECT id, v FROM items WHERE id = 0";
    rt.block_on(fill(&node.http1(), 1));
    // A first subscriber creates the subscription; the rest join it.
    let warm = rt.block_on(ndjson_subscribe(addr, sql));
    settle();
    let before = node.rss_kib();
    let opened = Arc::new(AtomicUsize::new(0));
    let sem = Arc::new(tokio::sync::Semaphore::new(CONNECT_CONCURRENCY));
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let (arrivals, opened, sem) = (arrivals.clone(), opened.clone(), sem.clone());
        tasks.push(rt.spawn(async move {
            let permit = sem.acquire_owned().await.unwrap();
            if websocket {
                let mut ws = ws_connect(addr).await;
                ws.send(Message::Text(
                    json!({"type":"subscribe","id":"s","sql":sql})
                        .to_string()
                        .into(),
                ))
                .await
                .unwrap();
                ws_until_eoq(&mut ws, "s").await;
                drop(permit);
                opened.fetch_add(1, Ordering::SeqCst);
                while let Some(Ok(m)) = ws.next().await {
                    if let Message::Text(t) = m {
                        if let Some(c) = change_id(&t) {
                            arrivals.record(c);
                        }
                    }
                }
            } else {
                let mut r = ndjson_subscribe(addr, sql).await;
                drop(permit);
                opened.fetch_add(1, Ordering::SeqCst);
                let mut line = String::new();
                loop {
                    line.clear();
                    match r.read_line(&mut line).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            if let Some(c) = change_id(&line) {
                                arrivals.record(c);
                            }
                        }
                    }
                }
            }
        }));
    }
    while opened.load(Ordering::SeqCst) < n {
        std::thread::sleep(Duration::from_millis(50));
    }
    settle();
    let per_sub = (node.rss_kib() - before) as f64 / n as f64;
    let api = node.http1();
    let mut lat = Vec::with_capacity(WRITES);
    for w in 0..WRITES {
        let sent = arrivals.epoch.elapsed().as_nanos() as u64;
        rt.block_on(write(
            &api,
            format!("UPDATE items SET v = {} WHERE id = 0", w + 1),
        ));
        let deadline = Instant::now() + Duration::from_secs(30);
        while arrivals.count[w].load(Ordering::SeqCst) < n {
            assert!(
                Instant::now() < deadline,
                "write {w}: only {} of {n} subscribers got it",
                arrivals.count[w].load(Ordering::SeqCst)
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        lat.push((arrivals.last[w].load(Ordering::SeqCst) - sent) as f64 / 1e6);
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(warm);
    for t in tasks {
        t.abort();
    }
    (pct(&mut lat, 0.5), pct(&mut lat, 0.99), per_sub)
}

fn main() {
    raise_nofile();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sizes: Vec<usize> = std::env::var("VERDIGRIS_BENCH_FANOUT")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("VERDIGRIS_BENCH_FANOUT: comma-separated counts")
        })
        .filter(|n| *n > 0)
        .collect();
    let ws = memory_ws(&rt, 1000);
    let nd = memory_ndjson(&rt, 1000);
    println!("memory per idle subscription (1,000 distinct, node RSS): WebSocket {ws:.1} KiB, NDJSON {nd:.1} KiB");
    for n in sizes {
        for websocket in [true, false] {
            let (p50, p99, kib) = fanout(&rt, n, websocket);
            println!(
                "fan-out to {n:>6} {:<9}: last subscriber p50 {p50:7.2} ms, p99 {p99:7.2} ms; {kib:.1} KiB per idle subscriber",
                if websocket { "WebSocket" } else { "NDJSON" }
            );
        }
    }
}
