//! Subscription costs on one node, in-process (the engine and fan-out, without HTTP):
//! - commit → event latency (p50/p99) with 1, 1k and 10k live subscriptions;
//! - events/s fanned out to 1k listeners of one subscription;
//! - resident memory per subscription, idle (1-row result) and with a 1k-row result.
//!
//! Run: `cargo bench -p verdigris --bench subscriptions` (VERDIGRIS_BENCH_MAX_SUBS caps the
//! largest case, default 10000).

use futures_util::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use verdigris::config::Config;
use verdigris::node::Node;
use verdigris::store::Statement;
use verdigris::subs::attach::Published;
use verdigris::subs::Item;
use verdigris_api_types::QueryEvent;

const SCHEMA: &str =
    "CREATE TABLE items (id INTEGER NOT NULL PRIMARY KEY, app TEXT, val INTEGER DEFAULT 0);
CREATE TABLE big (id INTEGER NOT NULL PRIMARY KEY, grp INTEGER, val INTEGER DEFAULT 0);";

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn node(dir: &std::path::Path, name: &str) -> std::sync::Arc<Node> {
    // A directory per node: subscription state lives next to the database, and a node must
    // not resume the subscriptions of an earlier case.
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let schema = dir.join(format!("{name}.sql"));
    std::fs::write(&schema, SCHEMA).unwrap();
    let text = format!(
        "[db]\npath = {:?}\nschema_paths = [{:?}]\n[api]\naddr = \"127.0.0.1:0\"\n[gossip]\naddr = \"127.0.0.1:0\"\nplaintext = true\n",
        dir.join(format!("{name}.db")),
        schema
    );
    let (config, _) = Config::from_toml_str(&text, std::iter::empty()).unwrap();
    Node::open(config).unwrap()
}

fn write(node: &Node, sql: String) {
    node.store
        .lock()
        .unwrap()
        .transact(&[Statement::new(sql)], None)
        .unwrap();
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// A listener's live batches (its snapshot skipped).
fn live_batches(
    a: verdigris::subs::Attach,
) -> std::pin::Pin<Box<dyn futures_util::Stream<Item = Arc<Published<QueryEvent>>> + Send>> {
    Box::pin(a.into_stream().filter_map(|item| async move {
        match item {
            Item::Batch(b) => Some(b),
            _ => None,
        }
    }))
}

/// Latency from commit to the event reaching the listener of the changed subscription.
fn latency(n_subs: usize, dir: &std::path::Path) -> (f64, f64, f64) {
    let node = node(dir, &format!("lat{n_subs}"));
    let rows = n_subs.max(1);
    write(&node, format!("WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i+1 FROM n WHERE i < {}) INSERT INTO items SELECT i, 'app-' || i, 0 FROM n", rows - 1));
    let rss0 = rss_kib();
    let mut listeners = Vec::with_capacity(n_subs);
    for i in 0..n_subs {
        let a = node
            .subs
            .subscribe(
                &Statement::new(format!("SELECT id, val FROM items WHERE app = 'app-{i}'")),
                None,
                false,
            )
            .unwrap();
        listeners.push(live_batches(a));
    }
    let per_sub = (rss_kib().saturating_sub(rss0)) as f64 / n_subs as f64;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut lat = Vec::new();
    let writes = 200;
    for w in 0..writes {
        let target = (w * 7919) % n_subs;
        let start = Instant::now();
        write(
            &node,
            format!("UPDATE items SET val = val + 1 WHERE id = {target}"),
        );
        let got = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), listeners[target].next()).await
        });
        assert!(
            matches!(got, Ok(Some(_))),
            "no event for subscription {target}"
        );
        lat.push(start.elapsed().as_secs_f64() * 1e3);
        std::thread::sleep(Duration::from_millis(2));
    }
    node.subs.stop();
    (pct(&mut lat, 0.5), pct(&mut lat, 0.99), per_sub)
}

