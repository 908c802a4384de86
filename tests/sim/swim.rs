//! SWIM membership at scale, on simulated time: the real foca state machine with the agent's
//! configuration (`membership::foca_config`) and identity codec, driven as the membership task
//! drives it (packets in, timers fired, config resized with the member count), over a seeded
//! network: 5 regions (one-way 0.5–2.5 ms inside a region, 15–100 ms between regions), 1 %
//! loss. Everything (ids, latencies, loss, foca's randomness) comes from the seed.
//!
//! Measured: time for the cluster to form (through one seed; the scale table starts from
//! preloaded member lists instead, as a fleet restarting with its persisted lists), SWIM packets and bytes per node per second, false
//! `down` declarations under loss, and the time until every live node has declared a killed
//! node down. `swim_scale` (ignored) prints the table for 100, 500 and 1,000 nodes:
//! `cargo test --release -p verdigris --test sim swim_scale -- --ignored --nocapture`.
//!
//! The driver's announces to recently-down members (`DownAnnouncer`) run here too, not its
//! ending of stuck suspicions; the fleet simulation (`scale.rs`, `fleet.rs`) runs both, with
//! broadcast and sync.

use foca::{AccumulatingRuntime, Foca, OwnedNotification, Timer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use verdigris::cluster::identity::{Actor, SwimCodec};
use verdigris::cluster::membership::{foca_config, packet_limit, DownAnnouncer, DOWN_TICK};
use verdigris::crdt::ActorId;

type Swim = Foca<Actor, SwimCodec, rand010::rngs::StdRng, foca::NoCustomBroadcast>;

const REGIONS: usize = 5;
const LOSS: f64 = 0.01;

enum Ev {
    Packet {
        from: usize,
        to: usize,
        data: Vec<u8>,
    },
    Timer {
        node: usize,
        timer: Timer<Actor>,
    },
    /// The driver's tick for announcing to down members.
    DownTick {
        node: usize,
    },
}

struct Node {
    foca: Swim,
    rt: AccumulatingRuntime<Actor>,
    members: usize,
    up: bool,
    down: DownAnnouncer,
}

pub struct SwimSim {
    rng: StdRng,
    /// Microseconds.
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Ev>,
    nodes: Vec<Node>,
    addrs: BTreeMap<SocketAddr, usize>,
    /// One-way latency between regions, microseconds (low end; up to 2× with jitter).
    latency: [[u64; REGIONS]; REGIONS],
    limit: usize,
    /// A region cut off from the others (both ways).
    pub cut: Option<usize>,
    pub packets: u64,
    pub bytes: u64,
    /// `Instant`s for the driver's pure parts: `epoch` + simulated time.
    epoch: std::time::Instant,
    /// (time, observer, member) of every `down` notification.
    pub downs: Vec<(u64, usize, usize)>,
}

fn addr_of(i: usize) -> SocketAddr {
    SocketAddr::from(([10, (i / 250) as u8, (i % 250) as u8 + 1, 1], 8787))
}

impl SwimSim {
    #[allow(clippy::needless_range_loop)] // fills a symmetric matrix: [a][b] and [b][a]
    pub fn new(seed: u64, n: usize) -> SwimSim {
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
        let mut nodes = Vec::new();
        let mut addrs = BTreeMap::new();
        for i in 0..n {
            let me = Actor {
                id: ActorId(rng.random()),
                addr: addr_of(i),
                bump: 1,
            };
            addrs.insert(me.addr, i);
            let foca_rng =
                <rand010::rngs::StdRng as rand010::SeedableRng>::seed_from_u64(rng.random());
            nodes.push(Node {
                foca: Foca::new(me, foca_config(1, limit), foca_rng, SwimCodec),
                rt: AccumulatingRuntime::new(),
                members: 1,
                up: true,
                down: DownAnnouncer::default(),
            });
        }
        SwimSim {
            rng,
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            nodes,
            addrs,
            latency,
            limit,
            cut: None,
            packets: 0,
            bytes: 0,
            epoch: std::time::Instant::now(),
            downs: Vec::new(),
        }
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.insert((at, self.seq), ev);
    }

    /// Moves node `i`'s foca outputs into the event queue (as the driver's `drain`).
    fn drain(&mut self, i: usize) {
        while let Some((to, data)) = self.nodes[i].rt.to_send() {
            let Some(&j) = self.addrs.get(&to.addr) else {
                continue;
            };
            self.packets += 1;
            self.bytes += data.len() as u64 + 100; // + QUIC/envelope overhead
            let across = |r: usize| (i % REGIONS == r) != (j % REGIONS == r);
            if self.rng.random_bool(LOSS) || self.cut.is_some_and(across) {
                continue;
            }
            let base = self.latency[i % REGIONS][j % REGIONS];
            let at = self.now + base + self.rng.random_range(0..=base);
            self.push(
                at,
                Ev::Packet {
                    from: i,
                    to: j,
                    data: data.to_vec(),
                },
            );
        }
        while let Some((after, timer)) = self.nodes[i].rt.to_schedule() {
            let at = self.now + after.as_micros() as u64;
            self.push(at, Ev::Timer { node: i, timer });
        }
        let at = self.instant();
        while let Some(n) = self.nodes[i].rt.to_notify() {
            match n {
                OwnedNotification::MemberDown(a) => {
                    if let Some(&j) = self.addrs.get(&a.addr) {
                        self.downs.push((self.now, i, j));
                    }
                    self.nodes[i].down.down(a.addr, at);
                }
                OwnedNotification::MemberUp(a) | OwnedNotification::Rename(_, a) => {
                    self.nodes[i].down.up(&a.addr);
                }
                _ => {}
            }
        }
        let n = self.nodes[i].foca.num_members() + 1;
        if n != self.nodes[i].members {
            self.nodes[i].members = n;
            let _ = self.nodes[i].foca.set_config(foca_config(n, self.limit));
        }
    }

    fn instant(&self) -> std::time::Instant {
        self.epoch + std::time::Duration::from_micros(self.now)
    }

    /// Starts every node's down-member tick (as the membership driver's).
    fn start_ticks(&mut self) {
        let tick = DOWN_TICK.as_micros() as u64;
        for i in 0..self.nodes.len() {
            let at = self.now + self.rng.random_range(0..tick);
            self.push(at, Ev::DownTick { node: i });
        }
    }

    /// Every node announces itself to node 0 (a bootstrap list of one), 1 ms apart.
    pub fn bootstrap(&mut self) {
        let seed = Actor {
            id: ActorId::default(),
            addr: addr_of(0),
            bump: 0,
        };
        for i in 1..self.nodes.len() {
            self.now = i as u64 * 1_000;
            let node = &mut self.nodes[i];
            let _ = node.foca.announce(seed.clone(), &mut node.rt);
            self.drain(i);
        }
        self.start_ticks();
    }

    /// Every node starts knowing every other one alive (as a fleet restarting with its
    /// persisted member lists); foca's probes and gossip go on from there.
    pub fn preload(&mut self) {
        let all: Vec<Actor> = self
            .nodes
            .iter()
            .map(|n| n.foca.identity().clone())
            .collect();
        for i in 0..self.nodes.len() {
            self.now = (i as u64 * 1_000) % 1_000_000;
            let others = all
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, a)| foca::Member::alive(a.clone()));
            let node = &mut self.nodes[i];
            let _ = node.foca.apply_many(others, false, &mut node.rt);
            self.drain(i);
        }
        self.start_ticks();
    }

    /// Runs events until `until` (µs).
    pub fn run_until(&mut self, until: u64) {
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > until {
                break;
            }
            self.now = entry.key().0;
            match entry.remove() {
                Ev::Packet { from, to, data } => {
                    if !self.nodes[to].up || !self.nodes[from].up {
                        continue;
                    }
                    let node = &mut self.nodes[to];
                    let _ = node.foca.handle_data(&data, &mut node.rt);
                    self.drain(to);
                }
                Ev::DownTick { node: i } => {
                    if !self.nodes[i].up {
                        continue;
                    }
                    let at = self.instant();
                    for addr in self.nodes[i].down.due(at) {
                        let dst = Actor {
                            id: ActorId::default(),
                            addr,
                            bump: 0,
                        };
                        let node = &mut self.nodes[i];
                        let _ = node.foca.announce(dst, &mut node.rt);
                    }
                    self.drain(i);
                    let next = self.now + DOWN_TICK.as_micros() as u64;
                    self.push(next, Ev::DownTick { node: i });
                }
                Ev::Timer { node: i, timer } => {
                    if !self.nodes[i].up {
                        continue;
                    }
                    let node = &mut self.nodes[i];
                    let _ = node.foca.handle_timer(timer, &mut node.rt);
                    self.drain(i);
                }
            }
        }
        self.now = until;
    }

    /// Whether every live node knows every other live node.
    pub fn formed(&self) -> bool {
        let live = self.nodes.iter().filter(|n| n.up).count();
        self.nodes
            .iter()
            .filter(|n| n.up)
            .all(|n| n.foca.num_members() + 1 >= live)
    }

    /// Whether every live node sees every other live node alive.
    pub fn all_alive(&self) -> bool {
        let live = self.nodes.iter().filter(|n| n.up).count();
        self.nodes.iter().filter(|n| n.up).all(|n| {
            let alive: std::collections::BTreeSet<SocketAddr> = n
                .foca
                .iter_membership_state()
                .filter(|m| m.state() == foca::State::Alive)
                .map(|m| m.id().addr)
                .filter(|a| self.addrs.get(a).is_some_and(|&j| self.nodes[j].up))
                .collect();
            alive.len() + 1 >= live
        })
    }

    pub fn kill(&mut self, i: usize) {
        self.nodes[i].up = false;
    }

    pub fn now(&self) -> u64 {
        self.now
    }
}

