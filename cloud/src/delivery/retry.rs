//! What to do after a delivery attempt (pure): delivered, failed for good with the reason, or
//! try again at a given time — capped exponential backoff with jitter, honouring the server's
//! `Retry-After`, and never past the delivery's expiry (DESIGN.md, "Delivery").
//!
//! Rules per channel answer: 2xx delivered; LINE 409 on a retried request means the retry key
//! was already accepted — delivered (elsewhere a 409 means the key is still being processed:
//! retry); 429 and 5xx (and no answer at all) retry; any other 4xx fails for good with the
//! service's message.

use serde::{Deserialize, Serialize};

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Status {
        code: u16,
        retry_after_s: Option<u64>,
        message: String,
    },
    /// No HTTP answer (connection refused, timeout).
    NoAnswer(String),
}

/// What happens next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "next", rename_all = "snake_case")]
pub enum Next {
    Delivered,
    Failed { reason: String },
    Expired,
    RetryAt { at_ms: i64 },
}

/// Backoff bounds.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub first_ms: i64,
    pub max_ms: i64,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            first_ms: 1_000,
            max_ms: 300_000,
        }
    }
}

/// A deterministic jitter in [0.5, 1.0] of the delay, from the delivery id and attempt, so a
/// replay schedules the same retry and many deliveries do not retry in step.
fn jitter(delivery: &str, attempt: u32) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in delivery.bytes().chain(attempt.to_be_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    0.5 + (h % 1_000) as f64 / 2_000.0
}

/// How a channel answers a repeated idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    /// LINE: 409 = that retry key was already accepted.
    MeansAccepted,
    /// Webhooks: 409 = a request with that key is still being processed.
    MeansBusy,
}

/// Decides after attempt number `attempt` (1 for the first) of `delivery`, answered `answer`
/// at `now_ms`; `expires_ms` is the delivery's expiry.
pub fn after_attempt(
    delivery: &str,
    (attempt, conflict): (u32, Conflict),
    answer: &Answer,
    now_ms: i64,
    expires_ms: i64,
    backoff: Backoff,
) -> Next {
    let retry_after_ms = match answer {
        Answer::Status { code, .. } if (200..300).contains(code) => return Next::Delivered,
        Answer::Status { code: 409, .. } if attempt > 1 && conflict == Conflict::MeansAccepted => {
            return Next::Delivered
        }
        Answer::Status {
            code,
            retry_after_s,
            ..
        } if *code == 429 || *code >= 500 || (*code == 409 && conflict == Conflict::MeansBusy) => {
            retry_after_s.map(|s| i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX))
        }
        Answer::Status { code, message, .. } => {
            return Next::Failed {
                reason: format!("{code}: {}", message.chars().take(300).collect::<String>()),
            }
        }
        Answer::NoAnswer(_) => None,
    };
    let exp = backoff
        .first_ms
        .saturating_mul(1i64 << attempt.saturating_sub(1).min(20))
        .min(backoff.max_ms);
    let delay = ((exp as f64) * jitter(delivery, attempt)) as i64;
    let at_ms = now_ms.saturating_add(delay.max(retry_after_ms.unwrap_or(0)));
    if at_ms >= expires_ms {
        Next::Expired
    } else {
        Next::RetryAt { at_ms }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const L: Conflict = Conflict::MeansAccepted;

    fn status(code: u16, retry_after_s: Option<u64>) -> Answer {
        Answer::Status {
            code,
            retry_after_s,
            message: "m".into(),
        }
    }

    #[test]
    fn answers_are_classified_as_line_and_fcm_mean_them() {
        let b = Backoff::default();
        assert_eq!(
            after_attempt("d", (1, L), &status(200, None), 0, 1_000_000, b),
            Next::Delivered
        );
        assert_eq!(
            after_attempt("d", (2, L), &status(409, None), 0, 1_000_000, b),
            Next::Delivered,
            "409 on a retry: already accepted"
        );
        assert!(matches!(
            after_attempt("d", (1, L), &status(409, None), 0, 1_000_000, b),
            Next::Failed { .. }
        ));
        assert!(
            matches!(
                after_attempt(
                    "d",
                    (2, Conflict::MeansBusy),
                    &status(409, None),
                    0,
                    1_000_000,
                    b
                ),
                Next::RetryAt { .. }
            ),
            "a webhook's 409: still processing"
        );
        assert!(
            matches!(after_attempt("d", (1, L), &status(400, None), 0, 1_000_000, b), Next::Failed { reason } if reason.starts_with("400"))
        );
        assert!(matches!(
            after_attempt("d", (1, L), &status(500, None), 0, 1_000_000, b),
            Next::RetryAt { .. }
        ));
        assert!(matches!(
            after_attempt(
                "d",
                (1, L),
                &Answer::NoAnswer("refused".into()),
                0,
                1_000_000,
                b
            ),
            Next::RetryAt { .. }
        ));
        // Retry-After is honoured even when longer than the backoff.
        assert_eq!(
            after_attempt("d", (1, L), &status(429, Some(30)), 0, 1_000_000, b),
            Next::RetryAt { at_ms: 30_000 }
        );
        // Nothing is scheduled past the expiry.
        assert_eq!(
            after_attempt("d", (1, L), &status(429, Some(30)), 0, 10_000, b),
            Next::Expired
        );
    }

    proptest! {
        /// Delays grow to the cap, stay within half to all of it, and repeat exactly on replay.
        #[test]
        fn backoff_is_capped_jittered_and_deterministic(attempt in 1u32..40, id in "[a-f0-9]{8}") {
            let b = Backoff::default();
            let Next::RetryAt { at_ms } = after_attempt(&id, (attempt, L), &status(503, None), 0, i64::MAX, b) else {
                panic!("a 503 retries");
            };
            let full = (b.first_ms << (attempt - 1).min(20)).min(b.max_ms);
            prop_assert!(at_ms >= full / 2 && at_ms <= full, "{at_ms} vs {full}");
            prop_assert_eq!(after_attempt(&id, (attempt, L), &status(503, None), 0, i64::MAX, b), Next::RetryAt { at_ms });
        }
    }
}
