//! Retry policy: exponential backoff with jitter between attempts, capped, so a failing
//! worker is not hammered and a burst of failures does not retry in lockstep.

use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub base: Duration,
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { base: Duration::from_millis(50), cap: Duration::from_secs(2) }
    }
}

impl RetryPolicy {
    /// Delay before attempt number `failures + 1` after `failures` failed attempts.
    /// `jitter` in [0, 1) picks a point in the upper half of the window ("equal jitter").
    pub fn delay(&self, failures: u32, jitter: f64) -> Duration {
        let exp = failures.saturating_sub(1).min(20);
        let window = self.base.saturating_mul(1 << exp).min(self.cap);
        window.mul_f64(0.5 + jitter.clamp(0.0, 1.0) / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_then_caps() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(1, 1.0), Duration::from_millis(50));
        assert_eq!(p.delay(2, 1.0), Duration::from_millis(100));
        assert_eq!(p.delay(3, 1.0), Duration::from_millis(200));
        assert_eq!(p.delay(30, 1.0), Duration::from_secs(2));
        assert_eq!(p.delay(u32::MAX, 1.0), Duration::from_secs(2));
    }

    #[test]
    fn jitter_stays_in_upper_half() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(2, 0.0), Duration::from_millis(50));
        assert!(p.delay(2, 0.5) > Duration::from_millis(50));
        assert!(p.delay(2, 7.0) <= Duration::from_millis(100));
    }
}
