//! Broadcast decisions without I/O: the send queue (priorities, byte bound, rate limit,
//! rounds and fan-out), the relay rule for received chunks (dedup, ttl) and when to announce
//! the latest local version. [`super::broadcast`] drives them with tokio and QUIC, the
//! scale simulation (`tests/sim/scale.rs`) on simulated time; both pass the time and the
//! random generator in.

use crate::crdt::ActorId;
use rand::seq::IndexedRandom;
use rand::Rng;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Members a chunk is pushed to per round.
pub const FANOUT: usize = 3;
/// Hops a chunk may still travel when it leaves its origin, at least (see [`initial_ttl`]).
pub const INITIAL_TTL: u8 = 4;
/// Rounds a local chunk is pushed (each to different members).
pub const LOCAL_ROUNDS: u8 = 2;
/// Delay between the rounds of a local chunk.
pub const ROUND_DELAY: Duration = Duration::from_millis(200);
/// Bytes of frames waiting to be sent, at most.
pub const MAX_QUEUE_BYTES: usize = 32 * 1024 * 1024;
/// A pause in local writes this long sends the latest version to every member.
pub const HEAD_QUIET: Duration = Duration::from_millis(300);
/// During continuous writes, the latest version is sent at least this often.
pub const HEAD_EVERY: Duration = Duration::from_secs(1);
/// Chunks remembered as seen (FIFO eviction).
pub const SEEN_CAPACITY: usize = 100_000;

/// A chunk's identity: origin, version, first and last seq.
pub type ChunkKey = (ActorId, u64, u64, u64);

struct Pending<F> {
    frame: F,
    len: usize,
    due: Instant,
    rounds_left: u8,
    local: bool,
    sent: Vec<SocketAddr>,
}

/// Frames waiting to be sent. Local chunks go before re-broadcasts; the queue is bounded in
/// bytes (when full, the oldest re-broadcast is dropped, else the oldest local chunk); a
/// token bucket caps the bytes sent per second. `F` is the frame (encoded bytes in the agent).
pub struct Outbox<F> {
    queue: VecDeque<Pending<F>>,
    queued_bytes: usize,
    max_bytes: usize,
    tokens: f64,
    rate: f64,
    last_refill: Instant,
}

impl<F: Clone> Outbox<F> {
    /// An empty queue sending at most `rate` bytes per second and holding at most
    /// `max_bytes` of frames.
    pub fn new(rate: f64, max_bytes: usize, now: Instant) -> Outbox<F> {
        Outbox {
            queue: VecDeque::new(),
            queued_bytes: 0,
            max_bytes,
            tokens: rate,
            rate,
            last_refill: now,
        }
    }

    /// Frames waiting.
    pub fn frames(&self) -> usize {
        self.queue.len()
    }

    /// Bytes of frames waiting.
    pub fn bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Queues a frame of `len` bytes: a local chunk (sent [`LOCAL_ROUNDS`] times, ahead of
    /// re-broadcasts) or a re-broadcast (sent once). Returns how many frames were dropped to
    /// stay within the byte bound.
    pub fn push(&mut self, frame: F, len: usize, local: bool, now: Instant) -> usize {
        self.queued_bytes += len;
        let p = Pending {
            frame,
            len,
            due: now,
            rounds_left: if local { LOCAL_ROUNDS } else { 1 },
            local,
            sent: Vec::new(),
        };
        if local {
            let at = self
                .queue
                .iter()
                .position(|p| !p.local)
                .unwrap_or(self.queue.len());
            self.queue.insert(at, p);
        } else {
            self.queue.push_back(p);
        }
        let mut dropped = 0;
        while self.queued_bytes > self.max_bytes {
            let victim = self.queue.iter().position(|p| !p.local).unwrap_or(0);
            match self.queue.remove(victim) {
                Some(p) => {
                    self.queued_bytes -= p.len;
                    dropped += 1;
                }
                None => break,
            }
        }
        dropped
    }

    fn refill(&mut self, now: Instant) {
        let dt = now
            .saturating_duration_since(self.last_refill)
            .as_secs_f64();
        self.last_refill = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.rate);
    }

