//! When and with whom to sync, without I/O: the sync client loop's peer choice. Timer rounds
//! back off while the node is idle and up to date; hints (a member came up, a gap appeared,
//! an origin announced a version this node lacks) start sessions at once; a session that
//! failed, or received something while gaps remain, is followed by another; a failed peer
//! rests for [`RETRY_AFTER`]; at most [`MAX_SESSIONS`] run at once. [`super::sync::client_loop`]
//! drives it with tokio and QUIC, the scale simulation (`tests/sim/scale.rs`) on simulated
//! time; both pass the time and the random generator in.

use crate::crdt::ActorId;
use crate::store::bookkeeping::Bookie;
use rand::seq::IndexedRandom;
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Peers synced with per timer round.
pub const PEERS_PER_ROUND: usize = 3;
/// Client sessions in flight at once, counting those started for a hint (a member that came
/// up, a gap that appeared): catch-up runs in parallel but bounded.
pub const MAX_SESSIONS: usize = 6;
/// A peer whose session failed (busy, unreachable) is not picked again for this long.
pub const RETRY_AFTER: Duration = Duration::from_secs(2);
/// Origins whose announced head is still owed, at most (see [`SyncScheduler::head`]).
pub const MAX_OWED_HEADS: usize = 1024;

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It completed and received this many chunks.
    Received(usize),
    /// It failed (refused as busy, unreachable, timed out, broken).
    Failed,
}

/// A session wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// With this member (it came up, or its head is owed).
    Peer(SocketAddr),
    /// With any member (timer round, gap, replacing a failed session).
    Any,
    /// With any member, replacing a failed session with a named one.
    Instead,
}

/// The sync client loop's decisions.
#[derive(Debug)]
pub struct SyncScheduler {
    min: Duration,
    max: Duration,
    backoff: Duration,
    next_round: Instant,
    in_flight: BTreeSet<SocketAddr>,
    failed: HashMap<SocketAddr, Instant>,
    progress: bool,
    ingested: u64,
    /// Sessions wanted since the last [`SyncScheduler::start`].
    want: Vec<Want>,
    /// Sessions running that were started for a named peer.
    named: BTreeSet<SocketAddr>,
    /// Origins that announced a version this node still lacks: origin → (actor, version).
    owed: BTreeMap<SocketAddr, (ActorId, u64)>,
}

/// Whether an origin's announced head (`actor` at `version`) is news to node `me`.
pub fn head_is_news(book: &Bookie, me: ActorId, actor: ActorId, version: u64) -> bool {
    actor != me && book.get(&actor).is_none_or(|b| b.max < version)
}

impl SyncScheduler {
    /// Rounds every `min` while behind or while changes flow, backing off to `max` when idle;
    /// `ingested` is the current count of ingested changes.
    pub fn new(min: Duration, max: Duration, now: Instant, ingested: u64) -> SyncScheduler {
        SyncScheduler {
            min,
            max: max.max(min),
            backoff: min,
            next_round: now + min,
            in_flight: BTreeSet::new(),
            failed: HashMap::new(),
            progress: false,
            ingested,
            want: Vec::new(),
            named: BTreeSet::new(),
            owed: BTreeMap::new(),
        }
    }

    /// When the next timer round is due.
    pub fn next_round(&self) -> Instant {
        self.next_round
    }

