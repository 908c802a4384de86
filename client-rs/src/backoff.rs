//! Reconnection policy: exponential backoff with jitter, optionally bounded in attempts.

use rand::Rng;
use std::time::Duration;

/// How much randomness is applied to each delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Jitter {
    /// Exactly the exponential delay (tests, or a single client).
    None,
    /// Uniform in `[0, delay]` ("full jitter"): many clients reconnecting to a restarted
    /// node spread out instead of arriving together.
    #[default]
    Full,
    /// Uniform in `[delay / 2, delay]`.
    Equal,
}

/// Exponential backoff: the cap of attempt `n` (0-based) is
/// `min(max, initial * multiplier^n)`, then [`Jitter`] picks the actual delay below it.
///
/// The default is 100 ms doubling up to 10 s with full jitter, retrying forever.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub multiplier: f64,
    pub jitter: Jitter,
    /// Give up after this many consecutive failed attempts (`None`: never give up).
    pub max_attempts: Option<u32>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: Jitter::Full,
            max_attempts: None,
        }
    }
}

impl Backoff {
    /// The upper bound of the delay before retry `attempt` (0-based), before jitter.
    pub fn cap(&self, attempt: u32) -> Duration {
        let mult = if self.multiplier.is_finite() && self.multiplier >= 1.0 {
            self.multiplier
        } else {
            1.0
        };
        let max = self.max.max(self.initial).as_secs_f64();
        // powi saturates to +inf for large attempts; min() then clamps to max.
        let secs = self.initial.as_secs_f64() * mult.powi(attempt.min(i32::MAX as u32) as i32);
        Duration::from_secs_f64(if secs.is_finite() { secs.min(max) } else { max })
    }

    /// The delay before retry `attempt` (0-based), using `rng` for the jitter.
    pub fn delay_with<R: Rng + ?Sized>(&self, attempt: u32, rng: &mut R) -> Duration {
        let cap = self.cap(attempt);
        match self.jitter {
            Jitter::None => cap,
            Jitter::Full => cap.mul_f64(rng.random::<f64>()),
            Jitter::Equal => cap / 2 + (cap / 2).mul_f64(rng.random::<f64>()),
        }
    }

    /// The delay before retry `attempt` (0-based), with the thread's RNG.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_with(attempt, &mut rand::rng())
    }

    /// Whether `failures` consecutive failures exhaust the policy.
    pub fn exhausted(&self, failures: u32) -> bool {
        self.max_attempts.is_some_and(|m| failures >= m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn caps_grow_exponentially_and_saturate() {
        let b = Backoff::default();
        assert_eq!(b.cap(0), Duration::from_millis(100));
        assert_eq!(b.cap(1), Duration::from_millis(200));
        assert_eq!(b.cap(6), Duration::from_millis(6400));
        assert_eq!(b.cap(7), Duration::from_secs(10));
        assert_eq!(b.cap(10_000), Duration::from_secs(10));
        assert_eq!(b.cap(u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn odd_parameters_stay_bounded() {
        let b = Backoff {
            multiplier: f64::NAN,
            ..Backoff::default()
        };
        assert_eq!(b.cap(50), Duration::from_millis(100));
        let b = Backoff {
            initial: Duration::from_secs(20),
            ..Backoff::default()
        };
        // max below initial: initial wins (never a zero cap).
        assert_eq!(b.cap(3), Duration::from_secs(20));
    }

    #[test]
    fn full_jitter_spans_zero_to_cap() {
        let b = Backoff::default();
        let mut rng = StdRng::seed_from_u64(7);
        let cap = b.cap(3);
        let delays: Vec<Duration> = (0..2000).map(|_| b.delay_with(3, &mut rng)).collect();
        assert!(delays.iter().all(|d| *d <= cap));
        // Spread over the whole range, not clustered near the cap.
        assert!(delays.iter().any(|d| *d < cap / 10));
        assert!(delays.iter().any(|d| *d > cap * 9 / 10));
        let mean = delays.iter().sum::<Duration>() / delays.len() as u32;
        assert!(
            mean > cap * 4 / 10 && mean < cap * 6 / 10,
            "{mean:?} vs {cap:?}"
        );
    }

    #[test]
    fn equal_and_no_jitter() {
        let mut rng = StdRng::seed_from_u64(1);
        let b = Backoff {
            jitter: Jitter::Equal,
            ..Backoff::default()
        };
        for _ in 0..500 {
            let d = b.delay_with(2, &mut rng);
            assert!(d >= b.cap(2) / 2 && d <= b.cap(2));
        }
        let b = Backoff {
            jitter: Jitter::None,
            ..Backoff::default()
        };
        assert_eq!(b.delay_with(2, &mut rng), Duration::from_millis(400));
    }

    #[test]
    fn attempts_bound() {
        let b = Backoff {
            max_attempts: Some(3),
            ..Backoff::default()
        };
        assert!(!b.exhausted(2));
        assert!(b.exhausted(3));
        assert!(!Backoff::default().exhausted(u32::MAX));
    }
}