    /// Takes every due frame the byte budget allows and picks its receivers among `peers`
    /// (the alive members): [`FANOUT`] random ones it was not sent to yet. A local frame with
    /// rounds left comes back [`ROUND_DELAY`] later. Returns the frames per receiver. With no
    /// peer, nothing is sent and the queue is kept (it stays bounded).
    pub fn flush<R: Rng + ?Sized>(
        &mut self,
        peers: &[SocketAddr],
        now: Instant,
        rng: &mut R,
    ) -> BTreeMap<SocketAddr, Vec<F>> {
        self.refill(now);
        let mut per_peer: BTreeMap<SocketAddr, Vec<F>> = BTreeMap::new();
        if peers.is_empty() {
            return per_peer;
        }
        let mut keep = VecDeque::new();
        while let Some(mut p) = self.queue.pop_front() {
            if p.due > now || self.tokens < p.len as f64 {
                keep.push_back(p);
                continue;
            }
            let candidates: Vec<SocketAddr> = peers
                .iter()
                .filter(|a| !p.sent.contains(a))
                .copied()
                .collect();
            let chosen: Vec<SocketAddr> =
                candidates.choose_multiple(rng, FANOUT).copied().collect();
            for a in &chosen {
                self.tokens -= p.len as f64;
                per_peer.entry(*a).or_default().push(p.frame.clone());
            }
            p.sent.extend(chosen);
            p.rounds_left = p.rounds_left.saturating_sub(1);
            if p.rounds_left > 0 && p.sent.len() < peers.len() {
                p.due = now + ROUND_DELAY;
                keep.push_back(p);
            } else {
                self.queued_bytes -= p.len;
            }
        }
        self.queue = keep;
        per_peer
    }
}

/// The ttl a local chunk leaves with in a cluster of `members` nodes: enough hops for the
/// epidemic to die out by itself rather than by ttl. Every node relays a chunk at most once
/// (to [`FANOUT`] members), so a push reaches about 94 % of the nodes whatever the ttl once
/// it is at least about log₃(members) + 3; with a fixed ttl of 4 a chunk stopped after
/// 6 + 18 + … + 486 sends and reached barely half of a 1,000-node cluster (the simulation,
/// docs/cluster.md), the rest waiting for the head announcement and a sync session.
pub fn initial_ttl(members: usize) -> u8 {
    let mut hops = 0u8;
    let mut reach = 1usize;
    while reach < members.max(1) {
        reach = reach.saturating_mul(FANOUT);
        hops += 1;
    }
    (hops + 3).max(INITIAL_TTL)
}

/// Remembers which chunks passed through, to stop re-broadcast loops.
#[derive(Default)]
pub struct Seen {
    set: HashSet<ChunkKey>,
    order: VecDeque<ChunkKey>,
}

impl Seen {
    /// Inserts `k`; returns false if it was already there.
    pub fn insert(&mut self, k: ChunkKey) -> bool {
        if !self.set.insert(k) {
            return false;
        }
        self.order.push_back(k);
        if self.order.len() > SEEN_CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

/// What to do with a chunk received by broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// Seen before, or its seqs are already here: ignore it.
    Duplicate,
    /// New: apply it, and re-broadcast it with this ttl (`None`: its ttl is spent).
    New { relay_ttl: Option<u8> },
}

/// The relay rule: a chunk not seen before and not already held is applied and, while its
/// `ttl` lasts, re-broadcast once with `ttl - 1`. `already_have` is read only for a chunk
/// not in `seen`.
pub fn receive(
    seen: &mut Seen,
    key: ChunkKey,
    ttl: u8,
    already_have: impl FnOnce() -> bool,
) -> Received {
    if !seen.insert(key) || already_have() {
        return Received::Duplicate;
    }
    Received::New {
        relay_ttl: ttl.checked_sub(1),
    }
}

/// When to tell every member this node's latest version ([`super::codec::Msg::Head`]): once
/// local writes pause for [`HEAD_QUIET`], and at least every [`HEAD_EVERY`] while they go on.
///
/// A member that comes up (back from a partition, restarted) is also told the latest version
/// at once ([`HeadAnnouncer::came_up`]): a version this node wrote while cut off, that its
/// broadcast could not deliver, is otherwise unknown on the other side, and a sync session
/// with this node right after the heal can fail (busy serving everyone at once).
#[derive(Debug)]
pub struct HeadAnnouncer {
    head: Option<(ActorId, u64)>,
    latest: Option<(ActorId, u64)>,
    last_local: Instant,
    sent: Instant,
    alive: HashSet<SocketAddr>,
}

impl HeadAnnouncer {
    pub fn new(now: Instant) -> HeadAnnouncer {
        HeadAnnouncer {
            head: None,
            latest: None,
            last_local: now,
            sent: now,
            alive: HashSet::new(),
        }
    }

