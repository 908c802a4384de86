//! What the rest of the node (health, admin socket) sees of the cluster, and the fault switch
//! tests use to partition a node: counters, a member list snapshot, the apply lag window.

use crate::crdt::ActorId;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

/// How long an applied remote change counts towards the p99 lag.
const LAG_WINDOW: Duration = Duration::from_secs(30);
/// Most lag samples kept (older ones are dropped first).
const LAG_SAMPLES: usize = 4096;

/// One member as shown by `verdigris cluster members`.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberView {
    pub actor_id: String,
    pub address: SocketAddr,
    pub state: String,
    pub rtt_ms: Option<f64>,
    /// When SWIM last considered the member alive (refreshed every second while it is).
    pub last_seen: Option<Instant>,
}

/// The latest broadcast applied from one actor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeerLag {
    /// Seconds from the version's commit on its origin to its apply here.
    pub lag_secs: f64,
    /// When it was applied.
    pub at: Instant,
}

/// Counters of rejected or dropped input (never reset).
#[derive(Debug, Default)]
pub struct Counters {
    /// Peer messages that failed to decode (malformed, truncated, too large).
    pub malformed: AtomicU64,
    /// Peer messages from another cluster id.
    pub wrong_cluster: AtomicU64,
    /// SWIM packets foca refused.
    pub swim_rejected: AtomicU64,
    /// Incoming datagrams or streams dropped because a queue was full.
    pub inbound_dropped: AtomicU64,
    /// Broadcast sends dropped (queue full, rate budget, failed send).
    pub broadcast_dropped: AtomicU64,
    /// Received chunks dropped before apply (apply queue full).
    pub changes_dropped: AtomicU64,
    /// Chunks applied or buffered through the apply path.
    pub changes_ingested: AtomicU64,
    /// Sync sessions completed as a client.
    pub syncs: AtomicU64,
    /// Payload bytes of SWIM datagrams and broadcast frames received and sent.
    pub gossip_bytes_in: AtomicU64,
    pub gossip_bytes_out: AtomicU64,
    /// Frame bytes of sync sessions received and sent (as client and as server).
    pub sync_bytes_in: AtomicU64,
    pub sync_bytes_out: AtomicU64,
}

impl Counters {
    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(c: &AtomicU64, n: usize) {
        c.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// A command for the membership task, from the admin socket; the answer comes back as JSON.
#[derive(Debug)]
pub enum MembershipCmd {
    /// Renew this node's SWIM identity and announce it (`verdigris cluster rejoin`).
    Rejoin(tokio::sync::oneshot::Sender<serde_json::Value>),
    /// foca's view of every member (`verdigris cluster membership-states`).
    States(tokio::sync::oneshot::Sender<serde_json::Value>),
}

#[derive(Debug, Default)]
pub struct Status {
    /// Commands for the membership task, once it runs.
    pub membership: OnceLock<tokio::sync::mpsc::Sender<MembershipCmd>>,
    /// The bound gossip address, once the transport is up.
    pub gossip_addr: OnceLock<SocketAddr>,
    /// Peers whose traffic is dropped in both directions (fault injection).
    pub blocked: RwLock<HashSet<SocketAddr>>,
    pub members: RwLock<Vec<MemberView>>,
    pub counters: Counters,
    /// Missing versions over all actors.
    pub gaps: AtomicU64,
    /// Chunks waiting in the apply queue.
    pub queue_size: AtomicU64,
    /// Frames and bytes waiting in the broadcast queue.
    pub broadcast_queue_frames: AtomicU64,
    pub broadcast_queue_bytes: AtomicU64,
    /// A database snapshot is being fetched or imported: broadcast changes are dropped
    /// meanwhile (sync fetches whatever the snapshot lacks afterwards).
    pub bootstrapping: AtomicBool,
    lag: Mutex<VecDeque<(Instant, f64)>>,
    /// The latest lag per origin actor (one entry per actor ever heard from).
    peer_lag: Mutex<HashMap<ActorId, PeerLag>>,
}

impl Status {
    pub fn is_blocked(&self, addr: &SocketAddr) -> bool {
        let b = self.blocked.read().expect("blocked lock");
        !b.is_empty() && b.contains(addr)
    }

    /// Alive members, this node included.
    pub fn alive_members(&self) -> u64 {
        1 + self
            .members
            .read()
            .expect("members lock")
            .iter()
            .filter(|m| m.state == "alive")
            .count() as u64
    }

    /// Records the lag (seconds) of an applied remote version.
    pub fn record_lag(&self, secs: f64) {
        let now = Instant::now();
        let mut l = self.lag.lock().expect("lag lock");
        if l.len() >= LAG_SAMPLES {
            l.pop_front();
        }
        l.push_back((now, secs.max(0.0)));
    }

    /// Records the lag (seconds) of a version of `actor` applied from a broadcast.
    pub fn record_peer_lag(&self, actor: ActorId, secs: f64) {
        self.record_lag(secs);
        let lag = PeerLag {
            lag_secs: secs.max(0.0),
            at: Instant::now(),
        };
        self.peer_lag
            .lock()
            .expect("peer lag lock")
            .insert(actor, lag);
    }

    /// The latest lag recorded for `actor`, if any.
    pub fn peer_lag(&self, actor: &ActorId) -> Option<PeerLag> {
        self.peer_lag
            .lock()
            .expect("peer lag lock")
            .get(actor)
            .copied()
    }

    /// The lags (seconds) recorded over the last [`LAG_WINDOW`], sorted.
    fn recent_lags(&self) -> Vec<f64> {
        let mut l = self.lag.lock().expect("lag lock");
        while l.front().is_some_and(|(t, _)| t.elapsed() > LAG_WINDOW) {
            l.pop_front();
        }
        let mut v: Vec<f64> = l.iter().map(|(_, s)| *s).collect();
        v.sort_by(f64::total_cmp);
        v
    }

    /// p99 of the lags recorded over the last [`LAG_WINDOW`]; 0 when idle.
    pub fn p99_lag(&self) -> f64 {
        percentile(&self.recent_lags(), 0.99)
    }

    /// (samples, p50, p99) of the recent lags.
    pub fn lag_summary(&self) -> (usize, f64, f64) {
        let v = self.recent_lags();
        (v.len(), percentile(&v, 0.5), percentile(&v, 0.99))
    }
}

/// Nearest-rank percentile of sorted samples; 0 for none.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64) * q).ceil() as usize;
    sorted[idx.saturating_sub(1).min(sorted.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p99_of_samples_and_idle_is_zero() {
        let s = Status::default();
        assert_eq!(s.p99_lag(), 0.0);
        for i in 1..=100 {
            s.record_lag(i as f64);
        }
        assert_eq!(s.p99_lag(), 99.0);
        assert_eq!(percentile(&[5.0], 0.99), 5.0);
        assert_eq!(s.lag_summary(), (100, 50.0, 99.0));
        assert_eq!(s.alive_members(), 1);
        let a = ActorId([3; 16]);
        assert_eq!(s.peer_lag(&a), None);
        s.record_peer_lag(a, 0.25);
        s.record_peer_lag(a, -1.0);
        assert_eq!(s.peer_lag(&a).map(|l| l.lag_secs), Some(0.0));
        assert_eq!(s.lag_summary().0, 102);
    }
}
