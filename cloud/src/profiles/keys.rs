//! The profiles space's key layouts (the only place they are spelled): `profile/{customer}`
//! → the row; `folded/{customer}/{purchase}` → present once a purchase was folded in (so one
//! sent again years later is not counted twice); `rule/{tag}` → a tag rule.

/// Every profile row's key starts so.
pub const PROFILES: &str = "profile/";
/// Every tag rule's key starts so.
pub const RULES: &str = "rule/";

/// Present once a purchase was folded into its customer's profile.
pub fn folded_key(customer: &str, purchase: &str) -> String {
    format!("{}{purchase}", folded_prefix(customer))
}

/// The start of a customer's folded purchases.
pub fn folded_prefix(customer: &str) -> String {
    format!("folded/{customer}/")
}

/// A customer's profile row.
pub fn profile_key(customer: &str) -> String {
    format!("{PROFILES}{customer}")
}

/// A tag's rule.
pub fn rule_key(tag: &str) -> String {
    format!("{RULES}{tag}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layouts stored data dirs hold: a change here is a format change.
    #[test]
    fn the_layouts_are_the_stored_ones() {
        assert_eq!(profile_key("c_1"), "profile/c_1");
        assert_eq!(folded_key("c_1", "p1"), "folded/c_1/p1");
        assert_eq!(rule_key("vip"), "rule/vip");
    }
}