    /// Local versions up to `newest` of `actor` were just committed.
    pub fn local(&mut self, actor: ActorId, newest: u64, now: Instant) {
        self.head = Some((actor, newest.max(self.head.map_or(0, |h| h.1))));
        self.latest = Some((actor, newest.max(self.latest.map_or(0, |h| h.1))));
        self.last_local = now;
    }

    /// `alive` is the current alive member list: returns the latest local version and the
    /// members that were not alive at the previous call, to tell them now (none before this
    /// node wrote anything; at the first call every member is new).
    pub fn came_up(&mut self, alive: &[SocketAddr]) -> Option<((ActorId, u64), Vec<SocketAddr>)> {
        let new: Vec<SocketAddr> = alive
            .iter()
            .filter(|a| !self.alive.contains(a))
            .copied()
            .collect();
        if new.is_empty() && alive.len() == self.alive.len() {
            return None;
        }
        self.alive = alive.iter().copied().collect();
        match self.latest {
            Some(head) if !new.is_empty() => Some((head, new)),
            _ => None,
        }
    }

    /// Whether an announcement is waiting.
    pub fn pending(&self) -> bool {
        self.head.is_some()
    }

    /// The version to announce now, if any. With no peer to tell (`has_peers` false) it
    /// waits; members that appear sync with this node anyway.
    pub fn due(&mut self, now: Instant, has_peers: bool) -> Option<(ActorId, u64)> {
        let head = self.head?;
        if now.saturating_duration_since(self.last_local) < HEAD_QUIET
            && now.saturating_duration_since(self.sent) < HEAD_EVERY
        {
            return None;
        }
        if !has_peers {
            return None;
        }
        self.head = None;
        self.sent = now;
        Some(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn peers(n: u16) -> Vec<SocketAddr> {
        (1..=n)
            .map(|i| SocketAddr::from(([10, 0, 0, 1], i)))
            .collect()
    }

    #[test]
    fn a_local_frame_goes_to_fanout_peers_twice_then_leaves_the_queue() {
        let t0 = Instant::now();
        let mut rng = StdRng::seed_from_u64(1);
        let mut o: Outbox<u32> = Outbox::new(1e9, MAX_QUEUE_BYTES, t0);
        let ps = peers(10);
        o.push(7, 100, true, t0);
        let first = o.flush(&ps, t0, &mut rng);
        assert_eq!(first.len(), FANOUT);
        assert!(first.values().all(|f| f == &vec![7]));
        assert_eq!(o.frames(), 1, "a second round is due later");
        assert!(o.flush(&ps, t0 + ROUND_DELAY / 2, &mut rng).is_empty());
        let second = o.flush(&ps, t0 + ROUND_DELAY, &mut rng);
        assert_eq!(second.len(), FANOUT);
        assert!(
            second.keys().all(|a| !first.contains_key(a)),
            "the second round goes to other peers"
        );
        assert_eq!((o.frames(), o.bytes()), (0, 0));
    }

    #[test]
    fn a_relayed_frame_is_sent_once_and_local_frames_go_first() {
        let t0 = Instant::now();
        let mut rng = StdRng::seed_from_u64(2);
        // Budget for exactly FANOUT sends of one 100-byte frame.
        let mut o: Outbox<u32> = Outbox::new((FANOUT * 100) as f64, MAX_QUEUE_BYTES, t0);
        o.push(1, 100, false, t0);
        o.push(2, 100, true, t0);
        let sent = o.flush(&peers(10), t0, &mut rng);
        assert!(sent.values().all(|f| f == &vec![2]), "{sent:?}");
        // The local frame's second round takes the next second's budget, then the relay goes.
        let second = o.flush(&peers(10), t0 + Duration::from_secs(1), &mut rng);
        assert!(second.values().all(|f| f == &vec![2]), "{second:?}");
        let third = o.flush(&peers(10), t0 + Duration::from_secs(2), &mut rng);
        assert!(third.values().all(|f| f == &vec![1]) && third.len() == FANOUT);
        assert_eq!(o.frames(), 0);
    }

    #[test]
    fn a_full_queue_drops_relays_before_local_frames() {
        let t0 = Instant::now();
        let mut o: Outbox<u32> = Outbox::new(1e9, 250, t0);
        assert_eq!(o.push(1, 100, true, t0), 0);
        assert_eq!(o.push(2, 100, false, t0), 0);
        assert_eq!(o.push(3, 100, true, t0), 1, "the relay goes");
        assert_eq!(o.bytes(), 200);
        assert_eq!(o.push(4, 100, true, t0), 1, "then the oldest local frame");
        let sent = o.flush(&peers(5), t0, &mut StdRng::seed_from_u64(3));
        let frames: HashSet<u32> = sent.values().flatten().copied().collect();
        assert_eq!(frames, HashSet::from([3, 4]));
    }

    #[test]
    fn without_peers_the_queue_is_kept() {
        let t0 = Instant::now();
        let mut o: Outbox<u32> = Outbox::new(1e9, MAX_QUEUE_BYTES, t0);
        o.push(1, 10, true, t0);
        assert!(o.flush(&[], t0, &mut StdRng::seed_from_u64(4)).is_empty());
        assert_eq!(o.frames(), 1);
    }

    #[test]
    fn the_ttl_grows_with_the_cluster() {
        assert_eq!(initial_ttl(1), INITIAL_TTL);
        assert_eq!(initial_ttl(3), INITIAL_TTL);
        assert_eq!(initial_ttl(9), 5);
        assert_eq!(initial_ttl(10), 6);
        assert_eq!(initial_ttl(100), 8);
        assert_eq!(initial_ttl(1000), 10);
        assert_eq!(initial_ttl(usize::MAX), 44);
    }

    #[test]
    fn a_chunk_is_relayed_once_while_its_ttl_lasts() {
        let mut seen = Seen::default();
        let k = (ActorId([1; 16]), 3, 0, 0);
        assert_eq!(
            receive(&mut seen, k, 2, || false),
            Received::New { relay_ttl: Some(1) }
        );
        assert_eq!(receive(&mut seen, k, 2, || false), Received::Duplicate);
        let k2 = (ActorId([1; 16]), 4, 0, 0);
        assert_eq!(
            receive(&mut seen, k2, 0, || false),
            Received::New { relay_ttl: None }
        );
        let k3 = (ActorId([1; 16]), 5, 0, 0);
        assert_eq!(receive(&mut seen, k3, 4, || true), Received::Duplicate);
    }

    #[test]
    fn members_that_come_up_are_told_the_latest_version() {
        let t0 = Instant::now();
        let a = ActorId([3; 16]);
        let ps = peers(4);
        let mut h = HeadAnnouncer::new(t0);
        assert_eq!(h.came_up(&ps[..3]), None, "nothing written yet");
        h.local(a, 7, t0);
        assert_eq!(h.came_up(&ps[..3]), None, "nobody new");
        assert_eq!(h.came_up(&ps), Some(((a, 7), vec![ps[3]])));
        assert_eq!(h.came_up(&ps[1..]), None, "one went away");
        assert_eq!(h.came_up(&ps), Some(((a, 7), vec![ps[0]])), "and came back");
    }

    #[test]
    fn the_head_is_announced_after_a_pause_or_every_second() {
        let t0 = Instant::now();
        let a = ActorId([2; 16]);
        let mut h = HeadAnnouncer::new(t0);
        assert_eq!(h.due(t0 + HEAD_EVERY, true), None, "nothing written");
        h.local(a, 5, t0);
        assert_eq!(h.due(t0 + HEAD_QUIET / 2, true), None);
        assert_eq!(h.due(t0 + HEAD_QUIET, false), None, "no peer yet");
        assert_eq!(h.due(t0 + HEAD_QUIET, true), Some((a, 5)));
        assert!(!h.pending());
        // Continuous writes: announced once a second anyway.
        let mut t = t0 + HEAD_QUIET;
        let mut announced = 0;
        for v in 6..40 {
            t += Duration::from_millis(100);
            h.local(a, v, t);
            announced += usize::from(h.due(t, true).is_some());
        }
        assert_eq!(announced, 3, "3.4 s of writes");
    }
}