    /// Sessions running.
    pub fn running(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether sessions are wanted (call [`SyncScheduler::start`]).
    pub fn wants(&self) -> bool {
        !self.want.is_empty()
    }

    /// A member came up (joined, restarted, back from a partition): sync with it now, and
    /// run the next rounds at the shortest interval. A node back from a partition cannot
    /// tell what it missed when the writes it lacks were the last ones (no gap shows), and
    /// the sessions with the members that came up are bounded; with idle rounds backed off,
    /// the rest used to wait up to `max` (8 s after a healed cut at 100 nodes in the fleet
    /// simulation).
    pub fn peer_up(&mut self, addr: SocketAddr, now: Instant) {
        self.want.push(Want::Peer(addr));
        self.progress = true;
        self.next_round = self.next_round.min(now + self.min);
    }

    /// A gap appeared: sync with anyone.
    pub fn behind(&mut self) {
        self.want.push(Want::Any);
    }

    /// The origin at `addr` announced `version` of `actor`, which this node lacks
    /// ([`head_is_news`]): a session with it starts at once, and the head stays owed until a
    /// session with the origin completes or the version arrives otherwise; every timer round
    /// asks the origin again meanwhile. The announcement is sent once, and the session it
    /// starts can fail (the origin is busy serving everyone who lacks it, this node is at its
    /// session bound): before, such a version waited for a random round to pick its only
    /// holder — about 20 s after a healed cut at 40 nodes in the fleet simulation.
    pub fn head(&mut self, addr: SocketAddr, actor: ActorId, version: u64) {
        if self.owed.len() < MAX_OWED_HEADS || self.owed.contains_key(&addr) {
            let e = self.owed.entry(addr).or_insert((actor, version));
            if e.0 == actor {
                e.1 = e.1.max(version);
            } else {
                *e = (actor, version);
            }
        }
        self.want.push(Want::Peer(addr));
    }

    /// Heads still owed.
    pub fn owed_heads(&self) -> usize {
        self.owed.len()
    }

    /// The session with `addr` ended; `gaps` is how many versions this node now knows it
    /// lacks. A failed session is followed at once by one with another peer. One that
    /// received something is followed by another only while gaps remain: under a steady
    /// write load almost every session receives something (versions still on their way by
    /// broadcast), and following each of those at once kept every node in back-to-back
    /// sessions (about 40 per node per second at 100 nodes in the fleet simulation, half of
    /// them refused as busy). A gap opened later by the apply queue hints on its own.
    pub fn ended(&mut self, addr: SocketAddr, outcome: Outcome, now: Instant, gaps: u64) {
        self.in_flight.remove(&addr);
        let named = self.named.remove(&addr);
        if matches!(outcome, Outcome::Received(_)) {
            self.owed.remove(&addr);
        }
        match outcome {
            Outcome::Received(n) if n > 0 => {
                self.progress = true;
                if gaps > 0 {
                    self.want.push(Want::Any);
                }
            }
            Outcome::Received(_) => {}
            Outcome::Failed => {
                self.failed.insert(addr, now);
                // Another peer at once; in place of a named peer (an origin busy serving
                // everyone who lacks its version), with the same priority.
                self.want
                    .push(if named { Want::Instead } else { Want::Any });
            }
        }
    }

    /// The timer round: `gaps` missing versions now, `ingested` changes ingested so far,
    /// `lacks(actor, version)` whether an owed head is still missing. Behind, or changes
    /// flowing (whose last ones may be lost unnoticed), or heads owed: go again soon. Up to
    /// date and quiet: back off. Asks every origin whose head is owed again, and tops the
    /// sessions up to [`PEERS_PER_ROUND`].
    pub fn round<R: Rng + ?Sized>(
        &mut self,
        now: Instant,
        gaps: u64,
        ingested: u64,
        rng: &mut R,
        lacks: impl Fn(&ActorId, u64) -> bool,
    ) {
        self.owed
            .retain(|_, (actor, version)| lacks(actor, *version));
        self.want.extend(self.owed.keys().map(|a| Want::Peer(*a)));
        let flowing = ingested != self.ingested;
        self.ingested = ingested;
        self.backoff = if self.progress || gaps > 0 || flowing || !self.owed.is_empty() {
            self.min
        } else {
            (self.backoff * 2).min(self.max)
        };
        self.progress = false;
        let jitter = rng.random_range(0.7..1.3);
        self.next_round = now + self.backoff.mul_f64(jitter);
        let top_up = PEERS_PER_ROUND.saturating_sub(self.running());
        self.want.extend(std::iter::repeat_n(Want::Any, top_up));
    }

    /// The peers to open sessions with now, among `peers` (members worth a sync: alive or
    /// suspect); they count as running until [`SyncScheduler::ended`]. A wanted peer that is
    /// not a member or already in a session is skipped; "any" picks a random member that is
    /// not in a session and did not fail lately, while fewer than [`PEERS_PER_ROUND`]
    /// sessions run. Wants beyond [`MAX_SESSIONS`] are dropped (the next round covers them).
    pub fn start<R: Rng + ?Sized>(
        &mut self,
        peers: &[SocketAddr],
        now: Instant,
        rng: &mut R,
    ) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        if self.want.is_empty() {
            return out;
        }
        self.failed
            .retain(|_, at| now.saturating_duration_since(*at) < RETRY_AFTER);
        for w in std::mem::take(&mut self.want) {
            if self.running() >= MAX_SESSIONS {
                break;
            }
            let addr = match w {
                Want::Peer(a) if peers.contains(&a) && !self.in_flight.contains(&a) => {
                    self.named.insert(a);
                    a
                }
                Want::Peer(_) => continue,
                // Sessions with any peer (timer rounds, their replacements, gaps) keep to the
                // round's count: the slots above it stay free for the named peers (members
                // that came up, owed heads). During a partition the sessions with cut-off
                // peers hang for the answer timeout, and replacing each failure at once used
                // to fill every slot with them.
                Want::Any if self.running() >= PEERS_PER_ROUND => continue,
                Want::Any | Want::Instead => {
                    let free: Vec<SocketAddr> = peers
                        .iter()
                        .filter(|a| !self.in_flight.contains(a) && !self.failed.contains_key(a))
                        .copied()
                        .collect();
                    match free.choose(rng) {
                        Some(a) => *a,
                        None => break,
                    }
                }
            };
            self.in_flight.insert(addr);
            out.push(addr);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn peers(n: u16) -> Vec<SocketAddr> {
        (1..=n)
            .map(|i| SocketAddr::from(([10, 0, 0, 2], i)))
            .collect()
    }

    const MIN: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(15);

    #[test]
    fn a_round_tops_up_to_three_sessions_with_distinct_peers() {
        let t0 = Instant::now();
        let mut rng = StdRng::seed_from_u64(1);
        let mut s = SyncScheduler::new(MIN, MAX, t0, 0);
        assert_eq!(s.next_round(), t0 + MIN);
        s.round(t0 + MIN, 0, 0, &mut rng, |_, _| true);
        let started = s.start(&peers(10), t0 + MIN, &mut rng);
        assert_eq!(started.len(), PEERS_PER_ROUND);
        assert_eq!(started.iter().collect::<BTreeSet<_>>().len(), 3);
        // One ends; the next round tops up by one only.
        s.ended(started[0], Outcome::Received(0), t0 + MIN, 0);
        s.round(t0 + MIN * 3, 0, 0, &mut rng, |_, _| true);
        assert_eq!(s.start(&peers(10), t0 + MIN * 3, &mut rng).len(), 1);
    }

    #[test]
    fn idle_rounds_back_off_and_activity_brings_them_back() {
        let mut t = Instant::now();
        let mut rng = StdRng::seed_from_u64(2);
        let mut s = SyncScheduler::new(MIN, MAX, t, 0);
        let mut gaps = Vec::new();
        for _ in 0..8 {
            t = s.next_round();
            s.round(t, 0, 0, &mut rng, |_, _| true);
            gaps.push(s.next_round().duration_since(t));
        }
        assert!(gaps[0] >= MIN.mul_f64(2.0 * 0.7) && gaps[0] <= MIN.mul_f64(2.0 * 1.3));
        assert!(
            gaps[7] >= MAX.mul_f64(0.7) && gaps[7] <= MAX.mul_f64(1.3),
            "{gaps:?}"
        );
        t = s.next_round();
        s.round(t, 0, 5, &mut rng, |_, _| true); // changes were ingested
        assert!(s.next_round().duration_since(t) <= MIN.mul_f64(1.3));
        t = s.next_round();
        s.round(t, 0, 5, &mut rng, |_, _| true);
        s.round(t, 3, 5, &mut rng, |_, _| true); // gaps
        assert!(s.next_round().duration_since(t) <= MIN.mul_f64(1.3));
    }

    #[test]
    fn a_member_coming_up_brings_the_rounds_back_to_the_minimum() {
        let mut t = Instant::now();
        let mut rng = StdRng::seed_from_u64(6);
        let mut s = SyncScheduler::new(MIN, MAX, t, 0);
        for _ in 0..6 {
            t = s.next_round();
            s.round(t, 0, 0, &mut rng, |_, _| true);
        }
        assert!(s.next_round() - t > MIN * 5, "idle rounds backed off");
        s.peer_up(SocketAddr::from(([10, 0, 0, 3], 1)), t);
        assert_eq!(s.next_round(), t + MIN);
        s.round(t + MIN, 0, 0, &mut rng, |_, _| true);
        assert!(s.next_round() - (t + MIN) <= MIN.mul_f64(1.3));
    }

    #[test]
    fn hints_name_their_peer_and_failures_try_another() {
        let t0 = Instant::now();
        let mut rng = StdRng::seed_from_u64(3);
        let ps = peers(4);
        let mut s = SyncScheduler::new(MIN, MAX, t0, 0);
        s.peer_up(ps[2], t0);
        assert_eq!(s.start(&ps, t0, &mut rng), vec![ps[2]]);
        s.head(ps[2], ActorId([3; 16]), 1);
        assert!(
            s.start(&ps, t0, &mut rng).is_empty(),
            "already in a session"
        );
        s.head(SocketAddr::from(([10, 9, 9, 9], 1)), ActorId([4; 16]), 1);
        assert!(s.start(&ps, t0, &mut rng).is_empty(), "not a member");
        s.ended(ps[2], Outcome::Failed, t0, 0);
        // The failed peer rests: "any" never picks it for RETRY_AFTER.
        let mut picked = BTreeSet::new();
        for _ in 0..20 {
            s.behind();
            for a in s.start(&ps, t0, &mut rng) {
                picked.insert(a);
                s.ended(a, Outcome::Received(0), t0, 0);
            }
        }
        assert!(!picked.contains(&ps[2]) && picked.len() == 3, "{picked:?}");
        // After RETRY_AFTER it is a candidate again.
        let later = t0 + RETRY_AFTER;
        let back = (0..50).any(|_| {
            s.behind();
            let got = s.start(&ps, later, &mut rng);
            for a in &got {
                s.ended(*a, Outcome::Received(0), later, 0);
            }
            got.contains(&ps[2])
        });
        assert!(back);
    }

    #[test]
    fn sessions_with_any_peer_leave_room_for_named_ones() {
        let t0 = Instant::now();
        let mut rng = StdRng::seed_from_u64(7);
        let ps = peers(20);
        let mut s = SyncScheduler::new(MIN, MAX, t0, 0);
        for _ in 0..10 {
            s.behind();
        }
        assert_eq!(s.start(&ps, t0, &mut rng).len(), PEERS_PER_ROUND);
        s.peer_up(ps[0], t0);
        s.head(ps[1], ActorId([5; 16]), 3);
        let named = s.start(&ps, t0, &mut rng);
        assert!(
            named.iter().all(|a| *a == ps[0] || *a == ps[1]),
            "{named:?}"
        );
        assert_eq!(s.running(), PEERS_PER_ROUND + named.len());
    }

    #[test]
    fn a_busy_origin_is_replaced_by_another_peer_at_once() {
        let t0 = Instant::now();
        let mut rng = StdRng::seed_from_u64(8);
        let ps = peers(20);
        let mut s = SyncScheduler::new(MIN, MAX, t0, 0);
        for _ in 0..PEERS_PER_ROUND {
            s.behind();
        }
        // The random sessions go to others than the origin.
        assert_eq!(s.start(&ps[1..], t0, &mut rng).len(), PEERS_PER_ROUND);
        s.head(ps[0], ActorId([6; 16]), 9);
        assert_eq!(s.start(&ps, t0, &mut rng), vec![ps[0]]);
        s.ended(ps[0], Outcome::Failed, t0, 0);
        let instead = s.start(&ps, t0, &mut rng);
        assert_eq!(instead.len(), 1, "replaced although 3 random sessions run");
        assert_ne!(instead[0], ps[0]);
    }

    #[test]
    fn sessions_are_bounded_and_progress_asks_for_more() {
        let t0 = Instant::now();
        let mut rng = StdRng::seed_from_u64(4);
        let ps = peers(20);
        let mut s = SyncScheduler::new(MIN, MAX, t0, 0);
        for p in &ps {
            s.peer_up(*p, t0);
        }
        let started = s.start(&ps, t0, &mut rng);
        assert_eq!(started.len(), MAX_SESSIONS);
        assert!(!s.wants(), "wants beyond the bound are dropped");
        s.ended(started[0], Outcome::Received(7), t0, 0);
        assert!(
            !s.wants(),
            "received something, nothing known missing: wait for the round"
        );
        for a in &started[1..4] {
            s.ended(*a, Outcome::Received(0), t0, 0);
        }
        s.ended(started[4], Outcome::Received(7), t0, 12);
        assert!(
            s.wants(),
            "received something and gaps remain: another at once"
        );
        assert_eq!(s.start(&ps, t0, &mut rng).len(), 1);
    }

    #[test]
    fn an_owed_head_is_asked_for_every_round_until_it_arrives() {
        let t0 = Instant::now();
        let mut rng = StdRng::seed_from_u64(5);
        let ps = peers(4);
        let origin = ActorId([9; 16]);
        let mut s = SyncScheduler::new(MIN, MAX, t0, 0);
        s.head(ps[0], origin, 7);
        assert_eq!(s.start(&ps, t0, &mut rng), vec![ps[0]]);
        s.ended(ps[0], Outcome::Failed, t0, 0); // the origin was busy
        let _ = s.start(&ps, t0, &mut rng); // another peer instead
        for p in &ps[1..] {
            s.ended(*p, Outcome::Received(0), t0, 0);
        }
        // The next round asks the origin again (failed lately or not), and keeps the
        // rounds short while the head is owed.
        let t1 = t0 + MIN;
        s.round(t1, 0, 0, &mut rng, |_, _| true);
        assert!(s.next_round() <= t1 + MIN.mul_f64(1.3));
        let again = s.start(&ps, t1, &mut rng);
        assert!(again.contains(&ps[0]), "{again:?}");
        assert_eq!(s.owed_heads(), 1);
        for a in again {
            s.ended(a, Outcome::Received(0), t1, 0);
        }
        assert_eq!(
            s.owed_heads(),
            0,
            "a completed session with the origin pays the head"
        );
        // A head that arrives another way is forgotten at the next round.
        s.head(ps[1], origin, 8);
        let started = s.start(&ps, t1, &mut rng);
        s.ended(started[0], Outcome::Failed, t1, 0);
        s.round(t1 + MIN, 0, 0, &mut rng, |a, v| !(*a == origin && v <= 8));
        assert_eq!(s.owed_heads(), 0);
    }

    #[test]
    fn a_head_is_news_only_when_newer_than_what_is_known() {
        let (me, other) = (ActorId([1; 16]), ActorId([2; 16]));
        let mut book = Bookie::new();
        assert!(head_is_news(&book, me, other, 1));
        book.record_known(other, 1..=3);
        assert!(!head_is_news(&book, me, other, 3));
        assert!(head_is_news(&book, me, other, 4));
        assert!(!head_is_news(&book, me, me, 9), "our own head");
    }
}
