//! The visits space's key layouts (the only place they are spelled; the hour tallies
//! `tally/{store}/{hour}/{partition}` are `crate::tallies::hours`'s, and the visit stage's own engine
//! state, `state/`, `buffered/`, `journal/`, `watermark`, is spelled by its journal in
//! `stage/journal.rs`):
//!
//! - `visit/{id}` → the visit's row (`VisitRecord`);
//! - `by-customer/{customer}/{id}` → empty: a customer's visits;
//! - `by-scope/{zone/Z | store/S}/{entered_ms:016x}/{id}` → `customer` or `customer\tdwell_s`
//!   ([`scope_index_value`]): a scope's visits in time order, countable without their rows;
//! - `footfall/{zone/Z | store/S}/{hour_ms:016x}` → anonymous device minutes in the hour;
//! - `erase/{customer}` → an erasure asked of the stage, and what it removed once done
//!   (`stage/erasures.rs`).
//!
//! In the transitions space: `{partition prefix}{seq, 8 bytes big-endian}` → a transition as
//! JSON (empty: about an erased customer), numbered from 1 per partition in the order the
//! visit stage decided them; the prefix is [`Partition::key_prefix`] (`p003/`, none in a store
//! of one partition).

use super::engine::Scope;
use crate::cluster::Partition;
use crate::store::StoreError;

/// Transition `seq` of `partition`.
pub fn transition(partition: Partition, seq: u64) -> Vec<u8> {
    let mut k = partition.key_prefix();
    k.extend(seq.to_be_bytes());
    k
}

/// The seq of `partition`'s transition stored under `key`.
pub fn transition_seq(partition: Partition, key: &[u8]) -> Result<u64, StoreError> {
    let prefix = partition.key_prefix();
    key.strip_prefix(prefix.as_slice())
        .and_then(|seq| <[u8; 8]>::try_from(seq).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| {
            StoreError::backend(
                "transition key",
                format!("{} is not a seq of partition {partition}", hex::encode(key)),
            )
        })
}

/// Every scope index entry starts so.
pub const SCOPE_INDEX: &str = "by-scope/";
/// Every store's scope index entry starts so.
pub const STORE_SCOPE_INDEX: &str = "by-scope/store/";

/// A scope as key segments: `zone/{id}`, `store/{id}` or `online`.
pub fn scope_text(scope: &Scope) -> String {
    match scope {
        Scope::Zone(z) => format!("zone/{z}"),
        Scope::Store(s) => format!("store/{s}"),
        Scope::Online => "online".into(),
    }
}

/// The visit's row.
pub fn visit(id: &str) -> String {
    format!("visit/{id}")
}

/// Every erasure request starts so.
pub const ERASE_REQUESTS: &str = "erase/";

/// The erasure of `customer` asked of the visit stage.
pub fn erase_request(customer: &str) -> String {
    format!("{ERASE_REQUESTS}{customer}")
}

/// The start of a customer's visit list.
pub fn customer_prefix(customer: &str) -> String {
    format!("by-customer/{customer}/")
}

/// A visit in its customer's list.
pub fn of_customer(customer: &str, visit: &str) -> String {
    format!("{}{visit}", customer_prefix(customer))
}

/// The start of a scope's index.
pub fn scope_prefix(scope: &Scope) -> String {
    format!("{SCOPE_INDEX}{}/", scope_text(scope))
}

/// A visit in its scope's index, by the time it began.
pub fn in_scope(scope: &Scope, entered_ms: i64, visit: &str) -> String {
    format!("{}{entered_ms:016x}/{visit}", scope_prefix(scope))
}

/// What a scope index entry holds, so counting visits needs no visit row: the customer, and
/// the dwell once the visit ended (`customer` or `customer\tdwell_s`; empty in entries
/// written before it held anything).
pub fn scope_index_value(customer: &str, dwell_s: Option<u64>) -> Vec<u8> {
    match dwell_s {
        Some(d) => format!("{customer}\t{d}").into_bytes(),
        None => customer.as_bytes().to_vec(),
    }
}

/// The customer and dwell a scope index entry holds (`None`: an empty, older entry).
pub fn parse_scope_index_value(value: &[u8]) -> Option<(String, Option<u64>)> {
    if value.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(value);
    Some(match text.split_once('\t') {
        Some((customer, d)) => (customer.to_owned(), d.parse().ok()),
        None => (text.into_owned(), None),
    })
}

/// The start of a scope's footfall hours (`scope`: [`scope_text`]).
pub fn footfall_prefix(scope: &str) -> String {
    format!("footfall/{scope}/")
}

/// A scope's footfall in the hour beginning at `hour_ms`.
pub fn footfall(scope: &str, hour_ms: i64) -> String {
    format!("{}{hour_ms:016x}", footfall_prefix(scope))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layouts stored data dirs hold: a change here is a format change.
    #[test]
    fn the_layouts_are_the_stored_ones() {
        let store = Scope::Store("s1".into());
        assert_eq!(visit("v_1"), "visit/v_1");
        assert_eq!(of_customer("c_1", "v_1"), "by-customer/c_1/v_1");
        assert_eq!(
            in_scope(&store, 0x10, "v_1"),
            "by-scope/store/s1/0000000000000010/v_1"
        );
        assert!(in_scope(&store, 1, "v").starts_with(STORE_SCOPE_INDEX));
        assert_eq!(scope_prefix(&Scope::Zone("z".into())), "by-scope/zone/z/");
        assert_eq!(
            footfall("store/s1", 0x20),
            "footfall/store/s1/0000000000000020"
        );
        assert_eq!(
            parse_scope_index_value(&scope_index_value("c_1", Some(90))),
            Some(("c_1".into(), Some(90)))
        );
        assert_eq!(parse_scope_index_value(b""), None);
        assert_eq!(erase_request("c_1"), "erase/c_1");
        assert!(erase_request("c_1").starts_with(ERASE_REQUESTS));
        let whole = Partition::new(0, 1);
        assert_eq!(transition(whole, 0x0102), [0, 0, 0, 0, 0, 0, 1, 2]);
        let third = Partition::new(3, 16);
        assert_eq!(transition(third, 0x0102), b"p003/\0\0\0\0\0\0\x01\x02");
        assert_eq!(transition_seq(third, &transition(third, 7)).unwrap(), 7);
        assert!(transition_seq(third, &transition(whole, 7)).is_err());
    }
}
