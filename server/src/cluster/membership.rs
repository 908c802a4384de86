//! SWIM membership: one task owns the foca state machine and is its runtime. Inputs (received
//! packets, announce requests, timers, a 1 s tick, shutdown) are handled one at a time;
//! foca's outputs are drained after every call: packets go to a bounded send queue, timers
//! into a deadline-ordered map owned by the task, notifications update the member snapshot.
//!
//! Every turn of the loop must be fast, or this node risks being suspected by its peers.

use super::codec::{self, Msg};
use super::identity::{is_new_process, Actor, SwimCodec};
use super::members_store::{self, Persister};
use super::status::{Counters, MemberView, MembershipCmd, Status};
use super::sync::Hint;
use super::transport::Transport;
use crate::crdt::ActorId;
use crate::node::Node;
use bytes::Bytes;
use foca::{AccumulatingRuntime, Foca, Identity, OwnedNotification, State, Timer};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Semaphore};

/// Datagram sends in flight at once; beyond that, packets are dropped (SWIM tolerates loss).
const MAX_SENDS_IN_FLIGHT: usize = 256;
/// Bytes between the UDP payload size and the largest foca packet: QUIC short header and
/// AEAD tag, datagram frame header, and our envelope, with margin.
const PACKET_OVERHEAD: usize = 100;

/// The largest foca packet for a given `gossip.max_mtu`.
pub fn packet_limit(max_mtu: Option<u16>) -> usize {
    usize::from(max_mtu.unwrap_or(1200)) - PACKET_OVERHEAD
}

/// foca's configuration for a cluster of `members` (also driven by the simulation).
pub fn foca_config(members: usize, packet_limit: usize) -> foca::Config {
    let n = NonZeroU32::new(members.max(1) as u32).expect("nonzero");
    let mut c = foca::Config::new_lan(n);
    c.max_packet_size = NonZeroUsize::new(packet_limit).expect("nonzero");
    // Heal partitions: keep announcing to members we consider down (both sides of a split do
    // this, so a 2-vs-2 split re-merges), and now and then to a random live member.
    let one = NonZeroUsize::new(1).expect("nonzero");
    c.periodic_announce_to_down_members = Some(foca::PeriodicParams {
        frequency: Duration::from_secs(3),
        num_members: NonZeroUsize::new(2).expect("nonzero"),
    });
    c.periodic_announce = Some(foca::PeriodicParams {
        frequency: Duration::from_secs(10),
        num_members: one,
    });
    c
}

type Swim = Foca<Actor, SwimCodec, rand010::rngs::StdRng, foca::NoCustomBroadcast>;

/// Handle to the membership task.
#[derive(Clone)]
pub struct Membership {
    pub datagrams: mpsc::Sender<Bytes>,
}

struct Driver {
    foca: Swim,
    rt: AccumulatingRuntime<Actor>,
    timers: BTreeMap<(Instant, u64), Timer<Actor>>,
    timer_seq: u64,
    out: mpsc::Sender<(SocketAddr, Bytes)>,
    status: Arc<Status>,
    transport: Arc<Transport>,
    cluster_id: u16,
    packet_limit: usize,
    member_count: usize,
    /// Something changed since the members were last persisted.
    dirty: bool,
    /// Tells the sync loop which member came up, to sync with it at once.
    hints: mpsc::Sender<Hint>,
    /// The last identity that came up at each address.
    incarnations: HashMap<SocketAddr, Actor>,
    /// Members suspected in this node's view, and since when.
    suspected: StuckSuspicions,
    /// foca's current timer token (seen on the timers it schedules).
    timer_token: Option<u8>,
    /// Members declared down, announced to on a short period that backs off.
    down: DownAnnouncer,
}

/// The shortest time a member stays suspect before the driver declares it down itself
/// ([`StuckSuspicions`]).
pub const STUCK_SUSPICION: Duration = Duration::from_secs(4);

