//! The identity space's key layouts (the only place they are spelled):
//!
//! - `customer/{id}` → a customer; `install/{id}` → an app install;
//! - indexes to the customer id: `member/{member id}`, `line/{LINE user id}`,
//!   `beacon/{beacon id}`, `eid/{identity key}`;
//! - `erasing/{id}` → an erasure under way;
//! - `line-nonce/{nonce}` → a LINE account-link nonce waiting for its `accountLink` event.

/// Every customer's key starts so.
pub const CUSTOMERS: &str = "customer/";
/// Every EID index entry's key starts so.
pub const EIDS: &str = "eid/";
/// Every LINE account-link nonce's key starts so.
pub const LINE_NONCES: &str = "line-nonce/";

/// A customer's record.
pub fn customer(id: &str) -> String {
    format!("{CUSTOMERS}{id}")
}

/// An app install's record.
pub fn install(id: &str) -> String {
    format!("install/{id}")
}

/// The index entry of a member id.
pub fn member(member_id: &str) -> String {
    format!("member/{member_id}")
}

/// The index entry of a LINE user id.
pub fn line_user(user: &str) -> String {
    format!("line/{user}")
}

/// The index entry of a beacon id a customer carries (its canonical text).
pub fn beacon(beacon: &str) -> String {
    format!("beacon/{beacon}")
}

/// The index entry of an Eddystone-EID identity key.
pub fn eid(identity_key: &str) -> String {
    format!("{EIDS}{identity_key}")
}

/// An erasure under way.
pub fn erasing(id: &str) -> String {
    format!("erasing/{id}")
}

/// A LINE account-link nonce.
pub fn line_nonce(nonce: &str) -> String {
    format!("{LINE_NONCES}{nonce}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layouts stored data dirs hold: a change here is a format change.
    #[test]
    fn the_layouts_are_the_stored_ones() {
        assert_eq!(customer("c_1"), "customer/c_1");
        assert_eq!(install("i_1"), "install/i_1");
        assert_eq!(member("m1"), "member/m1");
        assert_eq!(line_user("U1"), "line/U1");
        assert_eq!(beacon("b"), "beacon/b");
        assert_eq!(eid("k"), "eid/k");
        assert_eq!(erasing("c_1"), "erasing/c_1");
        assert_eq!(line_nonce("n"), "line-nonce/n");
    }
}
