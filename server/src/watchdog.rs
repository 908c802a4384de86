//! Detects a stalled node: an async runtime that stops running tasks (a blocking call on an
//! executor thread, a busy loop) or a writer lock held far longer than any transaction should
//! (a deadlock, a runaway statement). A stall is logged and makes `/v1/health` unhealthy, so an
//! orchestrator can restart the node; peers are unaffected because every cluster send is
//! bounded by queues and timeouts.
//!
//! The verdict is a pure function ([`assess`]) of two ages, checked once a second by a plain
//! thread (which keeps running when the async runtime does not).

use crate::node::Node;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Limits beyond which the node is considered stalled.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub runtime: Duration,
    pub writer: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            runtime: Duration::from_secs(5),
            writer: Duration::from_secs(120),
        }
    }
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
pub fn assess(runtime_silent: Duration, writer_busy: Duration, limits: Limits) -> Option<String> {
    if runtime_silent > limits.runtime {
        Some(format!(
            "async runtime stalled: no task ran for {:.1} s",
            runtime_silent.as_secs_f64()
        ))
    } else if writer_busy > limits.writer {
        Some(format!(
            "writer lock held for {:.0} s (deadlock or runaway transaction)",
            writer_busy.as_secs_f64()
        ))
    } else {
        None
    }
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

    /// Starts the heartbeat task (on the current runtime) and the monitor thread.
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
            .spawn(move || {
                let mut busy_since: Option<Instant> = None;
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
                    let mut p = dog.problem.lock().unwrap_or_else(|e| e.into_inner());
                    match (&verdict, p.as_ref()) {
                        (Some(v), None) => tracing::error!("watchdog: {v}"),
                        (None, Some(_)) => tracing::warn!("watchdog: node recovered"),
                        _ => {}
                    }
                    *p = verdict;
                }
            })
            .expect("spawning the watchdog thread");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        let l = Limits {
            runtime: Duration::from_secs(5),
            writer: Duration::from_secs(60),
        };
        assert_eq!(
            assess(Duration::from_secs(1), Duration::from_secs(10), l),
            None
        );
        assert!(assess(Duration::from_secs(6), Duration::ZERO, l)
            .unwrap()
            .contains("runtime stalled"));
        assert!(assess(Duration::ZERO, Duration::from_secs(61), l)
            .unwrap()
            .contains("writer lock"));
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
    }
}