/// Starts the membership task. `seeds` are announced to at start and whenever this node
/// knows no member. (The agent's composition root hands over each part separately.)
#[allow(clippy::too_many_arguments)]
pub fn start(
    node: Arc<Node>,
    me: Actor,
    transport: Arc<Transport>,
    status: Arc<Status>,
    datagrams: mpsc::Receiver<Bytes>,
    seeds: Vec<SocketAddr>,
    hints: mpsc::Sender<Hint>,
    stop: watch::Receiver<bool>,
) {
    let g = &node.config.gossip;
    let limit = packet_limit(g.max_mtu);
    let (out_tx, out_rx) = mpsc::channel(1024);
    tokio::spawn(send_loop(transport.clone(), out_rx, status.clone()));
    let (control_tx, control) = mpsc::channel(8);
    let _ = status.membership.set(control_tx);
    let foca = Foca::new(
        me.clone(),
        foca_config(1, limit),
        rand010::make_rng::<rand010::rngs::StdRng>(),
        SwimCodec,
    );
    let driver = Driver {
        foca,
        rt: AccumulatingRuntime::new(),
        timers: BTreeMap::new(),
        timer_seq: 0,
        out: out_tx,
        status,
        transport,
        cluster_id: g.cluster_id,
        packet_limit: limit,
        member_count: 0,
        incarnations: HashMap::new(),
        suspected: StuckSuspicions::default(),
        timer_token: None,
        down: DownAnnouncer::default(),
        dirty: false,
        hints,
    };
    tokio::spawn(driver.run(node, me, datagrams, control, seeds, stop));
}

async fn send_loop(
    t: Arc<Transport>,
    mut rx: mpsc::Receiver<(SocketAddr, Bytes)>,
    status: Arc<Status>,
) {
    let permits = Arc::new(Semaphore::new(MAX_SENDS_IN_FLIGHT));
    while let Some((addr, data)) = rx.recv().await {
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            Counters::bump(&status.counters.inbound_dropped);
            continue;
        };
        let t = t.clone();
        tokio::spawn(async move {
            if let Err(e) = t.send_datagram(addr, data).await {
                tracing::trace!(%addr, error = %format!("{e:#}"), "swim send failed");
            }
            drop(permit);
        });
    }
}

