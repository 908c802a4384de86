//! The simulated workload of `verdigris dev`: one worker per node publishes the machines it
//! runs, through its own node's API (the node owns that worker's rows, as a real host would).
//! Machines are created, started, stopped, fail and pass health checks, and are destroyed,
//! at a gentle pace (a few writes per second over the cluster).
//!
//! [`Fleet`] and [`Fleet::plan`] are pure (the next action from the worker's machines and a
//! random source); [`run`] does the writes.

use rand::Rng;
use std::time::Duration;
use tokio::sync::watch;
use verdigris_client::{Client, Statement};

pub const APPS: [&str; 4] = ["web", "api", "billing", "search"];
const REGIONS: [&str; 5] = ["ams", "iad", "syd", "nrt", "gru"];
/// A worker keeps between these many machines.
const MIN_MACHINES: usize = 3;
const MAX_MACHINES: usize = 8;
/// Pause between two writes of the whole workload.
const PACE: Duration = Duration::from_millis(400);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Created,
    Started,
    Stopped,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub id: String,
    pub app: &'static str,
    pub state: State,
    pub passing: bool,
}

/// One step of a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Create(Machine),
    Start(String),
    Stop(String),
    /// A health check changes: (machine, passing now).
    Health(String, bool),
    Destroy(String),
}

/// What one worker runs.
#[derive(Debug, Clone)]
pub struct Fleet {
    pub worker: String,
    pub region: &'static str,
    /// The worker's number (1-based), used in ids and addresses.
    pub index: usize,
    pub machines: Vec<Machine>,
    next_id: u64,
}

impl Fleet {
    pub fn new(index: usize) -> Fleet {
        Fleet {
            worker: format!("worker-{index}"),
            region: REGIONS[(index - 1) % REGIONS.len()],
            index,
            machines: Vec::new(),
            next_id: 1,
        }
    }

    fn new_machine(&mut self, rng: &mut impl Rng) -> Machine {
        let id = format!("m{}-{:04}", self.index, self.next_id);
        self.next_id += 1;
        Machine {
            id,
            app: APPS[rng.random_range(0..APPS.len())],
            state: State::Created,
            passing: false,
        }
    }

    fn pick(&self, rng: &mut impl Rng, f: impl Fn(&Machine) -> bool) -> Option<String> {
        let ids: Vec<&Machine> = self.machines.iter().filter(|m| f(m)).collect();
        (!ids.is_empty()).then(|| ids[rng.random_range(0..ids.len())].id.clone())
    }

    /// The next action: keep between [`MIN_MACHINES`] and [`MAX_MACHINES`] machines, start
    /// what was created, and otherwise stop, restart, fail, heal or destroy at random.
    pub fn plan(&mut self, rng: &mut impl Rng) -> Action {
        if self.machines.len() < MIN_MACHINES {
            return Action::Create(self.new_machine(rng));
        }
        if let Some(id) = self.pick(rng, |m| m.state == State::Created) {
            return Action::Start(id);
        }
        loop {
            let choice = rng.random_range(0..10);
            let action = match choice {
                0 if self.machines.len() < MAX_MACHINES => {
                    Some(Action::Create(self.new_machine(rng)))
                }
                1 | 2 => self
                    .pick(rng, |m| m.state == State::Started && m.passing)
                    .map(|id| Action::Health(id, false)),
                3 | 4 => self
                    .pick(rng, |m| m.state == State::Started && !m.passing)
                    .map(|id| Action::Health(id, true)),
                5 => self
                    .pick(rng, |m| m.state == State::Started)
                    .map(Action::Stop),
                6 | 7 => self
                    .pick(rng, |m| m.state == State::Stopped)
                    .map(Action::Start),
                8 if self.machines.len() > MIN_MACHINES => self
                    .pick(rng, |m| m.state == State::Stopped)
                    .map(Action::Destroy),
                _ => None,
            };
            if let Some(a) = action {
                return a;
            }
        }
    }

    /// Records an action that was written.
    pub fn apply(&mut self, a: &Action) {
        let find = |ms: &mut Vec<Machine>, id: &str| ms.iter().position(|m| m.id == id);
        match a {
            Action::Create(m) => self.machines.push(m.clone()),
            Action::Start(id) => {
                if let Some(i) = find(&mut self.machines, id) {
                    self.machines[i].state = State::Started;
                    self.machines[i].passing = true;
                }
            }
            Action::Stop(id) => {
                if let Some(i) = find(&mut self.machines, id) {
                    self.machines[i].state = State::Stopped;
                    self.machines[i].passing = false;
                }
            }
            Action::Health(id, passing) => {
                if let Some(i) = find(&mut self.machines, id) {
                    self.machines[i].passing = *passing;
                }
            }
            Action::Destroy(id) => self.machines.retain(|m| m.id != *id),
        }
    }

