//! What to publish next: the window of presence batches in flight to the cloud and when each
//! is due to be sent again (DESIGN.md, "Flow and size"). Pure — no sockets, no clock reads —
//! so the resend schedule is unit-tested; the daemon reads the events from the outbox,
//! seals and publishes them, and reports back here.
//!
//! - At most `max_in_flight` batches wait for an ack at once.
//! - A batch not acked within the resend interval is sent again, with capped exponential
//!   backoff and jitter, so a cloud restart does not make a fleet resend in lockstep.
//! - After a reconnect every batch in flight is due at once, oldest first.
//! - An ack may settle part of a batch; a batch leaves the window once all of it is settled.

use std::collections::VecDeque;

use omo_device_config::SeqRanges;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Window and timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UplinkParams {
    pub max_in_flight: usize,
    pub resend_ms: i64,
    pub resend_max_ms: i64,
}

impl UplinkParams {
    pub fn from_config(o: &omo_device_config::gateway_config::Outbox) -> UplinkParams {
        UplinkParams {
            max_in_flight: o.max_in_flight.max(1) as usize,
            resend_ms: i64::from(o.resend_interval_s) * 1000,
            resend_max_ms: i64::from(o.resend_backoff_max_s) * 1000,
        }
    }
}

#[derive(Debug, Clone)]
struct Flight {
    /// Seqs (events and dropped ranges) this batch carries and the cloud has not settled.
    seqs: SeqRanges,
    attempts: u32,
    due_ms: i64,
}

/// What the daemon should publish now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Send again the unsettled part of an earlier batch.
    Resend(SeqRanges),
    /// Send events newer than every seq sent so far (and dropped ranges not yet sent).
    New,
}

/// The uplink's in-flight window.
#[derive(Debug)]
pub struct Uplink {
    params: UplinkParams,
    flights: VecDeque<Flight>,
    connected: bool,
    rng: StdRng,
}