impl Driver {
    async fn run(
        mut self,
        node: Arc<Node>,
        me: Actor,
        mut datagrams: mpsc::Receiver<Bytes>,
        mut control: mpsc::Receiver<MembershipCmd>,
        mut seeds: Vec<SocketAddr>,
        mut stop: watch::Receiver<bool>,
    ) {
        seeds.extend(members_store::load(&node).await);
        // Writing the member list waits for the store's writer; this loop never does.
        let persister = Persister::start(node.clone());
        seeds.retain(|a| *a != me.addr);
        seeds.sort();
        seeds.dedup();
        self.announce(&seeds);
        let mut last_announce = Instant::now();
        let mut announce_every = Duration::from_secs(2);
        let mut last_persist = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut down_tick = tokio::time::interval(DOWN_TICK);
        loop {
            let next = self.timers.keys().next().map(|(t, _)| *t);
            let sleep = async {
                match next {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                _ = sleep => self.fire_timers(),
                d = datagrams.recv() => match d {
                    Some(d) => self.handle_datagram(&d),
                    None => break,
                },
                Some(cmd) = control.recv() => self.handle_command(cmd, &seeds),
                _ = down_tick.tick() => {
                    let due = self.down.due(Instant::now());
                    if !due.is_empty() {
                        self.announce(&due);
                    }
                }
                _ = tick.tick() => {
                    self.end_stuck_suspicions();
                    self.refresh_view();
                    if self.foca.num_members() == 0 && last_announce.elapsed() >= announce_every {
                        self.announce(&seeds);
                        last_announce = Instant::now();
                        announce_every = (announce_every * 2).min(Duration::from_secs(8));
                    } else if self.foca.num_members() > 0 {
                        announce_every = Duration::from_secs(2);
                    }
                    if self.dirty && last_persist.elapsed() >= Duration::from_secs(5) {
                        self.dirty = false;
                        last_persist = Instant::now();
                        let members = self.status.members.read().expect("members").clone();
                        persister.save(members);
                    }
                }
            }
        }
        let _ = self.foca.leave_cluster(&mut self.rt);
        self.drain();
        let members = self.status.members.read().expect("members").clone();
        persister.save(members);
    }

    fn announce(&mut self, seeds: &[SocketAddr]) {
        for addr in seeds {
            let dst = Actor {
                id: ActorId::default(),
                addr: *addr,
                bump: 0,
            };
            let _ = self.foca.announce(dst, &mut self.rt);
        }
        self.drain();
    }

    fn handle_command(&mut self, cmd: MembershipCmd, seeds: &[SocketAddr]) {
        match cmd {
            MembershipCmd::Rejoin(reply) => {
                let answer = match self.foca.identity().renew() {
                    Some(renewed) => match self.foca.change_identity(renewed, &mut self.rt) {
                        Ok(()) => {
                            let me = self.foca.identity().clone();
                            tracing::info!(bump = me.bump, "rejoining with a renewed identity");
                            // Tell the seeds and every member we knew of.
                            let mut to: Vec<SocketAddr> = seeds.to_vec();
                            to.extend(self.incarnations.keys().copied());
                            to.sort();
                            to.dedup();
                            self.announce(&to);
                            json!({"rejoined": identity_json(&me), "announced_to": to.len()})
                        }
                        Err(e) => json!({"error": format!("renewing the identity failed: {e}")}),
                    },
                    None => json!({"error": "this identity cannot be renewed"}),
                };
                self.drain();
                let _ = reply.send(answer);
            }
            MembershipCmd::States(reply) => {
                let members: Vec<serde_json::Value> = self
                    .foca
                    .iter_membership_state()
                    .map(|m| {
                        let mut v = identity_json(m.id());
                        v["incarnation"] = json!(m.incarnation());
                        v["state"] = json!(state_name(m.state()));
                        v
                    })
                    .collect();
                let _ = reply.send(json!({
                    "identity": identity_json(self.foca.identity()),
                    "members": members,
                }));
            }
        }
    }

    fn handle_datagram(&mut self, d: &[u8]) {
        match codec::decode(d, self.cluster_id) {
            Ok(Msg::Swim(packet)) => {
                if let Err(e) = self.foca.handle_data(&packet, &mut self.rt) {
                    tracing::trace!(error = %e, "swim packet rejected");
                    Counters::bump(&self.status.counters.swim_rejected);
                }
            }
            Ok(Msg::Head {
                actor,
                addr,
                version,
            }) => {
                let hint = Hint::Head {
                    actor,
                    addr,
                    version,
                };
                if self.hints.try_send(hint).is_err() {
                    tracing::debug!(%addr, "sync hint queue full; the next sync round covers it");
                }
            }
            Ok(_) => Counters::bump(&self.status.counters.malformed),
            Err(super::wire::DecodeError::WrongCluster { .. }) => {
                Counters::bump(&self.status.counters.wrong_cluster)
            }
            Err(_) => Counters::bump(&self.status.counters.malformed),
        }
        self.drain();
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let timer = entry.remove();
            let _ = self.foca.handle_timer(timer, &mut self.rt);
        }
        self.drain();
    }

