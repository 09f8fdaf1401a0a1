//! A channel's rate limit (pure, fed with the time): at most `rate` requests in any window of
//! one second. It remembers the times of the last `rate` requests and lets one more through
//! only when the oldest of them is a second old — exact where a token bucket allows a burst on
//! top of its refill (LINE's limit is per second: 2,000/s by default).

use std::collections::VecDeque;

/// The limiter.
#[derive(Debug, Clone)]
pub struct RateLimit {
    rate: usize,
    window_ms: i64,
    sent: VecDeque<i64>,
}

impl RateLimit {
    /// At most `rate` (at least 1) requests per second.
    pub fn new(rate: u32) -> RateLimit {
        RateLimit::with_window(rate, 1000)
    }

    /// At most `rate` requests in any `window_ms` (a window a little over a second leaves
    /// room for the network's jitter between our send and the server's count).
    pub fn with_window(rate: u32, window_ms: i64) -> RateLimit {
        let rate = rate.max(1) as usize;
        RateLimit {
            rate,
            window_ms: window_ms.max(1),
            sent: VecDeque::with_capacity(rate),
        }
    }

    /// Takes a slot at `now_ms`, or says how many ms until one is free.
    pub fn take(&mut self, now_ms: i64) -> Result<(), i64> {
        if self.sent.len() == self.rate {
            let oldest = *self.sent.front().expect("full, so not empty");
            if now_ms < oldest + self.window_ms {
                return Err(oldest + self.window_ms - now_ms);
            }
            self.sent.pop_front();
        }
        self.sent.push_back(now_ms);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the request times, no window of one second holds more than `rate`.
        #[test]
        fn never_above_the_limit_in_any_second(rate in 1u32..300, gaps in proptest::collection::vec(0i64..20, 1..3000)) {
            let mut limit = RateLimit::new(rate);
            let mut t = 0;
            let mut sent = Vec::new();
            for g in gaps {
                t += g;
                if limit.take(t).is_ok() {
                    sent.push(t);
                }
            }
            for (i, &start) in sent.iter().enumerate() {
                let in_window = sent[i..].iter().take_while(|&&s| s < start + 1000).count();
                prop_assert!(in_window as u32 <= rate, "{in_window} in the second from {start}");
            }
        }
    }

    #[test]
    fn waits_exactly_until_a_slot_frees_and_sustains_the_rate() {
        let mut l = RateLimit::new(2);
        assert!(l.take(0).is_ok() && l.take(10).is_ok());
        assert_eq!(l.take(500), Err(500));
        assert!(l.take(1000).is_ok());
        // Asked as fast as it allows, it runs at the full rate.
        let mut l = RateLimit::new(2500);
        let (mut t, mut n) = (0i64, 0u32);
        while t < 10_000 {
            match l.take(t) {
                Ok(()) => n += 1,
                Err(wait) => t += wait,
            }
        }
        assert!(n >= 25_000, "{n}");
    }
}
