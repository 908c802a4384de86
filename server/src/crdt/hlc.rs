//! A hybrid logical clock producing NTP64 timestamps (high 32 bits: seconds since the UNIX
//! epoch; low 32 bits: fraction), strictly increasing per node, and advanced past timestamps
//! seen from peers so causally later events get later timestamps.

use std::time::{SystemTime, UNIX_EPOCH};

/// Where a clock reads the time (NTP64): the wall clock, or a simulation's own time.
pub type TimeSource = std::sync::Arc<dyn Fn() -> u64 + Send + Sync>;

#[derive(Default)]
pub struct Hlc {
    last: u64,
    /// `None`: the wall clock.
    source: Option<TimeSource>,
}

impl std::fmt::Debug for Hlc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hlc")
            .field("last", &self.last)
            .field("simulated", &self.source.is_some())
            .finish()
    }
}

/// The current wall clock as NTP64.
pub fn wall_ntp64() -> u64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs() << 32) | (((d.subsec_nanos() as u64) << 32) / 1_000_000_000)
}

/// Converts an NTP64 timestamp to seconds (for lag metrics).
pub fn ntp64_to_secs(ts: u64) -> f64 {
    (ts >> 32) as f64 + (ts & 0xffff_ffff) as f64 / 4_294_967_296.0
}

impl Hlc {
    /// A timestamp greater than every one returned or observed before.
    pub fn now(&mut self) -> u64 {
        let wall = self.source.as_ref().map_or_else(wall_ntp64, |f| f());
        self.last = wall.max(self.last + 1);
        self.last
    }

    /// A clock reading its time from `source` (deterministic simulations).
    pub fn with_source(source: TimeSource) -> Hlc {
        Hlc {
            last: 0,
            source: Some(source),
        }
    }

    /// Takes a peer's timestamp into account (it may be ahead of our wall clock).
    pub fn observe(&mut self, remote: u64) {
        self.last = self.last.max(remote);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strictly_increasing_and_observes_future() {
        let mut h = Hlc::default();
        let a = h.now();
        let b = h.now();
        assert!(b > a);
        h.observe(b + (10 << 32));
        assert!(h.now() > b + (10 << 32));
        assert!((ntp64_to_secs(wall_ntp64()) - 1.7e9).abs() < 1e9);
    }
}