    /// Moves foca's pending outputs to their destinations.
    fn drain(&mut self) {
        while let Some((to, data)) = self.rt.to_send() {
            let env = codec::encode(&Msg::Swim(data.to_vec()), self.cluster_id);
            if self.out.try_send((to.addr, Bytes::from(env))).is_err() {
                Counters::bump(&self.status.counters.inbound_dropped);
            }
        }
        while let Some((after, timer)) = self.rt.to_schedule() {
            if let Timer::ProbeRandomMember(token) = &timer {
                self.timer_token = Some(*token);
            }
            self.timer_seq += 1;
            self.timers
                .insert((Instant::now() + after, self.timer_seq), timer);
        }
        let mut changed = false;
        let mut came_up = Vec::new();
        while let Some(n) = self.rt.to_notify() {
            match n {
                OwnedNotification::MemberUp(a) | OwnedNotification::Rename(_, a) => {
                    tracing::info!(actor = %a.id, addr = %a.addr, bump = a.bump, "member up");
                    // A restarted process: a connection to the old one would swallow sends
                    // and stall sync sessions until it times out, so it is closed. A renewal
                    // (after a partition) keeps it: dropping a working connection loses
                    // probes in flight and the peer gets suspected again.
                    if is_new_process(self.incarnations.get(&a.addr), &a) {
                        self.transport.close_peer(&a.addr, "peer restarted");
                    }
                    self.incarnations.insert(a.addr, a.clone());
                    self.down.up(&a.addr);
                    came_up.push(a.addr);
                    changed = true;
                }
                OwnedNotification::MemberDown(a) => {
                    tracing::info!(actor = %a.id, addr = %a.addr, "member down");
                    // Fail what rides the connection now (sends, sync sessions) rather than
                    // at the idle timeout; unless a newer incarnation is already up there.
                    if self.incarnations.get(&a.addr).is_none_or(|cur| *cur == a) {
                        self.transport.close_peer(&a.addr, "peer down");
                        self.down.down(a.addr, Instant::now());
                    }
                    changed = true;
                }
                OwnedNotification::Defunct => {
                    tracing::warn!(
                        "declared down by the cluster; rejoining with a renewed identity"
                    );
                }
                _ => {}
            }
        }
        if changed {
            self.refresh_view();
        }
        // Only now that the view lists the new member: sync with it at once, both ways (it
        // does the same with us), so a node back from a crash or a partition is brought
        // level first.
        for addr in came_up {
            if self.hints.try_send(Hint::Peer(addr)).is_err() {
                tracing::debug!(%addr, "sync hint queue full; the next sync round covers it");
            }
        }
    }

    /// Declares down the members that stayed suspect at one incarnation for too long (see
    /// [`StuckSuspicions`]).
    fn end_stuck_suspicions(&mut self) {
        let Some(token) = self.timer_token else {
            return;
        };
        let suspects: Vec<(Actor, u16)> = self
            .foca
            .iter_membership_state()
            .filter(|m| m.state() == State::Suspect)
            .map(|m| (m.id().clone(), m.incarnation()))
            .collect();
        let stuck = stuck_after(self.member_count, self.packet_limit);
        for (actor, incarnation) in self.suspected.check(suspects, Instant::now(), stuck) {
            tracing::info!(actor = %actor.id, addr = %actor.addr, "suspicion never refuted; declaring the member down");
            let timer = Timer::ChangeSuspectToDown {
                member_id: actor,
                incarnation,
                token,
            };
            let _ = self.foca.handle_timer(timer, &mut self.rt);
        }
        self.drain();
    }

    /// Publishes the member list and keeps foca's config sized to the cluster.
    fn refresh_view(&mut self) {
        let mut view: Vec<MemberView> = self
            .foca
            .iter_membership_state()
            .map(|m| MemberView {
                actor_id: m.id().id.to_string(),
                address: m.id().addr,
                state: state_name(m.state()).to_string(),
                rtt_ms: self
                    .transport
                    .rtt(&m.id().addr)
                    .map(|d| d.as_secs_f64() * 1000.0),
                last_seen: (m.state() == State::Alive).then(Instant::now),
            })
            .collect();
        // A member not alive now keeps the time it was last seen alive.
        let mut members = self.status.members.write().expect("members lock");
        for v in view.iter_mut().filter(|v| v.last_seen.is_none()) {
            v.last_seen = members
                .iter()
                .find(|m| m.actor_id == v.actor_id)
                .and_then(|m| m.last_seen);
        }
        let changed = members.len() != view.len()
            || members
                .iter()
                .zip(&view)
                .any(|(a, b)| a.actor_id != b.actor_id || a.state != b.state);
        *members = view;
        drop(members);
        if changed {
            self.dirty = true;
        }
        let n = self.foca.num_members() + 1;
        if n != self.member_count {
            self.member_count = n;
            let _ = self.foca.set_config(foca_config(n, self.packet_limit));
        }
    }
}

