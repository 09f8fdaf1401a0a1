//! Faults the fake servers inject on demand, in order: each applies to the next `count`
//! requests.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Faults to inject into the next `count` requests.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// 429 or 5xx; 0 for latency only.
    #[serde(default)]
    pub status: u16,
    pub count: u32,
    #[serde(default)]
    pub retry_after_s: Option<u32>,
    #[serde(default)]
    pub latency_ms: u64,
}

/// The queue of faults still to inject.
#[derive(Debug, Default)]
pub struct Faults(VecDeque<Fault>);

impl Faults {
    pub fn push(&mut self, f: Fault) {
        if f.count > 0 {
            self.0.push_back(f);
        }
    }

    /// The fault for the next request, if any (using up one of its count).
    pub fn take(&mut self) -> Option<Fault> {
        let front = self.0.front_mut()?;
        let fault = *front;
        front.count -= 1;
        if front.count == 0 {
            self.0.pop_front();
        }
        Some(fault)
    }
}

/// Wall time, Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Applies `fault`'s latency to a request and gives back the fault (whose status, if any, the
/// fake answers in its own service's error format).
pub async fn delayed(fault: Option<Fault>) -> Option<Fault> {
    let f = fault?;
    if f.latency_ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(f.latency_ms)).await;
    }
    Some(f)
}

/// `response` with the fault's `Retry-After`, if it has one.
pub fn with_retry_after(
    mut response: axum::response::Response,
    fault: &Fault,
) -> axum::response::Response {
    if let Some(after) = fault.retry_after_s {
        response.headers_mut().insert("retry-after", after.into());
    }
    response
}