pub struct Figures {
    pub nodes: usize,
    pub formed_secs: f64,
    pub packets_per_node_sec: f64,
    pub bytes_per_node_sec: f64,
    pub false_downs: usize,
    /// Time from the kill until the first / median / last live node declared it down.
    pub detect_secs: (f64, f64, f64),
    pub detected_by: usize,
    /// After region 0 was cut off for 20 s: seconds from the heal until every live node sees
    /// every other alive (NaN: not within 120 s).
    pub heal_secs: f64,
}

/// Forms a cluster of `n` (through one seed, or `preloaded` with every member), runs 30 s
/// steady, kills one node and waits up to 60 s.
pub fn scenario(seed: u64, n: usize, preloaded: bool) -> Figures {
    let mut sim = SwimSim::new(seed, n);
    if preloaded {
        sim.preload();
    } else {
        sim.bootstrap();
    }
    let mut t = 0u64;
    while !sim.formed() {
        t += 100_000;
        sim.run_until(t);
        assert!(
            t < 300_000_000,
            "seed {seed}: {n} nodes did not form in 300 s"
        );
    }
    let formed = t;
    let (p0, b0) = (sim.packets, sim.bytes);
    let steady = 30_000_000;
    sim.run_until(formed + steady);
    let secs = steady as f64 / 1e6;
    let packets_per_node_sec = (sim.packets - p0) as f64 / n as f64 / secs;
    let bytes_per_node_sec = (sim.bytes - b0) as f64 / n as f64 / secs;
    let victim = n / 2;
    let killed_at = sim.now();
    sim.kill(victim);
    sim.run_until(killed_at + 60_000_000);
    let mut first: BTreeMap<usize, u64> = BTreeMap::new();
    for (at, by, who) in &sim.downs {
        if *who == victim && *at >= killed_at {
            first.entry(*by).or_insert(*at - killed_at);
        }
    }
    // Region 0 cut off for 20 s, then healed.
    sim.cut = Some(0);
    let cut_at = sim.now();
    sim.run_until(cut_at + 20_000_000);
    sim.cut = None;
    let healed = sim.now();
    let mut heal_secs = f64::NAN;
    let mut t = healed;
    while t < healed + 120_000_000 {
        t += 100_000;
        sim.run_until(t);
        if sim.all_alive() {
            heal_secs = (t - healed) as f64 / 1e6;
            break;
        }
    }
    let mut times: Vec<u64> = first.values().copied().collect();
    times.sort();
    let s = |us: u64| us as f64 / 1e6;
    Figures {
        nodes: n,
        formed_secs: s(formed),
        packets_per_node_sec,
        bytes_per_node_sec,
        false_downs: sim
            .downs
            .iter()
            .filter(|d| d.2 != victim && d.0 < cut_at)
            .count(),
        heal_secs,
        detect_secs: (
            times.first().map_or(f64::NAN, |t| s(*t)),
            times.get(times.len() / 2).map_or(f64::NAN, |t| s(*t)),
            times.last().map_or(f64::NAN, |t| s(*t)),
        ),
        detected_by: times.len(),
    }
}

