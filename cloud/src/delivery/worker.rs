//! The delivery worker: takes the deliveries that are due from the store, and for each round
//!
//! 1. checks each against its expiry, the customer's consent for the channel and where to send
//!    it, and records the attempt as started (attempt count, first attempt, the expiry lowered to
//!    first attempt + 23 h) with a lease — one commit, flushed — so a crash mid-request is
//!    retried with the same retry key, and LINE answers the repeat 409;
//! 2. sends them concurrently, per channel at most `concurrency` in flight and at most the
//!    channel's rate in any second (wall time: the limit is the remote service's);
//! 3. records each answer (delivered; failed with the reason; retry at a backoff on the service
//!    clock; expired) — one commit.
//!
//! Expiry, backoff and leases run on the service clock (`--clock`), so a replayed store day
//! expires offers as a real one would.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use omo_device_config::Clock;
use tokio::sync::{Notify, Semaphore};

use super::outbox::channel_name;
pub use super::outbox::{
    cancel_withdrawn, record, take_due, Answered, Senders, Settings, Started, Taken, Target,
};
use super::rate::RateLimit;
use super::retry::Answer;
use crate::delivery::DeliveryChannel;
use crate::store::{Store, StoreError};

/// The rate window: a little over a second, so the network's jitter between our send and the
/// server's count never shows the server more than the rate in its own one-second windows.
const RATE_WINDOW_MS: i64 = 1020;
fn channel_index(c: DeliveryChannel) -> usize {
    match c {
        DeliveryChannel::Line => 0,
        DeliveryChannel::Push => 1,
        DeliveryChannel::Webhook => 2,
    }
}

/// The worker: shared state for its rounds.
pub struct Worker {
    store: Arc<dyn Store>,
    clock: Clock,
    senders: Arc<Senders>,
    settings: Settings,
    limits: [Arc<Mutex<RateLimit>>; 3],
    permits: [Arc<Semaphore>; 3],
    epoch: Instant,
    /// Where LINE 429 storms and invalidated push tokens are alerted.
    live: Option<Arc<crate::live::Live>>,
}

/// Conflicts in a row recording a round's answers before the round fails (its deliveries
/// are then sent again once their lease runs out).
const RECORD_CONFLICTS: u32 = 32;

