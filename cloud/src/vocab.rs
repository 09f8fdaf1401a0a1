//! Words every part of the cloud shares, kept below them all so none has to import another
//! concept's module for them.

use serde::{Deserialize, Serialize};

/// Where a purchase was made: at a store's till or in the brand's online shop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SaleChannel {
    Store,
    Online,
}

/// The `customer` a stored JSON row about a person names (transitions, decisions,
/// deliveries). A row that cannot be read is skipped with a warning, never a reason to stop
/// an erasure that looks for a customer's rows: `what` names the row in the warning.
pub fn customer_of(what: &str, row: &[u8]) -> Option<String> {
    match serde_json::from_slice::<serde_json::Value>(row) {
        Ok(v) => v["customer"].as_str().map(str::to_owned),
        Err(e) => {
            tracing::warn!(error = %e, "unreadable {what} skipped by an erasure");
            None
        }
    }
}

/// The time zone an IANA name (`Asia/Tokyo`) names, if it names one: stores, the dashboard,
/// profiles and campaign schedules all name theirs so.
pub fn time_zone(name: &str) -> Option<chrono_tz::Tz> {
    name.parse().ok()
}