/// A small cluster: it forms, nobody is falsely declared down under 1 % loss, every live node
/// declares the killed one down, and the same seed gives the same figures.
#[test]
fn swim_detects_a_dead_node_and_no_live_one_under_loss() {
    let f = scenario(3, 30, false);
    assert_eq!(f.false_downs, 0, "live nodes declared down under 1 % loss");
    assert_eq!(
        f.detected_by, 29,
        "every live node declared the dead one down"
    );
    assert!(f.detect_secs.2 < 30.0, "detection took {:?}", f.detect_secs);
    let again = scenario(3, 30, false);
    assert_eq!(
        (
            again.formed_secs,
            again.packets_per_node_sec,
            again.detect_secs
        ),
        (f.formed_secs, f.packets_per_node_sec, f.detect_secs),
        "seed 3 replayed differently"
    );
}

#[test]
#[ignore]
fn swim_scale() {
    println!(
        "| nodes | SWIM packets / node / s | bytes / node / s | false downs (1 % loss) | detection first / p50 / last (s) | detected by | region cut 20 s: all alive after heal (s) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for n in [100, 500, 1000] {
        let f = scenario(1, n, true);
        println!(
            "| {} | {:.1} | {:.0} | {} | {:.2} / {:.2} / {:.2} | {}/{} | {:.1} |",
            f.nodes,
            f.packets_per_node_sec,
            f.bytes_per_node_sec,
            f.false_downs,
            f.detect_secs.0,
            f.detect_secs.1,
            f.detect_secs.2,
            f.detected_by,
            f.nodes - 1,
            f.heal_secs
        );
    }
}
