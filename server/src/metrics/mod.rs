//! Prometheus metrics, served as text at `GET /metrics` (docs/operations.md lists them).
//!
//! Two kinds: *event* metrics (request counts, latency histograms, matcher rounds, watchdog
//! stalls, snapshots) live in [`Metrics`] and are bumped where the event happens; *state*
//! metrics (members, gaps, queue depths, store size, the cluster's counters) are read from the
//! node when scraped ([`Sample::gather`]), so the hot paths keep their existing atomics and
//! nothing is counted twice. Encoding uses `prometheus-client`; nothing here writes the
//! exposition format by hand.

pub mod route;

use crate::node::Node;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Content type of the Prometheus text format the endpoint serves.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

type HttpLabels = ([(&'static str, &'static str); 1], [(&'static str, u16); 1]);
type RouteLabel = [(&'static str, &'static str); 1];

/// Latency buckets from 0.5 ms to about 16 s (×2 each).
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0005, 2.0, 16)
}

/// Event metrics of one node. Cheap to bump: atomics, and for labelled families a read lock
/// on a small map.
#[derive(Debug)]
pub struct Metrics {
    http_requests: Family<HttpLabels, Counter>,
    http_latency: Family<RouteLabel, Histogram>,
    /// Duration of a matcher round that had changes to process.
    pub sub_round: Histogram,
    /// From a commit to the publication of the subscription events it caused (the oldest
    /// commit of a coalesced round counts).
    pub commit_to_event: Histogram,
    /// Subscription listeners dropped because they fell too far behind.
    pub slow_listener_drops: Counter,
    /// Rounds of subscriptions kept from before-images (aggregates, DISTINCT) that re-ran
    /// their query instead (images missing or dropped, a restore, a retry).
    pub sub_image_reruns: Counter,
    watchdog_stalls: Family<RouteLabel, Counter>,
    snapshots: Family<RouteLabel, Counter>,
    snapshot_duration: Histogram,
    last_snapshot_unix: Gauge<f64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            http_requests: Family::default(),
            http_latency: Family::new_with_constructor(|| Histogram::new(latency_buckets())),
            sub_round: Histogram::new(latency_buckets()),
            commit_to_event: Histogram::new(latency_buckets()),
            slow_listener_drops: Counter::default(),
            sub_image_reruns: Counter::default(),
            watchdog_stalls: Family::default(),
            snapshots: Family::default(),
            snapshot_duration: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            last_snapshot_unix: Gauge::default(),
        }
    }
}

impl Metrics {
    /// Counts one HTTP response (`route`: from [`route::route_label`]; `latency`: until the
    /// response head was ready).
    pub fn observe_http(&self, route: &'static str, status: u16, latency: Duration) {
        self.http_requests
            .get_or_create(&([("route", route)], [("status", status)]))
            .inc();
        self.http_latency
            .get_or_create(&[("route", route)])
            .observe(latency.as_secs_f64());
    }

    /// Counts a stall the watchdog detected (`kind`: `runtime` or `writer`).
    pub fn watchdog_stall(&self, kind: &'static str) {
        self.watchdog_stalls.get_or_create(&[("kind", kind)]).inc();
    }

    /// Counts a periodic snapshot attempt.
    pub fn snapshot_done(&self, ok: bool, took: Duration) {
        let result = if ok { "ok" } else { "error" };
        self.snapshots.get_or_create(&[("result", result)]).inc();
        if ok {
            self.snapshot_duration.observe(took.as_secs_f64());
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            self.last_snapshot_unix.set(now.as_secs_f64());
        }
    }