/// How long a member may stay suspect at one incarnation before the driver declares it down:
/// twice foca's own suspicion timeout for a cluster of `members`, at least
/// [`STUCK_SUSPICION`].
pub fn stuck_after(members: usize, packet_limit: usize) -> Duration {
    let own_timeout = foca_config(members, packet_limit).suspect_to_down_after;
    (own_timeout * 2).max(STUCK_SUSPICION)
}

/// Suspicions that nobody refutes (pure; the driver fires foca's suspect→down timer).
/// A suspicion this node learned by gossip has no timer of its own: foca only declares a
/// member down when its own probe failed. If the suspected member never hears of it (the
/// gossip was spent while a partition dropped it), it never refutes and stays suspect for
/// good. A member suspect at the same incarnation for [`stuck_after`] is declared down
/// instead; a live member then renews its identity and comes back up.
#[derive(Debug, Default)]
pub struct StuckSuspicions {
    since: HashMap<Actor, (u16, Instant)>,
}

impl StuckSuspicions {
    /// `suspects`: every member suspect now, with its incarnation. Returns those suspect at
    /// that incarnation for `stuck` or longer (and forgets them).
    pub fn check(
        &mut self,
        suspects: Vec<(Actor, u16)>,
        now: Instant,
        stuck: Duration,
    ) -> Vec<(Actor, u16)> {
        self.since
            .retain(|a, _| suspects.iter().any(|(s, _)| s == a));
        let mut out = Vec::new();
        for (actor, incarnation) in suspects {
            match self.since.get(&actor) {
                Some((inc, since)) if *inc == incarnation => {
                    if now.saturating_duration_since(*since) >= stuck {
                        self.since.remove(&actor);
                        out.push((actor, incarnation));
                    }
                }
                _ => {
                    self.since.insert(actor, (incarnation, now));
                }
            }
        }
        out
    }
}

/// How often the driver checks for down members to announce to.
pub const DOWN_TICK: Duration = Duration::from_millis(250);
/// First delay before announcing to a member just declared down; it doubles up to
/// [`DOWN_ANNOUNCE_MAX`]. A healed partition is found again within about this first delay
/// (foca's own announces to down members come every 3 s, to 2 of them), a long-dead member
/// costs one small packet per [`DOWN_ANNOUNCE_MAX`].
const DOWN_ANNOUNCE_FIRST: Duration = Duration::from_millis(500);
const DOWN_ANNOUNCE_MAX: Duration = Duration::from_secs(30);
/// Down members announced to per [`DOWN_TICK`], at most.
pub const DOWN_ANNOUNCE_PER_TICK: usize = 3;

/// Members declared down and when to announce to each next (pure; the driver sends).
#[derive(Debug, Default)]
pub struct DownAnnouncer {
    /// address → (next announce, current delay)
    next: HashMap<SocketAddr, (Instant, Duration)>,
}

impl DownAnnouncer {
    pub fn down(&mut self, addr: SocketAddr, now: Instant) {
        self.next
            .insert(addr, (now + DOWN_ANNOUNCE_FIRST, DOWN_ANNOUNCE_FIRST));
    }

    pub fn up(&mut self, addr: &SocketAddr) {
        self.next.remove(addr);
    }

