//! The outbox's two commits around a round of sends: taking the due deliveries (settling
//! those that need no request, recording the others' attempts as started with a lease) and
//! recording the answers (delivered, failed, retry later, expired).

use super::fcm::FcmSender;
use super::line::LineSender;
use super::retry::Backoff;
use super::retry::{after_attempt, Answer, Conflict, Next};
use super::webhook::WebhookSender;
use super::{due_key, Delivery, DeliveryChannel, Status, MAX_AFTER_FIRST_ATTEMPT_MS};
use crate::identity;
use crate::store::{Commit, Space, Store, StoreError};
use crate::tallies::funnel::{self, Counts};

/// A delivery whose channel is not configured is looked at again after this (service clock).
pub(super) const UNCONFIGURED_RECHECK_MS: i64 = 60_000;

/// The configured senders; a channel without one keeps its deliveries pending.
#[derive(Default)]
pub struct Senders {
    pub line: Option<LineSender>,
    pub fcm: Option<FcmSender>,
    pub webhook: Option<WebhookSender>,
}

impl Senders {
    fn has(&self, channel: DeliveryChannel) -> bool {
        match channel {
            DeliveryChannel::Line => self.line.is_some(),
            DeliveryChannel::Push => self.fcm.is_some(),
            DeliveryChannel::Webhook => self.webhook.is_some(),
        }
    }
}

/// How the worker runs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub concurrency: usize,
    pub batch: usize,
    pub backoff: Backoff,
    /// Requests per second, per channel (LINE, push, webhook).
    pub rates: [u32; 3],
    /// A started attempt is taken up again after this (service clock) if its answer was never
    /// recorded (a crash mid-request).
    pub lease_ms: i64,
    /// The shard of the funnel and hourly counters this worker adds to (several instances on
    /// one database each keep their own rows); none: the one row of each.
    pub counter_shard: Option<u16>,
}

impl Settings {
    /// The counts of one of this worker's commits.
    fn counts(&self) -> Counts {
        self.counter_shard
            .map_or_else(Counts::default, Counts::in_shard)
    }
}

/// Where a delivery goes, read from the customer when it is attempted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Line(String),
    Push { install: String, token: String },
    Webhook(String),
}

/// An attempt recorded as started.
#[derive(Debug, Clone)]
pub struct Started {
    pub delivery: Delivery,
    pub target: Target,
    pub lease_due_ms: i64,
}

/// What one round found.
#[derive(Debug, Default)]
pub struct Taken {
    pub started: Vec<Started>,
    /// Rows settled without a request (expired, cancelled, no target) or rescheduled.
    pub settled: usize,
    /// The next due time after the ones taken, if any.
    pub next_due_ms: Option<i64>,
}

/// The customer's address on the channel, or why there is none (cancelled or failed).
fn target_of(
    store: &dyn Store,
    d: &Delivery,
) -> Result<Result<Target, (Status, String)>, StoreError> {
    let Some(c) = identity::customer(store, &d.customer)? else {
        return Ok(Err((Status::Cancelled, "the customer was erased".into())));
    };
    let consented = match d.channel {
        DeliveryChannel::Line => c.consent.line,
        DeliveryChannel::Push => c.consent.push,
        DeliveryChannel::Webhook => c.consent.webhook,
    };
    if !consented {
        return Ok(Err((Status::Cancelled, withdrawn(d.channel))));
    }
    Ok(match d.channel {
        DeliveryChannel::Line => c
            .line_user
            .map(Target::Line)
            .ok_or((Status::Failed, "the customer has no LINE user id".into())),
        DeliveryChannel::Webhook => c
            .member_id
            .map(Target::Webhook)
            .ok_or((Status::Failed, "the customer has no member id".into())),
        DeliveryChannel::Push => {
            // The newest install that still has a push token.
            let mut best: Option<identity::Install> = None;
            for id in &c.installs {
                if let Some(i) = identity::install(store, id)? {
                    if i.push_token.is_some()
                        && best.as_ref().is_none_or(|b| i.created >= b.created)
                    {
                        best = Some(i);
                    }
                }
            }
            best.and_then(|i| {
                Some(Target::Push {
                    install: i.id,
                    token: i.push_token?,
                })
            })
            .ok_or((Status::Failed, "no install with a valid push token".into()))
        }
    })
}