/// Events per second delivered to `n` listeners of one subscription.
fn fanout(n: usize, dir: &std::path::Path) -> f64 {
    let node = node(dir, "fanout");
    write(&node, "INSERT INTO items VALUES (1, 'x', 0)".into());
    let stmt = Statement::new("SELECT id, val FROM items");
    let mut rxs = Vec::new();
    for _ in 0..n {
        rxs.push(live_batches(
            node.subs.subscribe(&stmt, None, false).unwrap(),
        ));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let writes = 300u64;
    // Commits are coalesced into rounds, so the final change id is known only after the writes.
    let target = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
    let counters: Vec<_> = rxs
        .into_iter()
        .map(|mut rx| {
            let target = target.clone();
            rt.spawn(async move {
                let (mut last, mut events) = (0u64, 0u64);
                let give_up = Instant::now() + Duration::from_secs(30);
                while last < target.load(std::sync::atomic::Ordering::SeqCst)
                    && Instant::now() < give_up
                {
                    match tokio::time::timeout(Duration::from_millis(50), rx.next()).await {
                        Ok(Some(b)) => {
                            events += b.last_id - last;
                            last = b.last_id;
                        }
                        Ok(None) => break,
                        Err(_) => {}
                    }
                }
                (events, last)
            })
        })
        .collect();
    let start = Instant::now();
    // One round per commit: wait for the matcher to publish before the next write, so the
    // figure measures fan-out rather than coalescing.
    for i in 1..=writes {
        write(&node, "UPDATE items SET val = val + 1 WHERE id = 1".into());
        let wait = Instant::now() + Duration::from_secs(5);
        while node.subs.list()[0].last_change_id < i && Instant::now() < wait {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let final_id = loop {
        // Wait for the matcher to finish the last round.
        let last = node.subs.list()[0].last_change_id;
        std::thread::sleep(Duration::from_millis(5));
        if node.subs.list()[0].last_change_id == last || Instant::now() > deadline {
            break last;
        }
    };
    target.store(final_id, std::sync::atomic::Ordering::SeqCst);
    let delivered: u64 = rt.block_on(async {
        let mut total = 0;
        let mut short = 0;
        for c in counters {
            let (events, last) = c.await.unwrap();
            total += events;
            short += (last < final_id) as usize;
        }
        assert_eq!(short, 0, "{short} listeners did not receive every change");
        total
    });
    let secs = start.elapsed().as_secs_f64();
    eprintln!("fan-out: {delivered} change events ({final_id} per listener for {writes} commits) in {secs:.3}s");
    node.subs.stop();
    delivered as f64 / secs
}

/// Memory per subscription holding a 1k-row result.
fn big_results(n: usize, dir: &std::path::Path) -> f64 {
    let node = node(dir, "big");
    write(&node, format!("WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i+1 FROM n WHERE i < {}) INSERT INTO big SELECT i, i / 1000, i FROM n", n * 1000 - 1));
    let rss0 = rss_kib();
    let mut keep = Vec::new();
    for g in 0..n {
        keep.push(
            node.subs
                .subscribe(
                    &Statement::new(format!("SELECT id, val FROM big WHERE grp = {g}")),
                    None,
                    false,
                )
                .unwrap(),
        );
    }
    let per = (rss_kib().saturating_sub(rss0)) as f64 / n as f64;
    node.subs.stop();
    per
}

fn main() {
    let max: usize = std::env::var("VERDIGRIS_BENCH_MAX_SUBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let dir = tempfile::tempdir().unwrap();
    println!("commit → event latency (in-process; one UPDATE per transaction, 200 transactions)");
    println!(
        "{:>14} {:>10} {:>10} {:>22}",
        "subscriptions", "p50 ms", "p99 ms", "RSS per sub (KiB)"
    );
    for n in [1usize, 1_000, 10_000].into_iter().filter(|n| *n <= max) {
        let (p50, p99, per) = latency(n, dir.path());
        println!("{n:>14} {p50:>10.3} {p99:>10.3} {per:>22.1}");
    }
    let ev = fanout(1000, dir.path());
    println!("fan-out: {ev:.0} events/s delivered to 1000 listeners of one subscription");
    let per = big_results(50, dir.path());
    println!("memory: {per:.1} KiB per subscription holding a 1,000-row result (50 subscriptions)");
}
