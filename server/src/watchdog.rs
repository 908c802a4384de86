//! Detects a stalled node and acts on it: an async runtime that stops running tasks (a
//! blocking call on an executor thread, a busy loop) or a writer lock held far longer than any
//! transaction should (a deadlock, a runaway statement). A stall is logged at error level,
//! counted (`verdigris_watchdog_stalls_total`), makes `/v1/health` unhealthy, and — unless
//! `watchdog.exit = false` — makes the process exit with status [`EXIT_STATUS`] once it has
//! lasted `watchdog.exit_after_secs`, so its supervisor restarts it. Peers are unaffected
//! meanwhile because every cluster send is bounded by queues and timeouts; what the node
//! missed comes back through sync after the restart.
//!
//! The verdicts are pure functions ([`assess`], [`exit_due`]) of a few durations, checked once
//! a second by a plain thread (which keeps running when the async runtime does not).
//!
//! [`inject`] is a test hook (debug builds only, through the admin socket) that stalls the
//! runtime or the writer on purpose.

use crate::config::WatchdogConfig;
use crate::node::Node;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Exit status of a node the watchdog stopped (EX_SOFTWARE).
pub const EXIT_STATUS: i32 = 70;

/// Limits beyond which the node is considered stalled, and what to do then.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub runtime: Duration,
    pub writer: Duration,
    /// Exit once a stall has lasted this long; `None`: report only.
    pub exit_after: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits::from(&WatchdogConfig::default())
    }
}

impl From<&WatchdogConfig> for Limits {
    fn from(c: &WatchdogConfig) -> Self {
        Limits {
            runtime: Duration::from_secs(c.runtime_stall_secs),
            writer: Duration::from_secs(c.writer_stall_secs),
            exit_after: c.exit.then(|| Duration::from_secs(c.exit_after_secs)),
        }
    }
}

/// A detected stall.
#[derive(Debug, Clone, PartialEq)]
pub struct Stall {
    /// `runtime` or `writer` (the metric label).
    pub kind: &'static str,
    pub message: String,
}

/// The watchdog's shared state.
#[derive(Debug)]
pub struct Watchdog {
    epoch: Instant,
    /// Milliseconds since `epoch` of the runtime's last heartbeat.
    heartbeat: AtomicU64,
    problem: Mutex<Option<String>>,
}

impl Default for Watchdog {
    fn default() -> Self {
        Watchdog {
            epoch: Instant::now(),
            heartbeat: AtomicU64::new(0),
            problem: Mutex::new(None),
        }
    }
}

/// What is wrong, if anything, given how long ago the runtime last ran and for how long the
/// writer lock has been continuously busy.
pub fn assess(runtime_silent: Duration, writer_busy: Duration, limits: Limits) -> Option<Stall> {
    if runtime_silent > limits.runtime {
        Some(Stall {
            kind: "runtime",
            message: format!(
                "async runtime stalled: no task ran for {:.1} s",
                runtime_silent.as_secs_f64()
            ),
        })
    } else if writer_busy > limits.writer {
        Some(Stall {
            kind: "writer",
            message: format!(
                "writer lock held for {:.0} s (deadlock or runaway transaction)",
                writer_busy.as_secs_f64()
            ),
        })
    } else {
        None
    }
}

/// Whether a stall that has lasted `stalled_for` should end the process.
pub fn exit_due(stalled_for: Duration, limits: Limits) -> bool {
    limits.exit_after.is_some_and(|after| stalled_for >= after)
}

impl Watchdog {
    /// The current problem, if the node is stalled.
    pub fn problem(&self) -> Option<String> {
        self.problem
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Starts the heartbeat task (on the current runtime; it ends with the runtime) and the
    /// monitor thread (it ends when the node is dropped).
    pub fn start(node: Arc<Node>, limits: Limits, period: Duration) {
        let dog = node.watchdog.clone();
        dog.heartbeat.store(dog.now_ms(), Ordering::Relaxed);
        let beat = dog.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period / 4);
            loop {
                tick.tick().await;
                beat.heartbeat.store(beat.now_ms(), Ordering::Relaxed);
            }
        });
        let weak = Arc::downgrade(&node);
        drop(node);
        std::thread::Builder::new()
            .name("vd-watchdog".into())
            .spawn(move || monitor(weak, dog, limits, period))
            .expect("spawning the watchdog thread");
    }
}