impl Worker {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Clock,
        senders: Senders,
        settings: Settings,
    ) -> Worker {
        let limit = |i: usize| {
            Arc::new(Mutex::new(RateLimit::with_window(
                settings.rates[i],
                RATE_WINDOW_MS,
            )))
        };
        let permits = || Arc::new(Semaphore::new(settings.concurrency.max(1)));
        Worker {
            store,
            clock,
            senders: Arc::new(senders),
            limits: [limit(0), limit(1), limit(2)],
            permits: [permits(), permits(), permits()],
            settings,
            epoch: Instant::now(),
            live: None,
        }
    }

    /// Alerts LINE 429 storms and invalidated push tokens to `live`.
    pub fn with_live(mut self, live: Arc<crate::live::Live>) -> Worker {
        self.live = Some(live);
        self
    }

    fn now_ms(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }

    fn alert(&self, answers: &[Answered], now_ms: i64) {
        let Some(live) = &self.live else { return };
        for a in answers {
            if let (DeliveryChannel::Line, Answer::Status { code: 429, .. }) =
                (a.started.delivery.channel, &a.answer)
            {
                live.line_429(now_ms);
            }
        }
        live.push_tokens_invalidated(answers.iter().filter(|a| a.unregistered).count(), now_ms);
    }

    /// Waits for a request slot on the channel's rate limit (wall time).
    async fn rate_slot(limit: &Mutex<RateLimit>, epoch: Instant) {
        loop {
            let now = i64::try_from(epoch.elapsed().as_millis()).unwrap_or(i64::MAX);
            let wait = match limit.lock().expect("rate limit lock").take(now) {
                Ok(()) => return,
                Err(ms) => ms,
            };
            tokio::time::sleep(Duration::from_millis(wait.max(1) as u64)).await;
        }
    }

    async fn attempt(self: Arc<Self>, s: Started) -> Answered {
        let i = channel_index(s.delivery.channel);
        let _permit = self.permits[i]
            .clone()
            .acquire_owned()
            .await
            .expect("never closed");
        Self::rate_slot(&self.limits[i], self.epoch).await;
        let d = &s.delivery;
        // Waiting for a permit and a slot takes time (a slow endpoint, a low rate): the expiry
        // is checked again right before the request.
        if self.now_ms() >= d.expires_ms {
            return Answered {
                answer: Answer::NoAnswer("not sent".into()),
                started: s,
                unregistered: false,
                expired_unsent: true,
            };
        }
        if d.attempts == 1 {
            // The pipeline's own delay: from the log time the visit stage decided the trigger
            // at (its rules' waits, enter_after_s and the reorder window, are before it) to the
            // first request, on the service clock.
            metrics::histogram!("omo_event_to_offer_seconds", "channel" => channel_name(d.channel))
                .record((self.now_ms() - d.decided_ms).max(0) as f64 / 1000.0);
        }
        let (answer, unregistered) = match (&s.target, self.senders.as_ref()) {
            (
                Target::Line(to),
                Senders {
                    line: Some(line), ..
                },
            ) => (line.send(d, to).await, false),
            (Target::Push { token, .. }, Senders { fcm: Some(fcm), .. }) => {
                let left = Duration::from_millis((d.expires_ms - self.now_ms()).max(1000) as u64);
                let ttl = self.clock.wall_duration(left).unwrap_or(left);
                let a = fcm.send(d, token, ttl).await;
                (a.answer, a.unregistered)
            }
            (
                Target::Webhook(member),
                Senders {
                    webhook: Some(w), ..
                },
            ) => {
                let expires = DateTime::<Utc>::from_timestamp_millis(d.expires_ms)
                    .unwrap_or_default()
                    .to_rfc3339_opts(SecondsFormat::Millis, true);
                (w.send(d, member, &expires).await, false)
            }
            _ => (
                Answer::NoAnswer("the channel is not configured".into()),
                false,
            ),
        };
        Answered {
            answer: self.retry_after_on_clock(answer),
            started: s,
            unregistered,
            expired_unsent: false,
        }
    }

    /// A server's `Retry-After` is real time; backoff runs on the service clock, so it is
    /// scaled by the clock's speed (a replay at ×60 still waits the second LINE asked for).
    fn retry_after_on_clock(&self, answer: Answer) -> Answer {
        match answer {
            Answer::Status {
                code,
                retry_after_s: Some(s),
                message,
            } => Answer::Status {
                code,
                retry_after_s: Some((s as f64 * self.clock.speed().max(1.0)).ceil() as u64),
                message,
            },
            other => other,
        }
    }

    /// One round; returns whether it did anything, and the next due time it saw. A round that
    /// meets another instance's claim (a conflict taking its rows) is taken again by
    /// [`Worker::run`]; recording the answers of requests already sent is retried here.
    pub async fn round(self: &Arc<Self>) -> Result<(bool, Option<i64>), StoreError> {
        let now = self.now_ms();
        let me = self.clone();
        let taken = tokio::task::spawn_blocking(move || {
            take_due(me.store.as_ref(), &me.senders, &me.settings, now)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("delivery task: {e}")))??;
        let worked = taken.settled > 0 || !taken.started.is_empty();
        if taken.started.is_empty() {
            return Ok((worked, taken.next_due_ms));
        }
        let mut tasks = tokio::task::JoinSet::new();
        for s in taken.started {
            tasks.spawn(self.clone().attempt(s));
        }
        let mut answers = Vec::with_capacity(tasks.len());
        while let Some(a) = tasks.join_next().await {
            match a {
                Ok(a) => answers.push(a),
                Err(e) => tracing::error!(error = %e, "delivery attempt task failed"),
            }
        }
        crate::crash_point!("deliver.after_request_before_record");
        let me = self.clone();
        let now = self.now_ms();
        self.alert(&answers, now);
        tokio::task::spawn_blocking(move || {
            // The requests went out: their answers are recorded even when another instance's
            // worker wrote a row or a counter this commit expects meanwhile (read again), so a
            // send is never repeated for want of its record.
            let mut conflicts = 0;
            loop {
                match record(me.store.as_ref(), &me.settings, &answers, now) {
                    Err(StoreError::Conflict { .. }) if conflicts < RECORD_CONFLICTS => {
                        conflicts += 1;
                    }
                    r => return r,
                }
            }
        })
        .await
        .map_err(|e| StoreError::Backend(format!("delivery task: {e}")))??;
        Ok((true, taken.next_due_ms))
    }

    /// Runs rounds for ever: at once while there is work, else at the next due time, when the
    /// decision stage wrote deliveries (`wake`), or after a second of wall time at most.
    pub async fn run(self: Arc<Self>, wake: Arc<Notify>) {
        loop {
            let idle_for = match self.round().await {
                Ok((true, _)) => continue,
                Ok((false, next)) => {
                    let until_next = next.map(|n| {
                        let clock_ms = (n - self.now_ms()).max(0) as u64;
                        self.clock
                            .wall_duration(Duration::from_millis(clock_ms))
                            .unwrap_or(Duration::from_millis(50))
                    });
                    until_next
                        .unwrap_or(Duration::from_secs(1))
                        .min(Duration::from_secs(1))
                }
                // Another instance's worker claimed some of these rows first: take the round
                // again shortly, over what it left.
                Err(StoreError::Conflict { .. }) => {
                    tracing::debug!("delivery round met another instance's claim; again");
                    Duration::from_millis(10)
                }
                Err(e) => {
                    tracing::error!(error = %e, "delivery round failed; retrying");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(idle_for) => {}
                _ = wake.notified() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::line::LineSender;
    use crate::delivery::outbox::UNCONFIGURED_RECHECK_MS;
    use crate::delivery::retry::Backoff;

    use crate::delivery::{due_key, Delivery, Status, MAX_AFTER_FIRST_ATTEMPT_MS};
    use crate::identity::{new_customer, save_customer};
    use crate::store::barrier::scan_all;
    use crate::store::testing::{places, Place, TestStore};
    use crate::store::{Commit, Space};
    use crate::tallies::funnel;

    const NOW: i64 = 1_800_000_000_000;

    fn settings() -> Settings {
        Settings {
            concurrency: 4,
            batch: 100,
            backoff: Backoff::default(),
            rates: [10, 10, 10],
            lease_ms: 30_000,
            counter_shard: None,
        }
    }

    fn line_senders() -> Senders {
        Senders {
            line: Some(LineSender::new(
                crate::tls::http_client_builder().build().unwrap(),
                "http://127.0.0.1:9",
                "t",
            )),
            ..Senders::default()
        }
    }

    /// A fresh store on `like`'s engine with a LINE customer (consent as given) and one
    /// pending delivery to them.
    fn setup(like: &Place, consent: bool, expires_ms: i64) -> (Place, TestStore, Delivery) {
        let place = like.fresh_like();
        let store = place.open();
        let mut customer = new_customer("2026-11-01T00:00:00.000Z".parse().unwrap());
        customer.line_user = Some("U1".into());
        customer.consent.line = consent;
        store
            .commit(save_customer(&store, None, &customer).unwrap())
            .unwrap();
        let d = Delivery {
            id: "d1".into(),
            trigger_key: "t".into(),
            retry_key: "123e4567-e89b-42d3-a456-426614174000".into(),
            campaign: "c".into(),
            variant: "a".into(),
            channel: DeliveryChannel::Line,
            customer: customer.id.clone(),
            store: "s1".into(),
            text: "hi".into(),
            flex: None,
            coupon: "ABC".into(),
            decided_ms: NOW - 1000,
            expires_ms,
            status: Status::Pending,
            attempts: 0,
            first_attempt_ms: None,
            last_attempt_ms: None,
            done_ms: None,
            reason: None,
            link: None,
            click: None,
            test: false,
        };
        let mut c = Commit::new();
        super::super::put(&mut c, &d, None);
        c.put(Space::Campaigns, due_key(d.decided_ms, &d.id), Vec::new());
        store.commit(c).unwrap();
        (place, store, d)
    }

    fn row(store: &TestStore) -> Delivery {
        super::super::read(store, "d1").unwrap().unwrap().0
    }

    fn due_keys(store: &TestStore) -> Vec<String> {
        scan_all(store, Space::Campaigns)
            .unwrap()
            .into_iter()
            .map(|(k, _)| String::from_utf8(k).unwrap())
            .filter(|k| k.starts_with("due/"))
            .collect()
    }

    #[test]
    fn a_withdrawal_cancels_the_waiting_deliveries_of_that_channel_at_once() {
        for place in places() {
            a_withdrawal_cancels_the_waiting_deliveries_of_that_channel_at_once_on(&place);
        }
    }

    fn a_withdrawal_cancels_the_waiting_deliveries_of_that_channel_at_once_on(place: &Place) {
        let (_d, store, d) = setup(place, true, NOW + 3_600_000);
        let (mut customer, _) = crate::identity::customer_for_update(&store, &d.customer).unwrap();
        // Still consenting to LINE: nothing to cancel.
        assert_eq!(cancel_withdrawn(&store, &customer, NOW).unwrap(), 0);
        assert_eq!(row(&store).status, Status::Pending);
        // Withdrawn from push only: the LINE delivery waits on.
        customer.consent.push = false;
        assert_eq!(cancel_withdrawn(&store, &customer, NOW).unwrap(), 0);
        customer.consent.line = false;
        assert_eq!(cancel_withdrawn(&store, &customer, NOW).unwrap(), 1);
        let r = row(&store);
        assert_eq!(
            (r.status, r.reason.as_deref(), r.done_ms),
            (
                Status::Cancelled,
                Some("consent for line withdrawn"),
                Some(NOW)
            )
        );
        assert!(due_keys(&store).is_empty());
        // Counted in the campaign's funnel like the worker's own cancellations.
        assert_eq!(
            store
                .get(
                    Space::Campaigns,
                    funnel::funnel_key("c", "a", "cancelled").as_bytes()
                )
                .unwrap(),
            Some(1u64.to_be_bytes().to_vec())
        );
        assert_eq!(cancel_withdrawn(&store, &customer, NOW).unwrap(), 0);
    }

    #[test]
    fn a_test_send_settles_without_a_count() {
        for place in places() {
            let (_d, store, mut d) = setup(&place, false, NOW + 60_000);
            let (_, bytes) = super::super::read(&store, "d1").unwrap().unwrap();
            d.test = true;
            let mut c = Commit::new();
            super::super::put(&mut c, &d, Some(bytes));
            store.commit(c).unwrap();
            let before: Vec<Vec<u8>> = scan_all(&store, Space::Campaigns)
                .unwrap()
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            // Consent withdrawn: taken, settled cancelled, and no funnel, store or hourly
            // counter written.
            take_due(&store, &line_senders(), &settings(), NOW).unwrap();
            assert_eq!(row(&store).status, Status::Cancelled);
            let after: Vec<Vec<u8>> = scan_all(&store, Space::Campaigns)
                .unwrap()
                .into_iter()
                .map(|(k, _)| k)
                .filter(|k| !k.starts_with(b"due/"))
                .collect();
            let before: Vec<Vec<u8>> = before
                .into_iter()
                .filter(|k| !k.starts_with(b"due/"))
                .collect();
            assert_eq!(before, after);
        }
    }

    #[test]
    fn expired_cancelled_and_unconfigured_deliveries_send_nothing() {
        for place in places() {
            expired_cancelled_and_unconfigured_deliveries_send_nothing_on(&place);
        }
    }

    fn expired_cancelled_and_unconfigured_deliveries_send_nothing_on(place: &Place) {
        let (_d, store, _) = setup(place, true, NOW);
        let t = take_due(&store, &line_senders(), &settings(), NOW).unwrap();
        assert!(t.started.is_empty());
        assert_eq!(row(&store).status, Status::Expired);
        assert!(due_keys(&store).is_empty());

        let (_d, store, _) = setup(place, false, NOW + 60_000);
        take_due(&store, &line_senders(), &settings(), NOW).unwrap();
        let r = row(&store);
        assert_eq!(r.status, Status::Cancelled);
        assert_eq!(r.reason.as_deref(), Some("consent for line withdrawn"));

        let (_d, store, _) = setup(place, true, NOW + 3_600_000);
        let t = take_due(&store, &Senders::default(), &settings(), NOW).unwrap();
        assert!(t.started.is_empty());
        assert_eq!(row(&store).status, Status::Pending);
        assert_eq!(
            due_keys(&store),
            [due_key(NOW + UNCONFIGURED_RECHECK_MS, "d1")]
        );
        // Nothing is due before then.
        let t = take_due(&store, &line_senders(), &settings(), NOW + 1).unwrap();
        assert!(t.started.is_empty());
        assert_eq!(t.next_due_ms, Some(NOW + UNCONFIGURED_RECHECK_MS));
    }

    #[test]
    fn attempts_are_recorded_before_sending_and_answers_after() {
        for place in places() {
            attempts_are_recorded_before_sending_and_answers_after_on(&place);
        }
    }

    fn attempts_are_recorded_before_sending_and_answers_after_on(place: &Place) {
        let (_d, store, _) = setup(place, true, NOW + 48 * 3_600_000);
        let s = settings();
        let t = take_due(&store, &line_senders(), &s, NOW).unwrap();
        assert_eq!(t.started.len(), 1);
        assert_eq!(t.started[0].target, Target::Line("U1".into()));
        let r = row(&store);
        assert_eq!((r.status, r.attempts), (Status::Sending, 1));
        assert_eq!(
            r.expires_ms,
            NOW + MAX_AFTER_FIRST_ATTEMPT_MS,
            "first attempt + 23 h"
        );
        assert_eq!(due_keys(&store), [due_key(NOW + s.lease_ms, "d1")]);
        // A crash now: the lease brings it back with the same retry key, as attempt 2.
        let again = take_due(&store, &line_senders(), &s, NOW + s.lease_ms).unwrap();
        assert_eq!(again.started.len(), 1);
        assert_eq!(row(&store).attempts, 2);
        // The late answer of attempt 1 changes nothing; attempt 2's 429 reschedules.
        let busy = Answer::Status {
            code: 429,
            retry_after_s: Some(40),
            message: "slow down".into(),
        };
        let at = NOW + s.lease_ms + 10;
        let first = Answered {
            started: t.started[0].clone(),
            answer: busy.clone(),
            unregistered: false,
            expired_unsent: false,
        };
        let second = Answered {
            started: again.started[0].clone(),
            answer: busy,
            unregistered: false,
            expired_unsent: false,
        };
        record(&store, &s, &[first], at).unwrap();
        assert_eq!(row(&store).status, Status::Sending);
        record(&store, &s, &[second], at).unwrap();
        let r = row(&store);
        assert_eq!(r.status, Status::Pending);
        assert_eq!(r.reason.as_deref(), Some("429: slow down"));
        assert_eq!(due_keys(&store), [due_key(at + 40_000, "d1")]);
        // Attempt 3 answered 409: LINE already accepted that retry key.
        let third = take_due(&store, &line_senders(), &s, at + 40_000).unwrap();
        record(
            &store,
            &s,
            &[Answered {
                started: third.started[0].clone(),
                answer: Answer::Status {
                    code: 409,
                    retry_after_s: None,
                    message: "already accepted".into(),
                },
                unregistered: false,
                expired_unsent: false,
            }],
            at + 40_100,
        )
        .unwrap();
        let r = row(&store);
        assert_eq!((r.status, r.attempts), (Status::Delivered, 3));
        assert!(due_keys(&store).is_empty());
    }
}
