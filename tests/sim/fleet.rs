//! The fleet scenario on [`ScaleSim`]: writes at random nodes at a steady rate, 1 % loss,
//! churn (nodes crash and restart), then one region cut off and healed. `fleet_scale`
//! (ignored) prints the table of docs/cluster.md for 100, 500 and 1,000 nodes:
//!
//! ```sh
//! cargo test --release -p verdigris --test sim fleet_scale -- --ignored --nocapture
//! ```

use crate::scale::ScaleSim;
use std::collections::BTreeMap;
use verdigris::cluster::chunker::{chunk_version, CHUNK_BYTES};
use verdigris::cluster::codec::{self, Msg};
use verdigris::crdt::ActorId;
use verdigris::store::{Statement, Store};

const S: u64 = 1_000_000;

/// The scenario's timeline and load.
#[derive(Clone, Debug)]
pub struct Plan {
    pub nodes: usize,
    pub writes_per_sec: u64,
    /// Writes run from `warmup` for `steady` seconds; churn happens in that window.
    pub warmup: u64,
    pub steady: u64,
    /// Nodes that crash (one after the other) and restart `churn_down` seconds later.
    pub churn: usize,
    pub churn_down: u64,
    /// Region 0 is cut off this long (writes go on on both sides), then healed.
    pub cut: u64,
    /// How long to wait after the heal for membership and data to settle.
    pub settle: u64,
}

