//! The purchases space's key layouts (the only place they are spelled; the hour tallies
//! `tally/{place}/{hour}` are `crate::tallies::hours`'s):
//!
//! - `purchase/{id}` → a purchase;
//! - `by-customer/{customer}/{at_ms:016x}/{id}` → empty: a customer's purchases;
//! - `by-store/{store}/{at_ms:016x}/{id}` and `online/{at_ms:016x}/{id}` → empty: a store's
//!   purchases, and the online shop's, in time order;
//!
//! and in the meta space `ecommerce-key/{id}` → the SHA-256 of an e-commerce key's secret.

/// Every purchase row's key starts so.
pub const PURCHASES: &str = "purchase/";
/// Every store index entry's key starts so.
pub const STORE_INDEX: &str = "by-store/";

/// A purchase's row.
pub fn row(id: &str) -> String {
    format!("{PURCHASES}{id}")
}

/// The start of a customer's purchases.
pub fn customer_prefix(customer: &str) -> String {
    format!("by-customer/{customer}/")
}

/// The first key after a customer's purchases (`0` follows `/`).
pub fn customer_end(customer: &str) -> String {
    format!("by-customer/{customer}0")
}

/// A purchase in its customer's list.
pub fn of_customer(customer: &str, at_ms: i64, id: &str) -> String {
    format!("{}{:016x}/{id}", customer_prefix(customer), at_ms.max(0))
}

/// The start of a place's purchases: a store's, or the online shop's (`None`).
pub fn place_prefix(store: Option<&str>) -> String {
    match store {
        Some(s) => format!("{STORE_INDEX}{s}/"),
        None => "online/".into(),
    }
}

/// A purchase in its place's index.
pub fn at_place(store: Option<&str>, at_ms: i64, id: &str) -> String {
    format!("{}{:016x}/{id}", place_prefix(store), at_ms.max(0))
}

/// Every e-commerce key's entry (in the meta space) starts so.
pub const SHOP_KEYS: &str = "ecommerce-key/";

/// An e-commerce key's entry in the meta space.
pub fn shop_key(id: &str) -> String {
    format!("{SHOP_KEYS}{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layouts stored data dirs hold: a change here is a format change.
    #[test]
    fn the_layouts_are_the_stored_ones() {
        assert_eq!(row("p_1"), "purchase/p_1");
        assert_eq!(
            of_customer("c_1", 16, "p_1"),
            "by-customer/c_1/0000000000000010/p_1"
        );
        assert!(customer_end("c_1").as_str() > of_customer("c_1", i64::MAX, "p").as_str());
        assert!(customer_end("c_1").as_str() < customer_prefix("c_10").as_str());
        assert_eq!(
            at_place(Some("s1"), 16, "p_1"),
            "by-store/s1/0000000000000010/p_1"
        );
        assert_eq!(at_place(None, 16, "p_1"), "online/0000000000000010/p_1");
        assert_eq!(shop_key("ek_1"), "ecommerce-key/ek_1");
    }
}