fn monitor(weak: std::sync::Weak<Node>, dog: Arc<Watchdog>, limits: Limits, period: Duration) {
    let mut busy_since: Option<Instant> = None;
    let mut stalled_since: Option<Instant> = None;
    loop {
        std::thread::sleep(period);
        let Some(node) = weak.upgrade() else { return };
        let silent = Duration::from_millis(
            dog.now_ms()
                .saturating_sub(dog.heartbeat.load(Ordering::Relaxed)),
        );
        let busy = match node.store.try_lock() {
            Err(std::sync::TryLockError::WouldBlock) => {
                *busy_since.get_or_insert_with(Instant::now)
            }
            _ => {
                busy_since = None;
                Instant::now()
            }
        };
        let verdict = assess(silent, busy.elapsed(), limits);
        match (&verdict, stalled_since) {
            (Some(s), None) => {
                tracing::error!(kind = s.kind, "watchdog: NODE STALLED: {}", s.message);
                node.metrics.watchdog_stall(s.kind);
                stalled_since = Some(Instant::now());
            }
            (None, Some(_)) => {
                tracing::warn!("watchdog: node recovered");
                stalled_since = None;
            }
            _ => {}
        }
        *dog.problem.lock().unwrap_or_else(|e| e.into_inner()) =
            verdict.as_ref().map(|s| s.message.clone());
        if let (Some(s), Some(t)) = (&verdict, stalled_since) {
            if exit_due(t.elapsed(), limits) {
                let msg = format!(
                    "watchdog: {} (detected {:.0} s ago); exiting with status {EXIT_STATUS} so the supervisor restarts the node (watchdog.exit = false only reports stalls)",
                    s.message,
                    t.elapsed().as_secs_f64()
                );
                tracing::error!("{msg}");
                eprintln!("error: {msg}");
                // `_exit`, not `exit`: a stalled thread may hold locks that exit-time cleanup
                // (stdout flush, destructors) would wait on. Committed transactions are
                // already durable in the WAL; anything unacknowledged was never promised.
                // SAFETY: `_exit` takes no pointers and never returns.
                unsafe { libc::_exit(EXIT_STATUS) };
            }
        }
    }
}

/// Test hook behind the admin command `{"Debug":{"Stall":{"what":"runtime"|"writer","secs":N}}}`:
/// blocks every runtime worker, or holds the writer lock, for `secs` seconds. Only in debug
/// builds; release builds refuse it.
pub fn inject(node: &Arc<Node>, cmd: &serde_json::Value) -> Result<serde_json::Value, String> {
    if !cfg!(debug_assertions) {
        return Err("debug admin commands exist only in debug builds (a test hook)".into());
    }
    let stall = &cmd["Stall"];
    let secs = stall["secs"]
        .as_u64()
        .ok_or("Stall needs \"secs\": a number of seconds")?;
    let hold = Duration::from_secs(secs);
    match stall["what"].as_str() {
        Some("runtime") => {
            let workers = tokio::runtime::Handle::current().metrics().num_workers();
            for _ in 0..workers {
                // Deliberately blocking: this is the stall being simulated.
                tokio::spawn(async move { std::thread::sleep(hold) });
            }
            tracing::warn!(secs, workers, "test hook: blocking every runtime worker");
        }
        Some("writer") => {
            let node = node.clone();
            std::thread::spawn(move || {
                let _held = node.store.lock().unwrap_or_else(|e| e.into_inner());
                std::thread::sleep(hold);
            });
            tracing::warn!(secs, "test hook: holding the writer lock");
        }
        _ => return Err("Stall needs \"what\": \"runtime\" or \"writer\"".into()),
    }
    Ok(serde_json::json!({"stalling": stall}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(exit_after: Option<u64>) -> Limits {
        Limits {
            runtime: Duration::from_secs(5),
            writer: Duration::from_secs(60),
            exit_after: exit_after.map(Duration::from_secs),
        }
    }

    #[test]
    fn verdicts() {
        let l = limits(None);
        assert_eq!(
            assess(Duration::from_secs(1), Duration::from_secs(10), l),
            None
        );
        let s = assess(Duration::from_secs(6), Duration::ZERO, l).unwrap();
        assert_eq!(s.kind, "runtime");
        assert!(s.message.contains("runtime stalled"));
        let s = assess(Duration::ZERO, Duration::from_secs(61), l).unwrap();
        assert_eq!(s.kind, "writer");
        assert!(s.message.contains("writer lock"));
    }

    #[test]
    fn exit_only_when_enabled_and_after_the_threshold() {
        assert!(!exit_due(Duration::from_secs(3600), limits(None)));
        assert!(!exit_due(Duration::from_secs(29), limits(Some(30))));
        assert!(exit_due(Duration::from_secs(30), limits(Some(30))));
        let off = WatchdogConfig {
            exit: false,
            ..WatchdogConfig::default()
        };
        assert_eq!(Limits::from(&off).exit_after, None);
        assert_eq!(
            Limits::default().exit_after,
            Some(Duration::from_secs(30)),
            "exiting is on by default"
        );
    }

    #[test]
    fn a_held_writer_lock_is_reported_and_then_clears() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[db]\npath = {:?}\n[api]\naddr = \"127.0.0.1:0\"\n[gossip]\naddr = \"127.0.0.1:0\"\nplaintext = true\n",
            dir.path().join("w.db")
        );
        let (config, _) = crate::config::Config::from_toml_str(&text, std::iter::empty()).unwrap();
        let node = Node::open(config).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let limits = Limits {
            runtime: Duration::from_secs(5),
            writer: Duration::from_millis(300),
            exit_after: None,
        };
        rt.block_on(async { Watchdog::start(node.clone(), limits, Duration::from_millis(100)) });
        let guard = node.store.lock().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while node.watchdog.problem().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(node
            .watchdog
            .problem()
            .expect("stall detected")
            .contains("writer lock"));
        drop(guard);
        let deadline = Instant::now() + Duration::from_secs(5);
        while node.watchdog.problem().is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(node.watchdog.problem(), None);
        let text = crate::metrics::encode(&node.metrics, &crate::metrics::Sample::default());
        assert!(
            text.contains("verdigris_watchdog_stalls_total{kind=\"writer\"} 1"),
            "{text}"
        );
    }
}