/// The reason a delivery on `channel` is cancelled after the customer withdrew consent.
fn withdrawn(channel: DeliveryChannel) -> String {
    format!("consent for {channel:?} withdrawn").to_lowercase()
}

/// Cancels, at once, the customer's deliveries still waiting (decided, or waiting for a retry)
/// on a channel they no longer consent to, each settled `cancelled` with the reason (the
/// worker's own check before every send stays as the backstop). Call after a consent change;
/// returns how many it cancelled. One being sent right now is left to its answer.
pub fn cancel_withdrawn(
    store: &dyn Store,
    customer: &identity::Customer,
    now_ms: i64,
) -> Result<usize, StoreError> {
    let consented = |ch: DeliveryChannel| match ch {
        DeliveryChannel::Line => customer.consent.line,
        DeliveryChannel::Push => customer.consent.push,
        DeliveryChannel::Webhook => customer.consent.webhook,
    };
    if [
        DeliveryChannel::Line,
        DeliveryChannel::Push,
        DeliveryChannel::Webhook,
    ]
    .into_iter()
    .all(consented)
    {
        return Ok(0);
    }
    let mut cancelled = 0;
    let mut from = super::keys::DUE.as_bytes().to_vec();
    loop {
        let page = crate::store::scan_prefix_from(
            store,
            Space::Campaigns,
            super::keys::DUE.as_bytes(),
            &from,
            1000,
        )?;
        let Some((last, _)) = page.last() else {
            return Ok(cancelled);
        };
        from = last.clone();
        from.push(0);
        for (key, _) in &page {
            let Some((_, id)) = parse_due(key) else {
                continue;
            };
            let Some((d, bytes)) = super::read(store, &id)? else {
                continue;
            };
            if d.customer != customer.id || d.status != Status::Pending || consented(d.channel) {
                continue;
            }
            let mut c = Commit::new();
            let mut counts = Counts::default();
            c.delete(Space::Campaigns, key.clone());
            let reason = withdrawn(d.channel);
            settle(
                (&mut c, &mut counts),
                d,
                bytes,
                Status::Cancelled,
                Some(reason),
                now_ms,
            );
            counts.write(store, &mut c)?;
            match store.commit(c) {
                Ok(()) => cancelled += 1,
                // The worker took it meanwhile: its own consent check decides.
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if page.len() < 1000 {
            return Ok(cancelled);
        }
    }
}

fn parse_due(key: &[u8]) -> Option<(i64, String)> {
    let rest = std::str::from_utf8(key)
        .ok()?
        .strip_prefix(super::keys::DUE)?;
    let (ms, id) = rest.split_once('/')?;
    Some((i64::from_str_radix(ms, 16).ok()?, id.to_owned()))
}

/// Gives `d` its final status (counted for the campaign's funnel and the metrics; a test
/// send only for the metrics).
pub(crate) fn settle(
    (c, counts): (&mut Commit, &mut Counts),
    mut d: Delivery,
    bytes: Vec<u8>,
    status: Status,
    reason: Option<String>,
    now_ms: i64,
) {
    // A test send counts in no funnel, report or tally.
    if !d.test {
        let metric = match (status, &reason) {
            (Status::Failed, Some(r)) => format!("failed:{}", funnel::reason_class(r)),
            _ => status_name(status).to_owned(),
        };
        counts.add(&d.campaign, &d.variant, &metric);
        if status == Status::Delivered && d.status != Status::Delivered {
            counts.add_counter(d.store_counter("delivered"));
        }
        counts.add_counter(super::keys::hourly_counter(
            super::hour_of(now_ms),
            channel_name(d.channel),
            status_name(status),
        ));
    }
    metrics::counter!("omo_deliveries_total", "channel" => channel_name(d.channel), "result" => status_name(status)).increment(1);
    d.status = status;
    d.reason = reason;
    d.done_ms = Some(now_ms);
    super::put(c, &d, Some(bytes));
}

pub(crate) fn channel_name(c: DeliveryChannel) -> &'static str {
    match c {
        DeliveryChannel::Line => "line",
        DeliveryChannel::Push => "push",
        DeliveryChannel::Webhook => "webhook",
    }
}

pub(crate) fn status_name(s: Status) -> &'static str {
    match s {
        Status::Pending => "pending",
        Status::Sending => "sending",
        Status::Delivered => "delivered",
        Status::Failed => "failed",
        Status::Expired => "expired",
        Status::Cancelled => "cancelled",
    }
}

