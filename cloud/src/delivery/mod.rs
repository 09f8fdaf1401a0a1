//! Delivery (DESIGN.md, "Delivery"): the outbox rows the decision stage writes, the pure rules
//! the senders follow — what an attempt's answer means and when to try again ([`retry`]), the
//! per-channel rate limit ([`rate`]) —, the senders (LINE push [`line`], FCM HTTP v1 [`fcm`],
//! the brand's webhook [`webhook`]) and the worker that drives them ([`worker`]).
//!
//! Keys in the campaigns space: `delivery/{id}` the row; `due/{ms:016x}/{id}` when the worker
//! should look at it next (present while it is pending or being sent); `coupon/{code}` the
//! delivery that carries a coupon code; `click/{token}` the delivery a tracked link belongs to,
//! `clicked/{id}` when that link was first followed; `by-store/{store}/{ms:016x}/{id}` the
//! deliveries of a store by the time they were decided (reports); `test-send/{campaign}/
//! {ms:016x}/{id}` a campaign's test sends (counted nowhere else);
//! `hourly/{hour_ms:016x}/[@{shard:04x}/]{channel}/{status}` how many ended so each hour (the
//! overview; a row per worker shard on a shared database);
//! `at-store/…` the store reports' counters ([`crate::tallies::hours`]).

mod clicks;
pub mod fcm;
mod forget;
pub mod keys;
pub mod line;
mod outbox;
pub mod rate;
pub mod retry;
pub mod webhook;
pub mod worker;

use serde::{Deserialize, Serialize};

use crate::store::{Commit, Space, Store, StoreError};
use crate::tallies::funnel::CounterKey;
pub use clicks::click;
pub use forget::{expire, expire_hours, forget, of_customer, Forgotten};
pub use keys::{
    click_key, clicked_key, coupon_key, due_key, hourly_key, row_key, store_index_key,
    test_index_key,
};
pub(crate) use outbox::{channel_name, status_name};

/// How an offer reaches a customer: a LINE push, an app push (FCM), or the brand's webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryChannel {
    Line,
    Push,
    Webhook,
}

/// LINE keeps a retry key for 24 h: a delivery is never attempted later than this after its
/// first attempt.
pub const MAX_AFTER_FIRST_ATTEMPT_MS: i64 = 23 * 3_600_000;

/// Where a delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Waiting for its next attempt.
    Pending,
    /// An attempt was recorded as started; its answer is not recorded yet.
    Sending,
    Delivered,
    /// For good, with the reason.
    Failed,
    /// Past its expiry before it was delivered.
    Expired,
    /// The customer withdrew consent for the channel (or was erased) before it was delivered.
    Cancelled,
}

impl Status {
    /// Whether the worker is done with it.
    pub fn is_final(self) -> bool {
        !matches!(self, Status::Pending | Status::Sending)
    }
}

/// A message to deliver, written with the decision that sent it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: String,
    pub trigger_key: String,
    /// Sent on every attempt; the channel keeps one accepted request per key.
    pub retry_key: String,
    pub campaign: String,
    pub variant: String,
    pub channel: DeliveryChannel,
    pub customer: String,
    /// The store whose visit triggered it.
    pub store: String,
    pub text: String,
    /// LINE: a flex message's contents, sent after the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flex: Option<serde_json::Value>,
    pub coupon: String,
    pub decided_ms: i64,
    /// Not attempted at or after this: the offer's time-to-live, lowered at the first attempt
    /// to that attempt + 23 h.
    pub expires_ms: i64,
    pub status: Status,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub first_attempt_ms: Option<i64>,
    #[serde(default)]
    pub last_attempt_ms: Option<i64>,
    /// When it reached a final status.
    #[serde(default)]
    pub done_ms: Option<i64>,
    /// Why it failed, expired or was cancelled; the last retryable answer while pending.
    #[serde(default)]
    pub reason: Option<String>,
    /// Where its tracked link leads, and the link's token (`GET /r/{token}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub click: Option<String>,
    /// A test send (`POST /v1/admin/campaigns/{id}/test`): sent through the real channel but
    /// counted in no funnel, report or tally, listed apart (`test-send/…`), and its coupon is
    /// not taken at the till.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub test: bool,
}

/// The hour `ms` falls in.
pub fn hour_of(ms: i64) -> i64 {
    ms.div_euclid(3_600_000) * 3_600_000
}

impl Delivery {
    /// Its counter of `metric` in its store's report tallies (by the hour it was decided).
    pub fn store_counter(&self, metric: &str) -> CounterKey {
        crate::tallies::hours::counter(&self.store, self.decided_ms, &self.campaign, metric)
    }

    /// Its entry in the index it is listed by: its store's, or its campaign's test sends'.
    pub fn index_key(&self) -> String {
        if self.test {
            test_index_key(&self.campaign, self.decided_ms, &self.id)
        } else {
            store_index_key(&self.store, self.decided_ms, &self.id)
        }
    }
}

/// The delivery row `id`, with its stored bytes (for a commit that expects them unchanged).
pub fn read(store: &dyn Store, id: &str) -> Result<Option<(Delivery, Vec<u8>)>, StoreError> {
    match store.get(Space::Campaigns, row_key(id).as_bytes())? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(|d| Some((d, bytes)))
            .map_err(|e| StoreError::Backend(format!("delivery row {id}: {e}"))),
    }
}

/// Adds to `c` a new delivery for the worker: its row, its due entry (at its decision), its
/// place in its store's index (a test send's: in its campaign's test sends), its coupon code (expected unused: the commit conflicts if
/// another delivery took it) and its tracked link's token.
pub fn enqueue(c: &mut Commit, d: &Delivery) {
    if let Some(token) = &d.click {
        c.put(Space::Campaigns, click_key(token), d.id.clone());
    }
    c.put(
        Space::Campaigns,
        row_key(&d.id),
        serde_json::to_vec(d).expect("deliveries serialise"),
    );
    c.put(Space::Campaigns, due_key(d.decided_ms, &d.id), Vec::new());
    c.put(Space::Campaigns, d.index_key(), Vec::new());
    c.expect(Space::Campaigns, coupon_key(&d.coupon), None);
    c.put(Space::Campaigns, coupon_key(&d.coupon), d.id.clone());
}

/// Writes `d` (a new row, or a change expected over `previous`).
pub fn put(c: &mut Commit, d: &Delivery, previous: Option<Vec<u8>>) {
    let key = row_key(&d.id);
    c.expect(Space::Campaigns, key.clone(), previous);
    c.put(
        Space::Campaigns,
        key,
        serde_json::to_vec(d).expect("deliveries serialise"),
    );
}

/// What an HTTP attempt came to, for [`retry::after_attempt`]: the status, `Retry-After` in
/// seconds, and the service's own message (`message_of` picks it out of a JSON body).
pub(crate) async fn answer_of(
    result: Result<reqwest::Response, reqwest::Error>,
    message_of: fn(&serde_json::Value) -> Option<String>,
) -> retry::Answer {
    let response = match result {
        Ok(r) => r,
        Err(e) => return retry::Answer::NoAnswer(e.to_string()),
    };
    let code = response.status().as_u16();
    let retry_after_s = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let body = response.bytes().await.unwrap_or_default();
    let message = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| message_of(&v))
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned());
    retry::Answer::Status {
        code,
        retry_after_s,
        message,
    }
}
