//! Membership, broadcast and sync together at fleet size, on simulated time.
//!
//! Every node runs the agent's decision code: the real foca state machine with the agent's
//! configuration and identity codec plus the driver's announces to down members
//! (`DownAnnouncer`); the broadcaster's queue, fan-out, relay rule and head announcements
//! (`cluster::fanout`); the sync client's peer choice (`cluster::sync_sched`); the sync
//! session's bookkeeping summary, needs and claims (`cluster::sync_state`) over the real
//! bookkeeping (`store::bookkeeping::Bookie`). What a node holds is its bookkeeping (which
//! versions of which origin), not a database: every write is one version of one row, whose
//! frames are the real encoded messages of such a row (their sizes are what is counted).
//!
//! The network: 5 regions, one-way latency 0.5–2.5 ms inside a region and 15–100 ms between
//! regions (fixed per region pair from the seed, plus up to 100 % jitter); 1 % loss. SWIM and
//! head datagrams are lost; stream frames (broadcast, sync) are retransmitted, as QUIC does
//! (a lost one arrives 1.5 round trips later), and cost a handshake round trip when the pair
//! has not talked for 30 s. A node that is down or cut off loses what is sent to it.
//!
//! Deterministic: ids, latencies, losses and every random choice (foca's, the fan-out's, the
//! sync peer's) come from the seed; every delivered message feeds a trace hash.

