//! Token bucket for per-connection message rates: `rate` tokens a second, at most `burst` saved.
//!
//! The bucket sees messages when the gateway reads them, not when the client sent them. While
//! the gateway itself does not read (a rooms publish waiting for the bus or a hook, a proxied
//! app not taking what it is sent), a client within its rate keeps sending into the socket,
//! and the gateway later reads that backlog at once. [`TokenBucket::pause`] and
//! [`TokenBucket::resume`] credit what the pause refilled beyond the burst's cap, so the backlog
//! is not taken for a burst and a compliant client is not closed with 1008.

use std::time::{Duration, Instant};

use super::frame::OpCode;

/// What a frame of a message after its first, or a pong, costs of a rate limit's tokens (a
/// message and a ping cost one): a message streamed in many frames stays within its rate, a
/// flood of empty fragments does not.
pub const FRAGMENT_COST: f64 = 1.0 / 16.0;

/// What a frame a peer sends costs of its rate limit's tokens, the same in every mode: a
/// message's first frame and a ping one, a further frame of a message and a pong
/// [`FRAGMENT_COST`], a Close nothing.
pub fn frame_cost(opcode: OpCode, starts_message: bool) -> f64 {
    match opcode {
        OpCode::Ping => 1.0,
        OpCode::Pong => FRAGMENT_COST,
        OpCode::Close => 0.0,
        _ if starts_message => 1.0,
        _ => FRAGMENT_COST,
    }
}

/// A token bucket driven by the caller's clock (so tests pass instants, not sleeps).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    /// Tokens owed for the gateway's own stalls, spent after the saved ones, until
    /// `credit_until`.
    credit: f64,
    credit_until: Option<Instant>,
    /// The gateway stopped reading from the client at this instant ([`TokenBucket::pause`]).
    paused_at: Option<Instant>,
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
            credit: 0.0,
            credit_until: None,
            paused_at: None,
        }
    }

    /// The gateway stops reading from the client (its own work or a destination that does not
    /// take what it is sent); a pause already under way keeps its start.
    pub fn pause(&mut self, now: Instant) {
        self.paused_at.get_or_insert(now);
    }

    /// Whether a [`TokenBucket::pause`] is under way.
    pub fn is_paused(&self) -> bool {
        self.paused_at.is_some()
    }

    /// The gateway reads from the client again. What the pause refilled beyond the burst (a
    /// client at the rate sent it meanwhile, and the cap would throw it away) is credited; a
    /// client that was spending its tokens gets nothing more than the refill it always gets.
    pub fn resume(&mut self, now: Instant) {
        let Some(at) = self.paused_at.take() else {
            return;
        };
        // Tokens at the pause's start, as a take then would have found them.
        let before = at.saturating_duration_since(self.last).as_secs_f64();
        let at_pause = (self.tokens + before * self.rate).min(self.burst);
        let stall = now.saturating_duration_since(at).as_secs_f64();
        let over = at_pause + stall * self.rate - self.burst;
        if over >= 1.0 {
            let live = self.credit_until.is_some_and(|until| now <= until);
            let credit = if live { self.credit } else { 0.0 } + over;
            self.credit = credit;
            // As long again as a client at the rate takes to send it: the backlog it is for
            // is read long before, and an idle client cannot bank it.
            self.credit_until = Some(now + Duration::from_secs_f64(credit / self.rate));
        }
    }

    /// Take one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.try_take_part(now, 1.0)
    }

    /// Take `part` of a token (at most 1) if there is that much.
    pub fn try_take_part(&mut self, now: Instant, part: f64) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= part {
            self.tokens -= part;
            return true;
        }
        match self.credit_until {
            Some(until) if now <= until && self.credit >= part => {
                self.credit -= part;
                true
            }
            Some(_) => {
                self.credit = 0.0;
                self.credit_until = None;
                false
            }
            None => false,
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
    fn a_compliant_clients_backlog_read_after_the_gateway_stalled_is_not_a_burst() {
        // 50/s, burst 100; the gateway does not read for 10 s (a publish waiting for a hook):
        // the 500 messages the client sent meanwhile are read at once afterwards.
        let t0 = Instant::now();
        let mut b = TokenBucket::new(50, 100, t0);
        b.pause(t0);
        let after = t0 + Duration::from_secs(10);
        b.resume(after);
        assert_eq!((0..500).filter(|_| b.try_take(after)).count(), 500);
    }

    #[test]
    fn a_stall_credits_only_what_the_rate_allows_in_its_time() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(50, 100, t0);
        b.pause(t0);
        let after = t0 + Duration::from_secs(2);
        b.resume(after);
        // 100 saved + 100 for the 2 s stall, not more.
        assert_eq!((0..1000).filter(|_| b.try_take(after)).count(), 200);
    }

    #[test]
    fn a_stalls_credit_does_not_outlast_the_backlog_it_is_for() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(50, 10, t0);
        b.pause(t0);
        b.resume(t0 + Duration::from_secs(2));
        // Long after the stall, only the burst is there again.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..1000).filter(|_| b.try_take(later)).count(), 10);
    }

    #[test]
    fn a_client_that_spent_its_tokens_gets_only_the_refill_for_a_pause_not_twice_it() {
        // The pause's time refills the bucket as any time does; only what the burst's cap
        // would throw away is credited on top.
        let t0 = Instant::now();
        let mut b = TokenBucket::new(50, 100, t0);
        assert_eq!((0..100).filter(|_| b.try_take(t0)).count(), 100);
        b.pause(t0);
        let after = t0 + Duration::from_secs(2);
        b.resume(after);
        assert_eq!((0..1000).filter(|_| b.try_take(after)).count(), 100);
    }

    #[test]
    fn short_pauses_around_every_message_add_nothing_to_the_rate() {
        // A rooms session pauses while each message is handled: a client sending as fast as
        // it can must still average the rate.
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100, 10, t0);
        let mut now = t0;
        let mut allowed = 0;
        while now < t0 + Duration::from_secs(10) {
            if b.try_take(now) {
                allowed += 1;
                b.pause(now);
                now += Duration::from_millis(5);
                b.resume(now);
            } else {
                now += Duration::from_millis(1);
            }
        }
        assert!((995..=1015).contains(&allowed), "{allowed}");
    }

    #[test]
    fn a_pause_is_credited_from_its_first_start_when_reading_resumes() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(50, 100, t0);
        b.pause(t0);
        b.pause(t0 + Duration::from_secs(5));
        let after = t0 + Duration::from_secs(10);
        b.resume(after);
        assert!(!b.is_paused());
        assert_eq!((0..1000).filter(|_| b.try_take(after)).count(), 600);
    }

    #[test]
    fn parts_of_tokens_add_up_to_whole_ones() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 2, t0);
        assert_eq!(
            (0..100).filter(|_| b.try_take_part(t0, 1.0 / 16.0)).count(),
            32
        );
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