    fn register(&self, r: &mut Registry) {
        r.register(
            "http_requests",
            "HTTP requests answered, by route and status",
            self.http_requests.clone(),
        );
        r.register_with_unit(
            "http_request_duration",
            "Time from receiving an HTTP request to its response head (streams: until they start)",
            Unit::Seconds,
            self.http_latency.clone(),
        );
        r.register_with_unit(
            "subscription_round_duration",
            "Duration of subscription maintenance rounds that had changes to process",
            Unit::Seconds,
            self.sub_round.clone(),
        );
        r.register_with_unit(
            "subscription_commit_to_event",
            "Time from a commit to the subscription events it caused being published",
            Unit::Seconds,
            self.commit_to_event.clone(),
        );
        r.register(
            "subscription_slow_listener_drops",
            "Subscription listeners dropped for falling too far behind (they get too_slow and resume)",
            self.slow_listener_drops.clone(),
        );
        r.register(
            "subscription_image_reruns",
            "Rounds of aggregate/DISTINCT subscriptions that re-ran their query instead of applying before-images",
            self.sub_image_reruns.clone(),
        );
        r.register(
            "watchdog_stalls",
            "Stalls the watchdog detected, by kind (runtime, writer)",
            self.watchdog_stalls.clone(),
        );
        r.register(
            "snapshots",
            "Periodic snapshots attempted, by result (ok, error)",
            self.snapshots.clone(),
        );
        r.register_with_unit(
            "snapshot_duration",
            "Time to write one periodic snapshot",
            Unit::Seconds,
            self.snapshot_duration.clone(),
        );
        r.register(
            "last_snapshot_timestamp_seconds",
            "Unix time of the last successful periodic snapshot (0: none yet)",
            self.last_snapshot_unix.clone(),
        );
    }
}

/// Node state read at scrape time.
#[derive(Debug, Default, Clone)]
pub struct Sample {
    pub uptime_secs: f64,
    pub local_transactions: u64,
    pub local_rows: u64,
    pub remote_versions: u64,
    pub remote_rows: u64,
    /// `Counters` of the cluster layer, by metric name suffix.
    pub cluster_counters: Vec<(&'static str, &'static str, u64)>,
    pub bytes: Vec<(&'static str, &'static str, u64)>,
    pub apply_queue: u64,
    pub broadcast_queue_frames: u64,
    pub broadcast_queue_bytes: u64,
    /// Other members by SWIM state.
    pub members: Vec<(String, u64)>,
    /// Per origin actor: (actor, missing versions, highest version seen, latest lag).
    pub actors: Vec<(String, u64, u64, Option<f64>)>,
    pub lag_p50: f64,
    pub lag_p99: f64,
    pub subscriptions: u64,
    pub listeners: u64,
    pub ws_connections: u64,
    pub stalled: bool,
    pub db_bytes: u64,
    pub wal_bytes: u64,
}

impl Sample {
    /// Reads the node's state. Takes short read locks (bookkeeping, members, subscriptions'
    /// round lock): call it on a blocking thread.
    pub fn gather(node: &Node, ws_connections: u64) -> Sample {
        let st = &node.cluster;
        let c = &st.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let activity = node.activity.snapshot();
        let mut members: Vec<(String, u64)> = ["alive", "suspect", "down"]
            .iter()
            .map(|s| (s.to_string(), 0))
            .collect();
        for m in st.members.read().expect("members lock").iter() {
            match members.iter_mut().find(|(s, _)| *s == m.state) {
                Some((_, n)) => *n += 1,
                None => members.push((m.state.clone(), 1)),
            }
        }
        let actors = {
            let book = node.shared.book.read().expect("book lock");
            book.actors()
                .map(|(a, b)| {
                    let lag = st.peer_lag(a).map(|l| l.lag_secs);
                    (a.to_string(), b.gap_count(), b.max, lag)
                })
                .collect()
        };
        let (_, lag_p50, lag_p99) = st.lag_summary();
        let (subscriptions, listeners) = node.subs.counts();
        let size = |suffix: &str| {
            let p = crate::store::db_sibling(&node.config.db.path, suffix);
            std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
        };
        Sample {
            uptime_secs: node.started.elapsed().as_secs_f64(),
            local_transactions: activity.local_transactions,
            local_rows: activity.local_rows,
            remote_versions: activity.remote_versions,
            remote_rows: activity.remote_rows,
            cluster_counters: vec![
                ("peer_chunks_ingested", "Change chunks from peers applied or buffered", get(&c.changes_ingested)),
                ("peer_changes_dropped", "Change chunks from peers dropped because the apply queue was full (sync repairs them)", get(&c.changes_dropped)),
                ("sync_rounds", "Sync sessions this node completed as a client", get(&c.syncs)),
                ("broadcast_dropped", "Broadcast sends dropped (queue full, rate budget, failed send; sync repairs them)", get(&c.broadcast_dropped)),
                ("peer_input_malformed", "Peer messages that failed to decode", get(&c.malformed)),
                ("peer_input_wrong_cluster", "Peer messages from another cluster id", get(&c.wrong_cluster)),
                ("peer_input_swim_rejected", "SWIM packets the membership layer refused", get(&c.swim_rejected)),
                ("peer_input_dropped", "Incoming datagrams or streams dropped because a queue was full", get(&c.inbound_dropped)),
            ],
            bytes: vec![
                ("gossip", "in", get(&c.gossip_bytes_in)),
                ("gossip", "out", get(&c.gossip_bytes_out)),
                ("sync", "in", get(&c.sync_bytes_in)),
                ("sync", "out", get(&c.sync_bytes_out)),
            ],
            apply_queue: get(&st.queue_size),
            broadcast_queue_frames: get(&st.broadcast_queue_frames),
            broadcast_queue_bytes: get(&st.broadcast_queue_bytes),
            members,
            actors,
            lag_p50,
            lag_p99,
            subscriptions,
            listeners,
            ws_connections,
            stalled: node.watchdog.problem().is_some(),
            db_bytes: size(""),
            wal_bytes: size("-wal"),
        }
    }
}

