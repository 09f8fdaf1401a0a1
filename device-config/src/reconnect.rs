//! How long an MQTT client waits before it tries its broker again: capped exponential backoff
//! with jitter, so a fleet that lost its broker does not come back in lockstep. Pure: the
//! caller picks the clock the wait runs on (the gateway's process clock, the cloud's wall
//! clock) and the random source.

use std::time::Duration;

use rand::Rng;

/// A reconnect schedule: the wait after the n-th failure in a row is `first · 2^(n-1)`,
/// capped at `cap`, of which a random half to all (so the waits of a fleet spread out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconnectBackoff {
    pub first: Duration,
    pub cap: Duration,
}

impl ReconnectBackoff {
    /// A gateway's: 1 s doubling to 60 s. A thousand gateways share one broker; their outbox
    /// keeps every event until the cloud acks it, so waiting costs nothing but latency.
    pub const GATEWAY: ReconnectBackoff = ReconnectBackoff {
        first: Duration::from_secs(1),
        cap: Duration::from_secs(60),
    };

    /// The cloud's: 100 ms doubling to 2 s. The broker is the cloud's only input and there are
    /// a few cloud clients at most: every second it is not back is a second of backlog on
    /// every gateway and of late offers.
    pub const CLOUD: ReconnectBackoff = ReconnectBackoff {
        first: Duration::from_millis(100),
        cap: Duration::from_secs(2),
    };

    /// The wait after `failures` failed attempts in a row (0 counts as 1).
    pub fn delay(&self, failures: u32, rng: &mut impl Rng) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        let base = self
            .first
            .checked_mul(1u32 << doublings)
            .unwrap_or(self.cap)
            .min(self.cap);
        let ms = u64::try_from(base.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rng.random_range(ms / 2..=ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn waits_double_from_the_first_up_to_the_cap_with_half_jitter() {
        let mut rng = StdRng::seed_from_u64(7);
        let b = ReconnectBackoff::CLOUD;
        for (failures, base_ms) in [(0, 100), (1, 100), (2, 200), (3, 400), (5, 1600), (6, 2000)] {
            for _ in 0..200 {
                let d = b.delay(failures, &mut rng).as_millis() as u64;
                assert!(
                    (base_ms / 2..=base_ms).contains(&d),
                    "after {failures} failures: {d} ms, want {}..={base_ms}",
                    base_ms / 2
                );
            }
        }
    }

    #[test]
    fn a_long_outage_never_waits_past_the_cap() {
        let mut rng = StdRng::seed_from_u64(1);
        for b in [ReconnectBackoff::CLOUD, ReconnectBackoff::GATEWAY] {
            for failures in [7, 31, 32, 1000, u32::MAX] {
                assert!(b.delay(failures, &mut rng) <= b.cap);
            }
        }
    }

    #[test]
    fn the_jitter_spreads_a_fleet() {
        let mut rng = StdRng::seed_from_u64(3);
        let waits: std::collections::BTreeSet<Duration> = (0..50)
            .map(|_| ReconnectBackoff::GATEWAY.delay(4, &mut rng))
            .collect();
        assert!(waits.len() > 40, "{waits:?}");
    }
}