    /// The members to announce to now, at most [`DOWN_ANNOUNCE_PER_TICK`] (longest overdue
    /// first: after a big partition a node may hold hundreds of down members, and reaching a
    /// few of them is enough for gossip to do the rest); each one's next announce is scheduled
    /// after a doubled delay.
    pub fn due(&mut self, now: Instant) -> Vec<SocketAddr> {
        let mut due: Vec<(Instant, SocketAddr)> = self
            .next
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(a, (at, _))| (*at, *a))
            .collect();
        due.sort();
        due.truncate(DOWN_ANNOUNCE_PER_TICK);
        let mut out = Vec::new();
        for (_, addr) in due {
            if let Some((at, delay)) = self.next.get_mut(&addr) {
                *delay = (*delay * 2).min(DOWN_ANNOUNCE_MAX);
                *at = now + *delay;
                out.push(addr);
            }
        }
        out.sort();
        out
    }
}

fn state_name(s: State) -> &'static str {
    match s {
        State::Alive => "alive",
        State::Suspect => "suspect",
        State::Down => "down",
    }
}

fn identity_json(a: &Actor) -> serde_json::Value {
    json!({"actor_id": a.id.to_string(), "address": a.addr.to_string(), "bump": a.bump})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_members_are_announced_to_soon_then_less_and_less() {
        let t0 = Instant::now();
        let a: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let mut d = DownAnnouncer::default();
        d.down(a, t0);
        assert!(d.due(t0).is_empty());
        let mut at = Vec::new();
        let mut t = t0;
        while t < t0 + Duration::from_secs(120) {
            if d.due(t) == vec![a] {
                at.push(t.duration_since(t0).as_millis());
            }
            t += DOWN_TICK;
        }
        assert_eq!(at[0], 500, "first announce within half a second: {at:?}");
        assert_eq!(&at[..4], &[500, 1500, 3500, 7500], "{at:?}");
        let gaps: Vec<u128> = at.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|g| *g <= 30_000), "{gaps:?}");
        d.up(&a);
        assert!(d.due(t + Duration::from_secs(60)).is_empty());
    }

    #[test]
    fn a_suspicion_that_lasts_at_one_incarnation_is_ended() {
        let t0 = Instant::now();
        let a = Actor {
            id: ActorId([1; 16]),
            addr: "10.0.0.1:1".parse().unwrap(),
            bump: 1,
        };
        let b = Actor {
            id: ActorId([2; 16]),
            addr: "10.0.0.2:1".parse().unwrap(),
            bump: 1,
        };
        let stuck = Duration::from_secs(4);
        let mut s = StuckSuspicions::default();
        assert!(s
            .check(vec![(a.clone(), 0), (b.clone(), 0)], t0, stuck)
            .is_empty());
        let t1 = t0 + Duration::from_secs(2);
        // b refuted with a higher incarnation and is suspected again: its clock restarts.
        assert!(s
            .check(vec![(a.clone(), 0), (b.clone(), 1)], t1, stuck)
            .is_empty());
        let t2 = t0 + stuck;
        assert_eq!(
            s.check(vec![(a.clone(), 0), (b.clone(), 1)], t2, stuck),
            vec![(a.clone(), 0)]
        );
        // A member no longer suspect is forgotten.
        assert!(s.check(vec![], t2, stuck).is_empty());
        assert!(s.check(vec![(b.clone(), 1)], t2 + stuck, stuck).is_empty());
        assert!(stuck_after(3, packet_limit(None)) >= STUCK_SUSPICION);
    }

    #[test]
    fn many_down_members_are_announced_to_a_few_per_tick() {
        let t0 = Instant::now();
        let mut d = DownAnnouncer::default();
        for i in 0..100u16 {
            d.down(SocketAddr::from(([10, 0, 0, 1], i)), t0);
        }
        let at = t0 + DOWN_ANNOUNCE_FIRST;
        assert_eq!(d.due(at).len(), DOWN_ANNOUNCE_PER_TICK);
        // The next tick takes others: every member is reached in turn.
        let mut seen = std::collections::HashSet::new();
        let mut t = at;
        for _ in 0..40 {
            seen.extend(d.due(t));
            t += DOWN_TICK;
        }
        assert_eq!(seen.len(), 100);
    }
}
