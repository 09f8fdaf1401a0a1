//! The dedup space's key layouts and values (the only place they are spelled): ingest stores
//! an event id it has taken with the records it came with, so the same event sent again is
//! answered without being stored twice.
//!
//! - `app/{install}/{idempotency key}` → the answer an app report was given;
//! - `line/{webhook event id}` → a LINE webhook event taken;
//! - `purchase/{purchase id}` → a purchase taken;
//!
//! each value a JSON object with the time it was written, `at` in ms ([`processed_id_value`]).

/// An app report's idempotency key, per install.
pub fn app_request(install: &str, key: &str) -> Vec<u8> {
    format!("{}{key}", app_prefix(install)).into_bytes()
}

/// The start of an install's idempotency keys.
pub fn app_prefix(install: &str) -> String {
    format!("app/{install}/")
}

/// A LINE webhook event's id.
pub fn line_event(event_id: &str) -> Vec<u8> {
    format!("line/{event_id}").into_bytes()
}

/// A purchase's id.
pub fn purchase(id: &str) -> Vec<u8> {
    format!("purchase/{id}").into_bytes()
}

/// A value of the dedup space with the time it was written (`at`, ms): what ingest stores for
/// a processed event id.
pub fn processed_id_value(mut answer: serde_json::Value, now_ms: i64) -> Vec<u8> {
    answer["at"] = serde_json::json!(now_ms);
    serde_json::to_vec(&answer).expect("json values serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layouts stored data dirs hold: a change here is a format change.
    #[test]
    fn the_layouts_are_the_stored_ones() {
        assert_eq!(app_request("i_1", "k"), b"app/i_1/k");
        assert_eq!(line_event("e"), b"line/e");
        assert_eq!(purchase("p"), b"purchase/p");
        assert_eq!(
            processed_id_value(serde_json::json!({"accepted": true}), 5),
            br#"{"accepted":true,"at":5}"#
        );
    }
}