fn counter(r: &mut Registry, name: &str, help: &str, v: u64) {
    r.register(name, help, ConstCounter::new(v));
}

fn gauge<N>(r: &mut Registry, name: &str, help: &str, v: N)
where
    ConstGauge<N>: prometheus_client::registry::Metric,
{
    r.register(name, help, ConstGauge::new(v));
}

/// A gauge family with one label, filled from `values`.
fn labelled(
    r: &mut Registry,
    name: &str,
    help: &str,
    label: &'static str,
    values: impl IntoIterator<Item = (String, f64)>,
) {
    let fam: Family<Vec<(&'static str, String)>, Gauge<f64, AtomicU64>> = Family::default();
    for (l, v) in values {
        fam.get_or_create(&vec![(label, l)]).set(v);
    }
    r.register(name, help, fam);
}

/// The text exposition of `metrics` and `s`, every name prefixed with `verdigris_`.
pub fn encode(metrics: &Metrics, s: &Sample) -> String {
    let mut root = Registry::default();
    let r = root.sub_registry_with_prefix("verdigris");
    metrics.register(r);
    let info: Family<Vec<(&'static str, String)>, Gauge> = Family::default();
    info.get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_string())])
        .set(1);
    r.register("build_info", "Always 1; the version is a label", info);
    gauge(
        r,
        "uptime_seconds",
        "Seconds since the node started",
        s.uptime_secs,
    );
    counter(
        r,
        "writes",
        "Client transactions that changed replicated rows (each made one version)",
        s.local_transactions,
    );
    counter(
        r,
        "rows_written",
        "Replicated rows changed by client transactions",
        s.local_rows,
    );
    counter(
        r,
        "remote_versions_applied",
        "Versions of other nodes applied here (broadcast, sync or snapshot catch-up)",
        s.remote_versions,
    );
    counter(
        r,
        "remote_rows_applied",
        "Rows whose state versions from other nodes changed",
        s.remote_rows,
    );
    for (name, help, v) in &s.cluster_counters {
        counter(r, name, help, *v);
    }
    let bytes: Family<Vec<(&'static str, &'static str)>, Counter> = Family::default();
    for (kind, dir, v) in &s.bytes {
        bytes
            .get_or_create(&vec![("kind", kind), ("direction", dir)])
            .inc_by(*v);
    }
    r.register(
        "peer_bytes",
        "Payload bytes exchanged with peers, by kind (gossip: SWIM and broadcast; sync) and direction",
        bytes,
    );
    gauge(
        r,
        "apply_queue_chunks",
        "Change chunks waiting to be applied",
        s.apply_queue as i64,
    );
    gauge(
        r,
        "broadcast_queue_frames",
        "Broadcast frames waiting to be sent",
        s.broadcast_queue_frames as i64,
    );
    gauge(
        r,
        "broadcast_queue_bytes",
        "Bytes of broadcast frames waiting to be sent",
        s.broadcast_queue_bytes as i64,
    );
    let members = s.members.iter().map(|(st, n)| (st.clone(), *n as f64));
    labelled(
        r,
        "members",
        "Other cluster members by SWIM state (this node excluded)",
        "state",
        members,
    );
    let gaps = s.actors.iter().map(|(a, g, _, _)| (a.clone(), *g as f64));
    labelled(
        r,
        "replication_gaps",
        "Versions of an origin actor this node is missing (gaps and incomplete versions)",
        "actor",
        gaps,
    );
    let heads = s.actors.iter().map(|(a, _, h, _)| (a.clone(), *h as f64));
    labelled(
        r,
        "replication_head",
        "Highest version of an origin actor this node has seen",
        "actor",
        heads,
    );
    let lags = s
        .actors
        .iter()
        .filter_map(|(a, _, _, l)| Some((a.clone(), (*l)?)));
    labelled(
        r,
        "replication_lag_seconds",
        "Commit-to-apply lag of the latest broadcast applied from an origin actor",
        "actor",
        lags,
    );
    let window = [
        ("0.5".to_string(), s.lag_p50),
        ("0.99".to_string(), s.lag_p99),
    ];
    labelled(
        r,
        "replication_lag_window_seconds",
        "Quantiles of the commit-to-apply lag of broadcasts over the last 30 s (0 when idle)",
        "quantile",
        window,
    );
    gauge(
        r,
        "subscriptions",
        "Subscriptions held by this node",
        s.subscriptions as i64,
    );
    gauge(
        r,
        "subscription_listeners",
        "Listeners attached to subscriptions (NDJSON streams and WebSocket subscriptions)",
        s.listeners as i64,
    );
    gauge(
        r,
        "websocket_connections",
        "Open WebSocket connections (GET /v1/ws)",
        s.ws_connections as i64,
    );
    gauge(
        r,
        "watchdog_stalled",
        "1 while the watchdog considers the node stalled",
        i64::from(s.stalled),
    );
    let store = [
        ("db".to_string(), s.db_bytes as f64),
        ("wal".to_string(), s.wal_bytes as f64),
    ];
    labelled(
        r,
        "store_bytes",
        "Size of the database files",
        "file",
        store,
    );
    let mut out = String::new();
    prometheus_text::encode(&mut out, &root).expect("encoding metrics into a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_event_and_state_metrics() {
        let m = Metrics::default();
        m.observe_http("/v1/transactions", 200, Duration::from_millis(3));
        m.observe_http(
            route::route_label("/v1/subscriptions/xyz"),
            404,
            Duration::from_millis(1),
        );
        m.watchdog_stall("writer");
        let s = Sample {
            local_transactions: 7,
            members: vec![("alive".into(), 2)],
            actors: vec![("ab".into(), 3, 10, Some(0.25))],
            bytes: vec![("gossip", "in", 42)],
            ..Sample::default()
        };
        let text = encode(&m, &s);
        for needle in [
            "verdigris_http_requests_total{route=\"/v1/transactions\",status=\"200\"} 1",
            "verdigris_http_requests_total{route=\"/v1/subscriptions/:id\",status=\"404\"} 1",
            "verdigris_http_request_duration_seconds_count{route=\"/v1/transactions\"} 1",
            "verdigris_watchdog_stalls_total{kind=\"writer\"} 1",
            "verdigris_writes_total 7",
            "verdigris_members{state=\"alive\"} 2",
            "verdigris_replication_gaps{actor=\"ab\"} 3",
            "verdigris_replication_head{actor=\"ab\"} 10",
            "verdigris_replication_lag_seconds{actor=\"ab\"} 0.25",
            "verdigris_peer_bytes_total{kind=\"gossip\",direction=\"in\"} 42",
            "# TYPE verdigris_subscription_commit_to_event_seconds histogram",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }
}