impl Plan {
    pub fn fleet(nodes: usize) -> Plan {
        Plan {
            nodes,
            writes_per_sec: 20,
            warmup: 5,
            steady: 40,
            churn: (nodes / 100).max(2),
            churn_down: 20,
            cut: 20,
            settle: 60,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Figures {
    pub nodes: usize,
    /// Writes in the steady window (the visibility sample).
    pub writes: usize,
    /// Seconds from a write until every node that stayed up holds it: p50, p99, max.
    pub visible: (f64, f64, f64),
    /// Steady writes some node still lacked when the region was cut off.
    pub not_visible: usize,
    /// Per node per change, in the steady window: messages and bytes sent by broadcast, head
    /// announcements and sync; copies received by broadcast and by sync.
    pub msgs_per_change: f64,
    pub bytes_per_change: f64,
    pub bcast_copies: f64,
    pub sync_copies: f64,
    /// SWIM packets per node per second in the steady window.
    pub swim_per_sec: f64,
    /// Sync sessions per node per second, and the share that failed (busy, unreachable).
    pub sessions_per_sec: f64,
    pub sessions_failed: f64,
    /// Seconds from a crash until a live node declares it down: p50, max; and how many
    /// (observer, crashed node) pairs detected it before the restart, of how many.
    pub detect: (f64, f64),
    pub detected: (usize, usize),
    /// `down` declarations of a node that was up, before the cut.
    pub false_downs: usize,
    /// Seconds from the heal until every node holds every write, and until every node sees
    /// every other alive (NaN: not within `settle`).
    pub heal_converged: f64,
    pub heal_alive: f64,
    pub trace: u64,
}

/// Encoded sizes of a one-row version (3 columns, a 40-character text) as a broadcast frame
/// and as a sync chunk, read from a real store.
pub fn one_row_sizes() -> (u64, u64) {
    let clock = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let actor = ActorId([7; 16]);
    let mut store = Store::open_in_memory_as(actor, crate::time_source(&clock)).expect("store");
    store.apply_schema(crate::SCHEMA).expect("schema");
    let insert = Statement::with_params(
        "INSERT INTO kv (k, v, w) VALUES (?1, ?2, ?3)",
        vec![
            rusqlite::types::Value::Integer(123_456_789),
            rusqlite::types::Value::Text("x".repeat(40)),
            rusqlite::types::Value::Integer(42),
        ],
    );
    let out = store.transact(&[insert], None).expect("write");
    let v = out.version.expect("a version");
    let vc = store.changes(actor, v..=v).expect("feed").remove(0);
    let chunk = chunk_version(vc, CHUNK_BYTES).remove(0);
    let frame = codec::encode(
        &Msg::Change {
            chunk: chunk.clone(),
            ttl: 4,
        },
        0,
    )
    .len();
    let sync = codec::encode(&Msg::SyncChunk(chunk), 0).len();
    (frame as u64, sync as u64)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

pub fn run(seed: u64, plan: &Plan) -> Figures {
    let (frame_len, chunk_len) = one_row_sizes();
    let n = plan.nodes;
    let mut sim = ScaleSim::new(seed, n, frame_len, chunk_len);
    // Churned nodes: spread over the regions.
    let churned: Vec<usize> = (0..plan.churn).map(|k| (k * 7 + 3) % n).collect();
    for c in &churned {
        sim.watched[*c] = false;
    }
    sim.preload();
    let start = plan.warmup * S;
    let end = start + plan.steady * S;
    let every = S / plan.writes_per_sec;
    let mut t = start;
    while t < end + (5 + plan.cut) * S {
        let node = sim.random(0..n as u64) as usize;
        sim.schedule_write(node, t);
        t += every;
    }
    // Crashes one after the other in the first half of the window.
    let churn_every = plan.steady * S / 2 / plan.churn as u64;
    let mut kills = BTreeMap::new();
    sim.run_until(start);
    let base = sim.traffic.clone();
    for (k, c) in churned.iter().enumerate() {
        let at = start + S + k as u64 * churn_every;
        sim.run_until(at);
        sim.kill(*c);
        kills.insert(*c, at);
    }
    let mut restarts: Vec<(u64, usize)> = kills
        .iter()
        .map(|(c, at)| (at + plan.churn_down * S, *c))
        .collect();
    restarts.sort();
    for (at, c) in restarts {
        sim.run_until(at);
        sim.restart(c);
    }
    // Steady writes have a few seconds to land, then the cut.
    sim.run_until(end + 5 * S);
    let steady = sim.traffic.clone();
    let cut_at = sim.now;
    sim.cut = Some(0);
    sim.run_until(cut_at + plan.cut * S);
    sim.cut = None;
    let healed = sim.now;
    let (mut heal_converged, mut heal_alive) = (f64::NAN, f64::NAN);
    let mut t = healed;
    while t < healed + plan.settle * S && (heal_converged.is_nan() || heal_alive.is_nan()) {
        t += S / 10;
        sim.run_until(t);
        let secs = (t - healed) as f64 / S as f64;
        if heal_converged.is_nan() && sim.converged() {
            heal_converged = secs;
        }
        if heal_alive.is_nan() && sim.all_alive() {
            heal_alive = secs;
        }
        if std::env::var("VERDIGRIS_FLEET_DEBUG").is_ok() && (t - healed).is_multiple_of(S) {
            // Progress of the heal: nodes lacking writes, and pairs not seen alive.
            let total = sim.writes.len() as u64;
            let lacking = (0..n)
                .filter(|i| sim.nodes[*i].up && sim.held[*i] < total)
                .count();
            let na = sim.not_alive();
            eprintln!(
                "{secs:.0} s after the heal: {lacking} nodes lack writes, {} pairs not alive {:?}",
                na.len(),
                &na[..na.len().min(4)]
            );
        }
    }

    let steady_writes: Vec<((ActorId, u64), u64)> = sim
        .writes
        .iter()
        .filter(|(_, at)| **at >= start && **at < end)
        .map(|(k, at)| (*k, *at))
        .collect();
    let mut vis: Vec<f64> = Vec::new();
    let mut not_visible = 0;
    for (k, at) in &steady_writes {
        match sim.visible.get(k) {
            Some(v) if *v <= cut_at => vis.push((v - at) as f64 / S as f64),
            _ => not_visible += 1,
        }
    }
    vis.sort_by(|a, b| a.total_cmp(b));
    let w = steady_writes.len() as f64;
    let d = |f: fn(&crate::scale::Traffic) -> u64| (f(&steady) - f(&base)) as f64;
    let msgs = d(|t| t.frames_sent) + d(|t| t.heads_sent) + d(|t| t.sync_msgs);
    let bytes = d(|t| t.frame_bytes) + d(|t| t.head_bytes) + d(|t| t.sync_bytes);
    let window = (cut_at - start) as f64 / S as f64;
    let mut detect = Vec::new();
    let mut detected = 0;
    let mut expected = 0;
    for (c, at) in &kills {
        let back = at + plan.churn_down * S;
        let mut first: BTreeMap<usize, u64> = BTreeMap::new();
        for (when, by, who, _) in &sim.downs {
            if who == c && *when >= *at && *when < back {
                first.entry(*by).or_insert(when - at);
            }
        }
        // Observers: nodes that were up from this crash to its restart.
        let observers = (0..n).filter(|o| o != c && sim.watched[*o]).count();
        expected += observers;
        for (by, dt) in first {
            if sim.watched[by] {
                detected += 1;
                detect.push(dt as f64 / S as f64);
            }
        }
    }
    detect.sort_by(|a, b| a.total_cmp(b));
    let false_downs = sim
        .downs
        .iter()
        .filter(|(when, _, _, was_up)| *was_up && *when < cut_at)
        .count();
    Figures {
        nodes: n,
        writes: steady_writes.len(),
        visible: (
            pct(&vis, 0.5),
            pct(&vis, 0.99),
            vis.last().copied().unwrap_or(f64::NAN),
        ),
        not_visible,
        msgs_per_change: msgs / w / n as f64,
        bytes_per_change: bytes / w / n as f64,
        bcast_copies: d(|t| t.bcast_copies) / w / (n - 1) as f64,
        sync_copies: d(|t| t.sync_copies) / w / (n - 1) as f64,
        swim_per_sec: d(|t| t.swim_packets) / n as f64 / window,
        sessions_per_sec: d(|t| t.sessions) / n as f64 / window,
        sessions_failed: d(|t| t.sessions_failed) / d(|t| t.sessions).max(1.0),
        detect: (
            pct(&detect, 0.5),
            detect.last().copied().unwrap_or(f64::NAN),
        ),
        detected: (detected, expected),
        false_downs,
        heal_converged,
        heal_alive,
        trace: sim.trace(),
    }
}

/// A small fleet in the normal test suite: every steady write reaches every node that stayed
/// up, crashed nodes are detected by everyone, nobody is falsely declared down under 1 %
/// loss, the healed region converges, and the same seed replays the same trace.
#[test]
fn a_small_fleet_spreads_every_write_and_replays_from_its_seed() {
    let plan = Plan {
        nodes: 40,
        writes_per_sec: 10,
        warmup: 3,
        steady: 16,
        churn: 2,
        churn_down: 15,
        cut: 10,
        settle: 60,
    };
    let f = run(11, &plan);
    eprintln!("{f:?}");
    assert!(f.writes >= 150, "{f:?}");
    assert_eq!(f.not_visible, 0, "writes not visible everywhere: {f:?}");
    assert!(f.visible.2 < 5.0, "{f:?}");
    assert_eq!(f.false_downs, 0, "{f:?}");
    assert_eq!(
        f.detected.0, f.detected.1,
        "every crash detected by every node: {f:?}"
    );
    assert!(
        f.heal_converged.is_finite(),
        "the healed region never converged: {f:?}"
    );
    assert!(
        f.heal_alive.is_finite(),
        "membership never settled after the heal: {f:?}"
    );
    assert!(f.bcast_copies > 1.0 && f.msgs_per_change > 1.0, "{f:?}");
    let again = run(11, &plan);
    assert_eq!(
        (again.trace, again.visible),
        (f.trace, f.visible),
        "seed 11 replayed differently"
    );
    assert_ne!(run(12, &plan).trace, f.trace, "different seeds, same trace");
}

#[test]
#[ignore]
fn fleet_scale() {
    let sizes: Vec<usize> = match std::env::var("VERDIGRIS_FLEET_SIZES") {
        Ok(s) => s
            .split(',')
            .map(|x| x.trim().parse().expect("a size"))
            .collect(),
        Err(_) => vec![100, 500, 1000],
    };
    let mut rows = Vec::new();
    for n in sizes {
        let wall = std::time::Instant::now();
        let f = run(1, &Plan::fleet(n));
        eprintln!(
            "{n} nodes: {:.0} s wall, {f:?}",
            wall.elapsed().as_secs_f64()
        );
        rows.push(f);
    }
    println!("| nodes | visible on every node p50 / p99 / max (s) | messages / node / change | bytes / node / change | copies received / node / change (broadcast + sync) | SWIM packets / node / s | sync sessions / node / s (failed) | detection p50 / max (s), detected | false downs | heal: data converged / all alive (s) |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for f in rows {
        println!(
            "| {} | {:.3} / {:.3} / {:.3}{} | {:.2} | {:.0} | {:.2} + {:.2} | {:.1} | {:.2} ({:.0} %) | {:.1} / {:.1}, {}/{} | {} | {:.1} / {:.1} |",
            f.nodes,
            f.visible.0,
            f.visible.1,
            f.visible.2,
            if f.not_visible > 0 { format!(" ({} of {} not)", f.not_visible, f.writes) } else { String::new() },
            f.msgs_per_change,
            f.bytes_per_change,
            f.bcast_copies,
            f.sync_copies,
            f.swim_per_sec,
            f.sessions_per_sec,
            f.sessions_failed * 100.0,
            f.detect.0,
            f.detect.1,
            f.detected.0,
            f.detected.1,
            f.false_downs,
            f.heal_converged,
            f.heal_alive,
        );
    }
}
