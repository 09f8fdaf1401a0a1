//! The delivery rows' key layouts in the campaigns space (the only place they are spelled):
//! `delivery/{id}` → a row; `due/{at_ms:016x}/{id}` → the worker's queue; `coupon/{code}` →
//! the delivery a coupon came with, and `redemption/{code}` → its redemption; `click/{token}`
//! → the delivery a tracked link belongs to, `clicked/{id}` once it was followed;
//! `by-store/{store}/{decided_ms:016x}/{id}` → a store's deliveries;
//! `test-send/{campaign}/{decided_ms:016x}/{id}` → a campaign's test sends; `hourly/{hour_ms:016x}/
//! {channel}/{status}` → a counter of outcomes per hour (`hourly/{hour_ms:016x}/@{shard:04x}/…`
//! a worker's shard of it, `crate::tallies::funnel::CounterKey`).

use crate::tallies::funnel::CounterKey;

/// Every delivery row's key starts so.
pub const DELIVERIES: &str = "delivery/";
/// Every hourly outcome counter's key starts so.
pub const HOURLY: &str = "hourly/";
/// Every store index entry's key starts so.
pub const STORE_INDEX: &str = "by-store/";
/// Every test send's index entry starts so.
pub const TEST_INDEX: &str = "test-send/";
/// Every due entry's key starts so.
pub const DUE: &str = "due/";

/// A delivery's row.
pub fn row_key(id: &str) -> String {
    format!("{DELIVERIES}{id}")
}

/// A delivery due for an attempt at `at_ms`.
pub fn due_key(at_ms: i64, id: &str) -> String {
    format!("{DUE}{:016x}/{id}", at_ms.max(0))
}

/// The delivery a coupon code was issued with.
pub fn coupon_key(code: &str) -> String {
    format!("coupon/{code}")
}

/// The delivery a tracked link's token belongs to.
pub fn click_key(token: &str) -> String {
    format!("click/{token}")
}

/// A delivery in its store's index, by the time it was decided (`online` for online
/// purchases).
pub fn store_index_key(store: &str, decided_ms: i64, id: &str) -> String {
    format!("{STORE_INDEX}{store}/{:016x}/{id}", decided_ms.max(0))
}

/// A test send of `campaign`, by the time it was made.
pub fn test_index_key(campaign: &str, decided_ms: i64, id: &str) -> String {
    format!("{}{:016x}/{id}", test_prefix(campaign), decided_ms.max(0))
}

/// Where `campaign`'s test sends are listed (ending in `/`).
pub fn test_prefix(campaign: &str) -> String {
    format!("{TEST_INDEX}{campaign}/")
}

/// The delivery id an index entry (store or test sends) ends with.
pub fn indexed_id(key: &[u8]) -> Option<&str> {
    std::str::from_utf8(key).ok()?.rsplit('/').next()
}

/// How many deliveries on `channel` ended with `status` in the hour starting at `hour_ms` (a
/// counter: the overview's offers and failures today).
pub fn hourly_key(hour_ms: i64, channel: &str, status: &str) -> String {
    hourly_counter(hour_ms, channel, status).key(None)
}

/// The same counter, to be kept by shard (`hourly/{hour_ms:016x}/@{shard:04x}/…`).
pub fn hourly_counter(hour_ms: i64, channel: &str, status: &str) -> CounterKey {
    CounterKey::new(
        format!("{HOURLY}{:016x}/", hour_ms.max(0)),
        format!("{channel}/{status}"),
    )
}

/// When a delivery's link was first followed (present once it was).
pub fn clicked_key(id: &str) -> String {
    format!("clicked/{id}")
}

/// A coupon's redemption (present once it was redeemed).
pub fn redemption_key(code: &str) -> String {
    format!("redemption/{code}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layouts stored data dirs hold: a change here is a format change.
    #[test]
    fn the_layouts_are_the_stored_ones() {
        assert_eq!(row_key("d1"), "delivery/d1");
        assert_eq!(due_key(0x10, "d1"), "due/0000000000000010/d1");
        assert_eq!(due_key(-5, "d1"), "due/0000000000000000/d1");
        assert_eq!(coupon_key("C"), "coupon/C");
        assert_eq!(redemption_key("C"), "redemption/C");
        assert_eq!(click_key("t"), "click/t");
        assert_eq!(clicked_key("d1"), "clicked/d1");
        assert_eq!(
            test_index_key("c1", 0x10, "d1"),
            "test-send/c1/0000000000000010/d1"
        );
        assert_eq!(
            store_index_key("s1", 0x10, "d1"),
            "by-store/s1/0000000000000010/d1"
        );
        assert_eq!(
            hourly_key(0x10, "line", "delivered"),
            "hourly/0000000000000010/line/delivered"
        );
    }
}