    /// The statement that writes `a`.
    pub fn statement(&self, a: &Action, now: i64) -> Statement {
        let set = |id: &str, state: &str, health: &str| {
            Statement::with_params(
                "UPDATE machines SET state = ?, health = ?, updated_at = ? WHERE id = ?",
                [state.into(), health.into(), now.into(), id.into()]
                    as [verdigris_client::SqliteValue; 4],
            )
        };
        match a {
            Action::Create(m) => {
                let n =
                    m.id.rsplit('-')
                        .next()
                        .unwrap_or("0")
                        .trim_start_matches('0');
                let address = format!(
                    "fdaa:0:{}::{}",
                    self.index,
                    if n.is_empty() { "0" } else { n }
                );
                Statement::with_params(
                    "INSERT INTO machines (id, app, worker, region, address, port, state, health, updated_at) \
                     VALUES (?, ?, ?, ?, ?, 8080, 'created', 'unknown', ?)",
                    [
                        m.id.as_str().into(),
                        m.app.into(),
                        self.worker.as_str().into(),
                        self.region.into(),
                        address.into(),
                        now.into(),
                    ] as [verdigris_client::SqliteValue; 6],
                )
            }
            Action::Start(id) => set(id, "started", "passing"),
            Action::Stop(id) => set(id, "stopped", "unknown"),
            Action::Health(id, true) => set(id, "started", "passing"),
            Action::Health(id, false) => set(id, "started", "critical"),
            Action::Destroy(id) => {
                Statement::with_params("DELETE FROM machines WHERE id = ?", [id.as_str()])
            }
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Registers the apps and workers, then writes one action at a time, round-robin over the
/// workers, until `stop` flips. A failed write (a node down) is logged and skipped.
pub async fn run(nodes: Vec<(Client, String)>, mut stop: watch::Receiver<bool>) {
    let mut fleets: Vec<Fleet> = (1..=nodes.len()).map(Fleet::new).collect();
    let now = unix_now();
    let mut setup = vec![];
    for app in APPS {
        setup.push(Statement::with_params(
            "INSERT INTO apps (name, created_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
            [verdigris_client::SqliteValue::from(app), now.into()],
        ));
    }
    for (f, (client, name)) in fleets.iter().zip(&nodes) {
        let mut stmts = if f.index == 1 { setup.clone() } else { vec![] };
        stmts.push(Statement::with_params(
            "INSERT INTO workers (name, region, node, started_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET region = excluded.region, node = excluded.node, started_at = excluded.started_at",
            [f.worker.as_str().into(), f.region.into(), name.as_str().into(), now.into()]
                as [verdigris_client::SqliteValue; 4],
        ));
        // A previous run's machines (kept with --data) belong to workers that are gone.
        stmts.push(Statement::with_params(
            "DELETE FROM machines WHERE worker = ?",
            [f.worker.as_str()],
        ));
        if let Err(e) = client
            .execute_with_timeout(&stmts, Duration::from_secs(10))
            .await
        {
            tracing::warn!(worker = %f.worker, error = %e, "workload: registering the worker failed");
        }
    }
    // Bring the first machines up at once, so the routing table has rows within seconds.
    for _ in 0..(2 * MIN_MACHINES) {
        for (fleet, (client, _)) in fleets.iter_mut().zip(&nodes) {
            step(fleet, client).await;
        }
    }
    let mut turn = 0usize;
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => return,
            _ = tokio::time::sleep(PACE) => {}
        }
        let i = turn % fleets.len();
        turn += 1;
        step(&mut fleets[i], &nodes[i].0).await;
    }
}

/// Plans, writes and records one action of `fleet`.
async fn step(fleet: &mut Fleet, client: &Client) {
    let action = fleet.plan(&mut rand::rng());
    let stmt = fleet.statement(&action, unix_now());
    match client
        .execute_with_timeout(&[stmt], Duration::from_secs(5))
        .await
    {
        Ok(_) => fleet.apply(&action),
        Err(e) => {
            tracing::warn!(worker = %fleet.worker, error = %e, "workload: write failed; skipped")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn a_fleet_stays_within_bounds_and_moves_through_every_state() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut f = Fleet::new(2);
        let mut seen = std::collections::HashSet::new();
        for step in 0..2000 {
            let a = f.plan(&mut rng);
            seen.insert(std::mem::discriminant(&a));
            if let Action::Destroy(id) = &a {
                let m = f
                    .machines
                    .iter()
                    .find(|m| &m.id == id)
                    .expect("known machine");
                assert_eq!(
                    m.state,
                    State::Stopped,
                    "only stopped machines are destroyed"
                );
            }
            f.apply(&a);
            assert!(f.machines.len() <= MAX_MACHINES, "step {step}");
            if step > 10 {
                assert!(f.machines.len() >= MIN_MACHINES, "step {step}");
            }
        }
        assert_eq!(seen.len(), 5, "every kind of action happens");
        assert!(f.machines.iter().all(|m| m.id.starts_with("m2-")));
    }

    #[test]
    fn the_first_actions_bring_machines_up() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut f = Fleet::new(1);
        for _ in 0..(2 * MIN_MACHINES) {
            let a = f.plan(&mut rng);
            f.apply(&a);
        }
        let up = f
            .machines
            .iter()
            .filter(|m| m.state == State::Started && m.passing)
            .count();
        assert_eq!(up, MIN_MACHINES);
    }
}
