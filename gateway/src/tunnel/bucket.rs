//! Token bucket for per-connection message rates: `rate` tokens a second, at most `burst` saved.

use std::time::Instant;

/// A token bucket driven by the caller's clock (so tests pass instants, not sleeps).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_second: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate: f64::from(rate_per_second.max(1)),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Take one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_full_bucket_allows_exactly_the_burst_at_once() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 5, t0);
        assert_eq!((0..20).filter(|_| b.try_take(t0)).count(), 5);
    }

    #[test]
    fn tokens_refill_at_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 5, t0);
        while b.try_take(t0) {}
        let t1 = t0 + Duration::from_millis(300);
        assert_eq!((0..20).filter(|_| b.try_take(t1)).count(), 3);
    }

    #[test]
    fn refill_never_exceeds_the_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100, 3, t0);
        let later = t0 + Duration::from_secs(3600);
        assert_eq!((0..10).filter(|_| b.try_take(later)).count(), 3);
    }

    #[test]
    fn sustained_rate_matches_the_configured_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(50, 1, t0);
        let mut allowed = 0;
        // one attempt every millisecond for 10 seconds
        for ms in 0..10_000u64 {
            if b.try_take(t0 + Duration::from_millis(ms)) {
                allowed += 1;
            }
        }
        assert!((499..=501).contains(&allowed), "{allowed}");
    }

    #[test]
    fn a_clock_going_backwards_does_not_mint_tokens() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = TokenBucket::new(10, 1, t0);
        assert!(b.try_take(t0));
        assert!(!b.try_take(t0 - Duration::from_secs(5)));
        assert!(!b.try_take(t0));
    }
}