/// Step 1: takes up to `batch` deliveries due at `now_ms`, settles those that need no request,
/// and records the others' attempts as started; commits and flushes.
pub fn take_due(
    store: &dyn Store,
    senders: &Senders,
    settings: &Settings,
    now_ms: i64,
) -> Result<Taken, StoreError> {
    let mut c = Commit::new();
    let mut counts = settings.counts();
    let mut taken = Taken::default();
    // Due now: keys below `due/{now + 1}`; the first one after tells when to look again.
    let now_end = format!(
        "{}{:016x}",
        super::keys::DUE,
        now_ms.saturating_add(1).max(0)
    );
    let page = store.scan_range(
        Space::Campaigns,
        super::keys::DUE.as_bytes(),
        now_end.as_bytes(),
        settings.batch,
    )?;
    if page.len() < settings.batch {
        taken.next_due_ms = crate::store::scan_prefix_from(
            store,
            Space::Campaigns,
            super::keys::DUE.as_bytes(),
            now_end.as_bytes(),
            1,
        )?
        .first()
        .and_then(|(k, _)| parse_due(k))
        .map(|(ms, _)| ms);
    }
    for (key, _) in page {
        let Some((_, id)) = parse_due(&key) else {
            tracing::error!(key = %String::from_utf8_lossy(&key), "unreadable due key removed");
            c.delete(Space::Campaigns, key);
            continue;
        };
        c.delete(Space::Campaigns, key);
        take_one(
            store,
            (senders, settings, now_ms),
            &id,
            (&mut c, &mut counts),
            &mut taken,
        )?;
    }
    counts.write(store, &mut c)?;
    if !c.is_empty() {
        store.commit(c)?;
        store.flush()?;
    }
    Ok(taken)
}

/// An attempt's answer, and whether FCM said the token is dead.
#[derive(Debug, Clone)]
pub struct Answered {
    pub started: Started,
    pub answer: Answer,
    pub unregistered: bool,
    /// The request was not made: the delivery expired while waiting for a send slot.
    pub expired_unsent: bool,
}

/// Step 3: records the answers at `now_ms`.
pub fn record(
    store: &dyn Store,
    settings: &Settings,
    answers: &[Answered],
    now_ms: i64,
) -> Result<(), StoreError> {
    let mut c = Commit::new();
    let mut counts = settings.counts();
    for a in answers {
        record_one(store, settings, a, now_ms, (&mut c, &mut counts))?;
    }
    counts.write(store, &mut c)?;
    if !c.is_empty() {
        store.commit(c)?;
    }
    Ok(())
}

fn describe(a: &Answer) -> String {
    match a {
        Answer::Status { code, message, .. } => format!("{code}: {message}"),
        Answer::NoAnswer(e) => format!("no answer: {e}"),
    }
}