impl Uplink {
    pub fn new(params: UplinkParams, seed: u64) -> Uplink {
        Uplink {
            params,
            flights: VecDeque::new(),
            connected: false,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The broker session is up: everything in flight is due now, oldest first.
    pub fn connected(&mut self, now_ms: i64) {
        self.connected = true;
        for f in &mut self.flights {
            f.due_ms = now_ms;
        }
    }

    pub fn disconnected(&mut self) {
        self.connected = false;
    }

    /// Batches waiting for an ack.
    pub fn in_flight(&self) -> usize {
        self.flights.len()
    }

    /// Every seq in flight.
    pub fn seqs_in_flight(&self) -> SeqRanges {
        let mut all = SeqRanges::new();
        self.flights.iter().for_each(|f| all.merge(&f.seqs));
        all
    }

    /// What to publish at `now_ms`, if anything: due resends first (oldest first), then new
    /// events when the window has room and `has_new` says there are some.
    pub fn next(&mut self, now_ms: i64, has_new: bool) -> Option<Next> {
        if !self.connected {
            return None;
        }
        if let Some(f) = self.flights.iter_mut().find(|f| f.due_ms <= now_ms) {
            let seqs = f.seqs.clone();
            // Taken: the daemon reports it with `resent` (or it stays due).
            return Some(Next::Resend(seqs));
        }
        (has_new && self.flights.len() < self.params.max_in_flight).then_some(Next::New)
    }

    /// A new batch carrying `seqs` was published.
    pub fn sent(&mut self, seqs: SeqRanges, now_ms: i64) {
        if seqs.is_empty() {
            return;
        }
        let due_ms = now_ms + self.backoff(0);
        self.flights.push_back(Flight {
            seqs,
            attempts: 0,
            due_ms,
        });
    }

    /// The batch whose unsettled seqs were `seqs` was published again.
    pub fn resent(&mut self, seqs: &SeqRanges, now_ms: i64) {
        let Some(i) = self.flights.iter().position(|f| &f.seqs == seqs) else {
            return;
        };
        let attempts = self.flights[i].attempts.saturating_add(1);
        let due_ms = now_ms + self.backoff(attempts);
        let f = &mut self.flights[i];
        f.attempts = attempts;
        f.due_ms = due_ms;
    }

    /// A resend found nothing left to send (settled meanwhile): forget the batch.
    pub fn forget(&mut self, seqs: &SeqRanges) {
        self.flights.retain(|f| &f.seqs != seqs);
    }

    /// The cloud settled `settled` (stored or rejected).
    pub fn acked(&mut self, settled: &SeqRanges) {
        for f in &mut self.flights {
            f.seqs = f.seqs.difference(settled);
        }
        self.flights.retain(|f| !f.seqs.is_empty());
    }

    /// Resend delay after `attempts` resends: resend_ms · 2^attempts, capped, times a jitter
    /// factor in [0.75, 1.25).
    fn backoff(&mut self, attempts: u32) -> i64 {
        let base = self
            .params
            .resend_ms
            .saturating_mul(1i64 << attempts.min(20))
            .min(self.params.resend_max_ms.max(self.params.resend_ms));
        let jitter: f64 = self.rng.random_range(0.75..1.25);
        (base as f64 * jitter) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> UplinkParams {
        UplinkParams {
            max_in_flight: 2,
            resend_ms: 10_000,
            resend_max_ms: 60_000,
        }
    }

    #[test]
    fn nothing_goes_out_while_disconnected() {
        let mut u = Uplink::new(params(), 1);
        assert_eq!(u.next(0, true), None);
        u.connected(0);
        assert_eq!(u.next(0, true), Some(Next::New));
        assert_eq!(u.next(0, false), None);
    }

    #[test]
    fn window_limits_new_batches() {
        let mut u = Uplink::new(params(), 1);
        u.connected(0);
        u.sent(SeqRanges::from_range(1, 10), 0);
        u.sent(SeqRanges::from_range(11, 20), 0);
        assert_eq!(u.next(1, true), None, "window of 2 is full");
        u.acked(&SeqRanges::from_range(1, 5));
        assert_eq!(u.in_flight(), 2, "a partly settled batch stays");
        u.acked(&SeqRanges::from_range(6, 10));
        assert_eq!(u.in_flight(), 1);
        assert_eq!(u.next(1, true), Some(Next::New));
    }

    #[test]
    fn unacked_batches_are_resent_with_growing_jittered_backoff() {
        let mut u = Uplink::new(params(), 7);
        u.connected(0);
        u.sent(SeqRanges::from_range(1, 3), 0);
        assert_eq!(u.next(7_000, false), None, "not before 0.75 × interval");
        let mut t = 0;
        let mut gaps = Vec::new();
        for _ in 0..6 {
            let mut due = t;
            while u.next(due, false).is_none() {
                due += 100;
            }
            assert_eq!(
                u.next(due, false),
                Some(Next::Resend(SeqRanges::from_range(1, 3)))
            );
            gaps.push(due - t);
            u.resent(&SeqRanges::from_range(1, 3), due);
            t = due;
        }
        assert!((7_500..=12_600).contains(&gaps[0]), "{gaps:?}");
        assert!(gaps[2] > gaps[0], "backoff grows: {gaps:?}");
        assert!(
            gaps.iter().all(|&g| g <= 75_100),
            "capped at max × 1.25: {gaps:?}"
        );
    }

    #[test]
    fn reconnect_makes_everything_due_oldest_first() {
        let mut u = Uplink::new(params(), 3);
        u.connected(0);
        u.sent(SeqRanges::from_range(1, 3), 0);
        u.sent(SeqRanges::from_range(4, 6), 0);
        u.disconnected();
        assert_eq!(u.next(100_000, true), None);
        u.connected(5_000);
        assert_eq!(
            u.next(5_000, true),
            Some(Next::Resend(SeqRanges::from_range(1, 3)))
        );
        u.resent(&SeqRanges::from_range(1, 3), 5_000);
        assert_eq!(
            u.next(5_000, true),
            Some(Next::Resend(SeqRanges::from_range(4, 6)))
        );
        u.forget(&SeqRanges::from_range(4, 6));
        assert_eq!(u.in_flight(), 1);
        assert_eq!(u.seqs_in_flight(), SeqRanges::from_range(1, 3));
    }
}