use foca::{AccumulatingRuntime, Foca, OwnedNotification, State, Timer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use verdigris::cluster::codec::{self, Msg};
use verdigris::cluster::fanout::{self, HeadAnnouncer, Outbox, Received, Seen, MAX_QUEUE_BYTES};
use verdigris::cluster::identity::{Actor, SwimCodec};
use verdigris::cluster::membership::{
    foca_config, packet_limit, stuck_after, DownAnnouncer, StuckSuspicions, DOWN_TICK,
};
use verdigris::cluster::sync::{ANSWER_TIMEOUT, MAX_NEEDS_PER_SESSION, MAX_SERVED};
use verdigris::cluster::sync_sched::{head_is_news, Outcome, SyncScheduler};
use verdigris::cluster::sync_state::{compute_needs, state_of, Claims, Need, SyncState};
use verdigris::crdt::ActorId;
use verdigris::store::bookkeeping::Bookie;

#[path = "scale_sync.rs"]
mod sessions;

type Swim = Foca<Actor, SwimCodec, rand010::rngs::StdRng, foca::NoCustomBroadcast>;

pub const REGIONS: usize = 5;
const LOSS: f64 = 0.01;
/// Bytes a datagram costs beyond foca's packet: QUIC header and tag, our envelope.
const DATAGRAM_OVERHEAD: u64 = 100;
/// Bytes a stream frame costs beyond its encoded message: QUIC header, tag and stream frame.
const STREAM_OVERHEAD: u64 = 60;
/// A QUIC connection unused this long is closed (`gossip.idle_timeout_secs`).
const IDLE: u64 = 30_000_000;
/// A server gives up on a client that does not send its request (the agent's step timeout).
const STEP_TIMEOUT: u64 = 30_000_000;
/// An encoded `Head` message (actor id, address, version, envelope).
const HEAD_BYTES: u64 = 40;
/// The broadcaster's tick.
const BCAST_TICK: u64 = 50_000;
/// The agent's sync backoff defaults (`perf.min_sync_backoff`, `perf.max_sync_backoff`).
const SYNC_MIN: Duration = Duration::from_secs(1);
const SYNC_MAX: Duration = Duration::from_secs(15);

/// A broadcast frame: one version (one chunk) of one origin.
#[derive(Clone, Debug)]
struct Frame {
    actor: ActorId,
    version: u64,
    ttl: u8,
}

enum Ev {
    Swim {
        from: usize,
        to: usize,
        data: Vec<u8>,
    },
    Timer {
        node: usize,
        gen: u32,
        timer: Timer<Actor>,
    },
    DownTick {
        node: usize,
        gen: u32,
    },
    /// The driver's 1 s tick: the member view is refreshed.
    ViewTick {
        node: usize,
        gen: u32,
    },
    BcastTick {
        node: usize,
        gen: u32,
    },
    SyncRound {
        node: usize,
        gen: u32,
    },
    Frames {
        from: usize,
        to: usize,
        frames: Vec<Frame>,
    },
    Head {
        from: usize,
        to: usize,
        actor: ActorId,
        version: u64,
    },
    Start {
        sid: u64,
    },
    /// The server's answer: its state, or `None` (refused as busy).
    Answer {
        sid: u64,
        state: Option<SyncState>,
    },
    Request {
        sid: u64,
        needs: Vec<Need>,
    },
    Chunks {
        sid: u64,
        versions: Vec<(ActorId, u64)>,
    },
    /// The client's first-answer timeout, and the server's step timeout.
    AnswerTimeout {
        sid: u64,
    },
    ServeTimeout {
        sid: u64,
    },
    Write {
        node: usize,
    },
    Preload {
        node: usize,
    },
}

struct Session {
    client: usize,
    server: usize,
    client_gen: u32,
    server_gen: u32,
    answered: bool,
    needs: Vec<Need>,
    /// The server holds a serving slot for it.
    serving: bool,
    /// The client has ended it.
    client_done: bool,
}

pub struct Node {
    foca: Swim,
    rt: AccumulatingRuntime<Actor>,
    members: usize,
    down: DownAnnouncer,
    suspected: StuckSuspicions,
    /// foca's current timer token (seen on the timers it schedules).
    timer_token: Option<u8>,
    pub up: bool,
    /// Incremented on every restart: events of the previous process are void.
    gen: u32,
    actor: ActorId,
    pub book: Bookie,
    next_version: u64,
    seen: Seen,
    outbox: Outbox<Frame>,
    head: HeadAnnouncer,
    bcast_armed: bool,
    sched: SyncScheduler,
    /// When the armed sync round fires.
    round_at: u64,
    claims: Claims,
    serving: usize,
    ingested: u64,
    /// The member view (as the driver publishes it): alive, and alive or suspect.
    alive: Vec<SocketAddr>,
    sync_peers: Vec<SocketAddr>,
}

/// Counters of what was sent and received.
#[derive(Default, Clone, Debug)]
pub struct Traffic {
    pub swim_packets: u64,
    pub swim_bytes: u64,
    pub frames_sent: u64,
    pub frame_bytes: u64,
    pub heads_sent: u64,
    pub head_bytes: u64,
    pub sync_msgs: u64,
    pub sync_bytes: u64,
    pub sessions: u64,
    pub sessions_failed: u64,
    /// Copies of versions received by broadcast, and by sync.
    pub bcast_copies: u64,
    pub sync_copies: u64,
}

pub struct ScaleSim {
    rng: StdRng,
    pub now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Ev>,
    pub nodes: Vec<Node>,
    addrs: HashMap<SocketAddr, usize>,
    actors: HashMap<ActorId, usize>,
    latency: [[u64; REGIONS]; REGIONS],
    limit: usize,
    /// A region cut off from the others (both ways).
    pub cut: Option<usize>,
    /// Last time each (from, to) connection carried something.
    conns: HashMap<(usize, usize), u64>,
    sessions: BTreeMap<u64, Session>,
    next_sid: u64,
    epoch: Instant,
    pub traffic: Traffic,
    /// (time, observer, member, whether the member was up) of every `down` notification
    /// about a member's current identity.
    pub downs: Vec<(u64, usize, usize, bool)>,
    /// Every write: (origin, version) → write time.
    pub writes: BTreeMap<(ActorId, u64), u64>,
    /// When each version was first held by each node that must see it (see `watch`).
    pending: HashMap<(ActorId, u64), usize>,
    /// Nodes whose receipt of each write is timed (the others are churned).
    pub watched: Vec<bool>,
    /// Write → time it was held by every watched node.
    pub visible: BTreeMap<(ActorId, u64), u64>,
    /// Versions each node holds (own writes included).
    pub held: Vec<u64>,
    trace: std::hash::DefaultHasher,
    frame_len: u64,
    chunk_len: u64,
}

fn addr_of(i: usize) -> SocketAddr {
    SocketAddr::from(([10, (i / 250) as u8, (i % 250) as u8 + 1, 1], 8787))
}

pub fn region(i: usize) -> usize {
    i % REGIONS
}

impl ScaleSim {
    /// `frame_len`, `chunk_len`: encoded sizes of one version as a broadcast frame and as a
    /// sync chunk.
    #[allow(clippy::needless_range_loop)] // fills a symmetric matrix
    pub fn new(seed: u64, n: usize, frame_len: u64, chunk_len: u64) -> ScaleSim {
        let mut rng = StdRng::seed_from_u64(seed);
        let limit = packet_limit(None);
        let mut latency = [[0u64; REGIONS]; REGIONS];
        for a in 0..REGIONS {
            for b in a..REGIONS {
                let l = if a == b {
                    rng.random_range(500..1_250)
                } else {
                    rng.random_range(15_000..50_000)
                };
                latency[a][b] = l;
                latency[b][a] = l;
            }
        }
        let epoch = Instant::now();
        let mut sim = ScaleSim {
            rng,
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            nodes: Vec::new(),
            addrs: HashMap::new(),
            actors: HashMap::new(),
            latency,
            limit,
            cut: None,
            conns: HashMap::new(),
            sessions: BTreeMap::new(),
            next_sid: 0,
            epoch,
            traffic: Traffic::default(),
            downs: Vec::new(),
            writes: BTreeMap::new(),
            pending: HashMap::new(),
            watched: vec![true; n],
            visible: BTreeMap::new(),
            held: vec![0; n],
            trace: std::hash::DefaultHasher::new(),
            frame_len,
            chunk_len,
        };
        for i in 0..n {
            let id = ActorId(sim.rng.random());
            let me = Actor {
                id,
                addr: addr_of(i),
                bump: 1_000_000,
            };
            sim.addrs.insert(me.addr, i);
            sim.actors.insert(id, i);
            let node = sim.new_node(me, 0);
            sim.nodes.push(node);
        }
        sim
    }

    fn instant(&self) -> Instant {
        self.epoch + Duration::from_micros(self.now)
    }

    fn new_node(&mut self, me: Actor, gen: u32) -> Node {
        let foca_rng =
            <rand010::rngs::StdRng as rand010::SeedableRng>::seed_from_u64(self.rng.random());
        let t = self.instant();
        Node {
            actor: me.id,
            foca: Foca::new(me, foca_config(1, self.limit), foca_rng, SwimCodec),
            rt: AccumulatingRuntime::new(),
            members: 1,
            down: DownAnnouncer::default(),
            suspected: StuckSuspicions::default(),
            timer_token: None,
            up: true,
            gen,
            book: Bookie::new(),
            next_version: 1,
            seen: Seen::default(),
            outbox: Outbox::new(10.0 * 1024.0 * 1024.0, MAX_QUEUE_BYTES, t),
            head: HeadAnnouncer::new(t),
            bcast_armed: false,
            sched: SyncScheduler::new(SYNC_MIN, SYNC_MAX, t, 0),
            round_at: u64::MAX,
            claims: Claims::default(),
            serving: 0,
            ingested: 0,
            alive: Vec::new(),
            sync_peers: Vec::new(),
        }
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.insert((at, self.seq), ev);
    }

    fn cut_between(&self, a: usize, b: usize) -> bool {
        self.cut
            .is_some_and(|r| (region(a) == r) != (region(b) == r))
    }

    fn one_way(&mut self, a: usize, b: usize) -> u64 {
        let base = self.latency[region(a)][region(b)];
        base + self.rng.random_range(0..=base)
    }

    /// A datagram from `a` to `b`: lost at random or across the cut; else its arrival time.
    fn datagram(&mut self, a: usize, b: usize) -> Option<u64> {
        if self.rng.random_bool(LOSS) || self.cut_between(a, b) {
            return None;
        }
        Some(self.now + self.one_way(a, b))
    }

    /// A stream message from `a` to `b`: a handshake first if the pair was idle, and a lost
    /// packet is sent again 1.5 round trips later. Across the cut: lost.
    fn stream(&mut self, a: usize, b: usize) -> Option<u64> {
        if self.cut_between(a, b) {
            return None;
        }
        let key = (a.min(b), a.max(b));
        let mut at = self.now;
        if self.conns.get(&key).is_none_or(|t| self.now - t > IDLE) {
            at += 2 * self.one_way(a, b);
        }
        self.conns.insert(key, self.now);
        while self.rng.random_bool(LOSS) {
            at += 3 * self.one_way(a, b);
        }
        Some(at + self.one_way(a, b))
    }

    fn sync_msg(&mut self, bytes: usize) {
        self.traffic.sync_msgs += 1;
        self.traffic.sync_bytes += bytes as u64 + 4 + STREAM_OVERHEAD;
    }

    /// Moves node `i`'s foca outputs into the event queue (as the driver's `drain`).
    fn drain(&mut self, i: usize) {
        let gen = self.nodes[i].gen;
        while let Some((to, data)) = self.nodes[i].rt.to_send() {
            let Some(&j) = self.addrs.get(&to.addr) else {
                continue;
            };
            self.traffic.swim_packets += 1;
            self.traffic.swim_bytes += data.len() as u64 + DATAGRAM_OVERHEAD;
            if let Some(at) = self.datagram(i, j) {
                let data = data.to_vec();
                self.push(
                    at,
                    Ev::Swim {
                        from: i,
                        to: j,
                        data,
                    },
                );
            }
        }
        while let Some((after, timer)) = self.nodes[i].rt.to_schedule() {
            if let Timer::ProbeRandomMember(token) = &timer {
                self.nodes[i].timer_token = Some(*token);
            }
            let at = self.now + after.as_micros() as u64;
            self.push(
                at,
                Ev::Timer {
                    node: i,
                    gen,
                    timer,
                },
            );
        }
        let t = self.instant();
        let mut changed = false;
        let mut closed = Vec::new();
        while let Some(n) = self.nodes[i].rt.to_notify() {
            match n {
                OwnedNotification::MemberDown(a) => {
                    if let Some(&j) = self.addrs.get(&a.addr) {
                        if self.nodes[j].foca.identity() == &a {
                            self.downs.push((self.now, i, j, self.nodes[j].up));
                        }
                    }
                    self.nodes[i].down.down(a.addr, t);
                    if let Some(&j) = self.addrs.get(&a.addr) {
                        closed.push(j);
                    }
                    changed = true;
                }
                OwnedNotification::MemberUp(a) | OwnedNotification::Rename(_, a) => {
                    self.nodes[i].down.up(&a.addr);
                    // The driver hints the sync loop once the view lists the member.
                    self.nodes[i].sched.peer_up(a.addr, t);
                    changed = true;
                }
                _ => {}
            }
        }
        for j in closed {
            self.close_connection(i, j);
        }
        if changed {
            self.refresh_view(i);
            self.start_sessions(i);
            let next = self.nodes[i].sched.next_round().duration_since(self.epoch);
            if (next.as_micros() as u64) < self.nodes[i].round_at {
                self.arm_sync_round(i);
            }
        }
    }

    /// The driver's ending of suspicions nobody refutes (`StuckSuspicions`).
    fn end_stuck_suspicions(&mut self, i: usize) {
        let t = self.instant();
        let node = &mut self.nodes[i];
        let Some(token) = node.timer_token else {
            return;
        };
        let suspects: Vec<(Actor, u16)> = node
            .foca
            .iter_membership_state()
            .filter(|m| m.state() == State::Suspect)
            .map(|m| (m.id().clone(), m.incarnation()))
            .collect();
        let stuck = stuck_after(node.members, self.limit);
        let ended = node.suspected.check(suspects, t, stuck);
        for (member_id, incarnation) in ended {
            let timer = Timer::ChangeSuspectToDown {
                member_id,
                incarnation,
                token,
            };
            let _ = node.foca.handle_timer(timer, &mut node.rt);
        }
        self.drain(i);
    }

    /// The driver's member view, and foca's config sized to the cluster.
    fn refresh_view(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.alive.clear();
        node.sync_peers.clear();
        for m in node.foca.iter_membership_state() {
            match m.state() {
                State::Alive => {
                    node.alive.push(m.id().addr);
                    node.sync_peers.push(m.id().addr);
                }
                State::Suspect => node.sync_peers.push(m.id().addr),
                State::Down => {}
            }
        }
        let n = node.foca.num_members() + 1;
        if n != node.members {
            node.members = n;
            let _ = node.foca.set_config(foca_config(n, self.limit));
        }
        // The broadcaster reads the same view: members that came up hear our latest version.
        if let Some(((actor, version), to)) = node.head.came_up(&node.alive) {
            self.send_heads(i, actor, version, to);
        }
    }

    fn send_heads(&mut self, i: usize, actor: ActorId, version: u64, to: Vec<SocketAddr>) {
        for addr in to {
            let j = self.addrs[&addr];
            self.traffic.heads_sent += 1;
            self.traffic.head_bytes += HEAD_BYTES + DATAGRAM_OVERHEAD;
            if let Some(at) = self.datagram(i, j) {
                self.push(
                    at,
                    Ev::Head {
                        from: i,
                        to: j,
                        actor,
                        version,
                    },
                );
            }
        }
    }

    /// Starts the node's periodic tasks (membership ticks, sync rounds).
    fn start_ticks(&mut self, i: usize) {
        let gen = self.nodes[i].gen;
        let at = self.now + self.rng.random_range(0..DOWN_TICK.as_micros() as u64);
        self.push(at, Ev::DownTick { node: i, gen });
        let at = self.now + self.rng.random_range(0..1_000_000);
        self.push(at, Ev::ViewTick { node: i, gen });
        self.arm_sync_round(i);
    }

    /// Arms the node's sync round at its scheduler's `next_round` (the agent's loop sleeps
    /// until it; an earlier event armed before is void).
    fn arm_sync_round(&mut self, i: usize) {
        let at = self.nodes[i]
            .sched
            .next_round()
            .duration_since(self.epoch)
            .as_micros() as u64;
        let at = at.max(self.now);
        self.nodes[i].round_at = at;
        let gen = self.nodes[i].gen;
        self.push(at, Ev::SyncRound { node: i, gen });
    }

    /// Every node starts knowing every other one alive (a fleet restarting with its
    /// persisted member lists), the nodes starting within the first second.
    pub fn preload(&mut self) {
        let n = self.nodes.len() as u64;
        for i in 0..n {
            self.push(i * 1_000_000 / n, Ev::Preload { node: i as usize });
        }
    }

    fn start_preloaded(&mut self, i: usize) {
        let others: Vec<foca::Member<Actor>> = (0..self.nodes.len())
            .filter(|j| *j != i)
            .map(|j| foca::Member::alive(self.nodes[j].foca.identity().clone()))
            .collect();
        let node = &mut self.nodes[i];
        let _ = node
            .foca
            .apply_many(others.into_iter(), false, &mut node.rt);
        self.drain(i);
        self.start_ticks(i);
    }

    /// The node crashes: its process state is gone, its bookkeeping (database) survives.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].up = false;
    }

    /// The node starts again: a restarted identity (a later start time as its bump), its
    /// bookkeeping from its database, and announces to every member it had persisted.
    pub fn restart(&mut self, i: usize) {
        let old = self.nodes[i].foca.identity().clone();
        let me = Actor {
            bump: old.bump + self.now / 1000 + 1000,
            ..old
        };
        let gen = self.nodes[i].gen + 1;
        let book = std::mem::take(&mut self.nodes[i].book);
        let next_version = self.nodes[i].next_version;
        let mut node = self.new_node(me, gen);
        node.book = book;
        node.next_version = next_version;
        self.nodes[i] = node;
        let known: Vec<SocketAddr> = (0..self.nodes.len())
            .filter(|j| *j != i)
            .map(addr_of)
            .collect();
        for addr in known {
            let dst = Actor {
                id: ActorId::default(),
                addr,
                bump: 0,
            };
            let node = &mut self.nodes[i];
            let _ = node.foca.announce(dst, &mut node.rt);
        }
        self.drain(i);
        self.start_ticks(i);
    }

    /// A write on node `i` at `at`.
    pub fn schedule_write(&mut self, i: usize, at: u64) {
        self.push(at, Ev::Write { node: i });
    }

    /// Records that node `i` holds `(actor, version)`; returns false if it already did.
    fn hold(&mut self, i: usize, actor: ActorId, version: u64) -> bool {
        if self.nodes[i].book.knows(&actor, version) {
            return false;
        }
        let gaps = self.nodes[i].book.gap_count();
        self.nodes[i].book.record_known(actor, version..=version);
        self.nodes[i].ingested += 1;
        self.held[i] += 1;
        if self.nodes[i].book.gap_count() > gaps {
            self.nodes[i].sched.behind(); // the ingest task's hint
        }
        if self.watched[i] {
            if let Some(left) = self.pending.get_mut(&(actor, version)) {
                *left -= 1;
                if *left == 0 {
                    self.pending.remove(&(actor, version));
                    self.visible.insert((actor, version), self.now);
                }
            }
        }
        true
    }

    fn write(&mut self, i: usize) {
        if !self.nodes[i].up {
            return;
        }
        let actor = self.nodes[i].actor;
        let version = self.nodes[i].next_version;
        self.nodes[i].next_version += 1;
        self.writes.insert((actor, version), self.now);
        let watched = self.watched.iter().filter(|w| **w).count();
        self.pending.insert((actor, version), watched);
        self.hold(i, actor, version);
        let t = self.instant();
        let node = &mut self.nodes[i];
        node.head.local(actor, version, t);
        let ttl = fanout::initial_ttl(node.alive.len() + 1);
        let frame = Frame {
            actor,
            version,
            ttl,
        };
        node.outbox.push(frame, self.frame_len as usize, true, t);
        self.flush(i);
    }

    /// The broadcaster's turn: due frames out, the head announced, the tick kept armed while
    /// there is work left.
    fn flush(&mut self, i: usize) {
        let t = self.instant();
        let node = &mut self.nodes[i];
        let out = node.outbox.flush(&node.alive, t, &mut self.rng);
        let head = if node.head.pending() {
            node.head.due(t, !node.alive.is_empty())
        } else {
            None
        };
        for (addr, frames) in out {
            let j = self.addrs[&addr];
            self.traffic.frames_sent += frames.len() as u64;
            self.traffic.frame_bytes +=
                frames.len() as u64 * (self.frame_len + 4 + STREAM_OVERHEAD);
            if let Some(at) = self.stream(i, j) {
                self.push(
                    at,
                    Ev::Frames {
                        from: i,
                        to: j,
                        frames,
                    },
                );
            }
        }
        if let Some((actor, version)) = head {
            let peers = self.nodes[i].alive.clone();
            self.send_heads(i, actor, version, peers);
        }
        let node = &mut self.nodes[i];
        if !node.bcast_armed && (node.outbox.frames() > 0 || node.head.pending()) {
            node.bcast_armed = true;
            let gen = node.gen;
            self.push(self.now + BCAST_TICK, Ev::BcastTick { node: i, gen });
        }
    }

    fn receive_frames(&mut self, i: usize, frames: Vec<Frame>) {
        let t = self.instant();
        for f in frames {
            self.traffic.bcast_copies += 1;
            let key = (f.actor, f.version, 0, 0);
            let node = &mut self.nodes[i];
            let book = &node.book;
            let r = fanout::receive(&mut node.seen, key, f.ttl, || {
                book.knows(&f.actor, f.version)
            });
            let Received::New { relay_ttl } = r else {
                continue;
            };
            if let Some(ttl) = relay_ttl {
                let again = Frame { ttl, ..f.clone() };
                node.outbox.push(again, self.frame_len as usize, false, t);
            }
            self.hold(i, f.actor, f.version);
        }
        self.flush(i);
        self.start_sessions(i);
    }

    /// Runs events until `until` (µs).
    pub fn run_until(&mut self, until: u64) {
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > until {
                break;
            }
            self.now = entry.key().0;
            let ev = entry.remove();
            self.step(ev);
        }
        self.now = until;
    }

    fn live(&self, i: usize, gen: u32) -> bool {
        self.nodes[i].up && self.nodes[i].gen == gen
    }

    fn step(&mut self, ev: Ev) {
        match ev {
            Ev::Swim { from, to, data } => {
                if !self.nodes[to].up || !self.nodes[from].up {
                    return;
                }
                (self.now, from, to, 1u8).hash(&mut self.trace);
                let node = &mut self.nodes[to];
                let _ = node.foca.handle_data(&data, &mut node.rt);
                self.drain(to);
            }
            Ev::Timer {
                node: i,
                gen,
                timer,
            } => {
                if self.live(i, gen) {
                    let node = &mut self.nodes[i];
                    let _ = node.foca.handle_timer(timer, &mut node.rt);
                    self.drain(i);
                }
            }
            Ev::DownTick { node: i, gen } => {
                if !self.live(i, gen) {
                    return;
                }
                let t = self.instant();
                for addr in self.nodes[i].down.due(t) {
                    let dst = Actor {
                        id: ActorId::default(),
                        addr,
                        bump: 0,
                    };
                    let node = &mut self.nodes[i];
                    let _ = node.foca.announce(dst, &mut node.rt);
                }
                self.drain(i);
                self.push(
                    self.now + DOWN_TICK.as_micros() as u64,
                    Ev::DownTick { node: i, gen },
                );
            }
            Ev::ViewTick { node: i, gen } => {
                if self.live(i, gen) {
                    self.end_stuck_suspicions(i);
                    self.refresh_view(i);
                    self.push(self.now + 1_000_000, Ev::ViewTick { node: i, gen });
                }
            }
            Ev::BcastTick { node: i, gen } => {
                if self.live(i, gen) {
                    self.nodes[i].bcast_armed = false;
                    self.flush(i);
                }
            }
            Ev::SyncRound { node: i, gen } => {
                if !self.live(i, gen) || self.nodes[i].round_at != self.now {
                    return;
                }
                let t = self.instant();
                let node = &mut self.nodes[i];
                let gaps = node.book.gap_count();
                let book = &node.book;
                let lacks = |a: &ActorId, v: u64| !book.knows(a, v);
                node.sched
                    .round(t, gaps, node.ingested, &mut self.rng, lacks);
                self.start_sessions(i);
                self.arm_sync_round(i);
            }
            Ev::Frames { from, to, frames } => {
                if self.nodes[to].up {
                    (self.now, from, to, 2u8, frames.len()).hash(&mut self.trace);
                    self.receive_frames(to, frames);
                }
            }
            Ev::Head {
                from,
                to,
                actor,
                version,
            } => {
                if !self.nodes[to].up {
                    return;
                }
                (self.now, from, to, 3u8).hash(&mut self.trace);
                let node = &mut self.nodes[to];
                if head_is_news(&node.book, node.actor, actor, version) {
                    node.sched.head(addr_of(from), actor, version);
                    self.start_sessions(to);
                }
            }
            Ev::Write { node } => self.write(node),
            Ev::Preload { node } => self.start_preloaded(node),
            ev => {
                if let Ev::Start { sid }
                | Ev::Answer { sid, .. }
                | Ev::Request { sid, .. }
                | Ev::Chunks { sid, .. } = &ev
                {
                    (self.now, *sid, 4u8).hash(&mut self.trace);
                }
                self.session_event(ev)
            }
        }
    }

    /// Whether every live node sees every other live node alive.
    pub fn all_alive(&self) -> bool {
        let live = self.nodes.iter().filter(|n| n.up).count();
        self.nodes.iter().filter(|n| n.up).all(|n| {
            n.foca
                .iter_membership_state()
                .filter(|m| m.state() == State::Alive)
                .filter(|m| {
                    self.addrs
                        .get(&m.id().addr)
                        .is_some_and(|&j| self.nodes[j].up)
                })
                .count()
                + 1
                >= live
        })
    }

    /// (observer, member address, state, incarnation, bump, member's current bump) of every
    /// live pair not seen alive.
    pub fn not_alive(&self) -> Vec<(usize, usize, State, u16, u64, u64)> {
        let mut out = Vec::new();
        for (i, n) in self.nodes.iter().enumerate().filter(|(_, n)| n.up) {
            for m in n.foca.iter_membership_state() {
                let j = self.addrs[&m.id().addr];
                if self.nodes[j].up && m.state() != State::Alive {
                    let cur = self.nodes[j].foca.identity().bump;
                    out.push((i, j, m.state(), m.incarnation(), m.id().bump, cur));
                }
            }
        }
        out
    }

    /// Whether every live node holds every write.
    pub fn converged(&self) -> bool {
        let total = self.writes.len() as u64;
        (0..self.nodes.len()).all(|i| !self.nodes[i].up || self.held[i] == total)
    }

    pub fn trace(&self) -> u64 {
        self.trace.clone().finish()
    }

    pub fn random(&mut self, range: std::ops::Range<u64>) -> u64 {
        self.rng.random_range(range)
    }
}