/// Takes delivery `id`, due now: settles it if it needs no request (expired, no target),
/// looks at it again later if its channel is not configured, or records its attempt as
/// started with a lease.
fn take_one(
    store: &dyn Store,
    (senders, settings, now_ms): (&Senders, &Settings, i64),
    id: &str,
    (c, counts): (&mut Commit, &mut Counts),
    taken: &mut Taken,
) -> Result<(), StoreError> {
    let Some((mut d, bytes)) = super::read(store, id)? else {
        return Ok(());
    };
    if d.status.is_final() {
        return Ok(());
    }
    if now_ms >= d.expires_ms {
        let reason = match &d.reason {
            Some(last) if d.attempts > 0 => {
                format!("expired after {} attempts; last: {last}", d.attempts)
            }
            _ => "expired before it could be sent".into(),
        };
        settle((c, counts), d, bytes, Status::Expired, Some(reason), now_ms);
        taken.settled += 1;
        return Ok(());
    }
    let target = match target_of(store, &d)? {
        Ok(t) => t,
        Err((status, reason)) => {
            settle((c, counts), d, bytes, status, Some(reason), now_ms);
            taken.settled += 1;
            return Ok(());
        }
    };
    if !senders.has(d.channel) {
        d.reason = Some(format!(
            "the {} channel is not configured",
            channel_name(d.channel)
        ));
        super::put(c, &d, Some(bytes));
        c.put(
            Space::Campaigns,
            due_key(now_ms + UNCONFIGURED_RECHECK_MS, &d.id),
            Vec::new(),
        );
        taken.settled += 1;
        return Ok(());
    }
    d.status = Status::Sending;
    d.attempts += 1;
    let first = *d.first_attempt_ms.get_or_insert(now_ms);
    d.expires_ms = d.expires_ms.min(first + MAX_AFTER_FIRST_ATTEMPT_MS);
    d.last_attempt_ms = Some(now_ms);
    let lease_due_ms = now_ms + settings.lease_ms;
    super::put(c, &d, Some(bytes));
    c.put(Space::Campaigns, due_key(lease_due_ms, &d.id), Vec::new());
    taken.started.push(Started {
        delivery: d,
        target,
        lease_due_ms,
    });
    Ok(())
}

/// Records answer `a` at `now_ms`, unless its delivery was taken up again after its lease.
fn record_one(
    store: &dyn Store,
    settings: &Settings,
    a: &Answered,
    now_ms: i64,
    (c, counts): (&mut Commit, &mut Counts),
) -> Result<(), StoreError> {
    let d0 = &a.started.delivery;
    let Some((mut d, bytes)) = super::read(store, &d0.id)? else {
        return Ok(());
    };
    c.delete(Space::Campaigns, due_key(a.started.lease_due_ms, &d.id));
    if d.status != Status::Sending || d.attempts != d0.attempts {
        // Taken up again after its lease (a slow answer): the newer attempt records.
        return Ok(());
    }
    if a.expired_unsent {
        settle(
            (c, counts),
            d,
            bytes,
            Status::Expired,
            Some("expired waiting for a send slot".into()),
            now_ms,
        );
        return Ok(());
    }
    if a.unregistered {
        if let Target::Push { install, token } = &a.started.target {
            c.extend(identity::invalidate_push_token(store, install, token)?);
        }
    }
    let conflict = match d.channel {
        DeliveryChannel::Line => Conflict::MeansAccepted,
        DeliveryChannel::Push | DeliveryChannel::Webhook => Conflict::MeansBusy,
    };
    match after_attempt(
        &d.id,
        (d.attempts, conflict),
        &a.answer,
        now_ms,
        d.expires_ms,
        settings.backoff,
    ) {
        Next::Delivered => settle((c, counts), d, bytes, Status::Delivered, None, now_ms),
        Next::Failed { reason } => {
            settle((c, counts), d, bytes, Status::Failed, Some(reason), now_ms)
        }
        Next::Expired => {
            let reason = format!(
                "expired after {} attempts; last: {}",
                d.attempts,
                describe(&a.answer)
            );
            settle((c, counts), d, bytes, Status::Expired, Some(reason), now_ms);
        }
        Next::RetryAt { at_ms } => {
            d.status = Status::Pending;
            d.reason = Some(describe(&a.answer));
            metrics::counter!("omo_delivery_retries_total", "channel" => channel_name(d.channel))
                .increment(1);
            c.put(Space::Campaigns, due_key(at_ms, &d.id), Vec::new());
            super::put(c, &d, Some(bytes));
        }
    }
    Ok(())
}
