//! The campaigns' key layouts in the campaigns space (the only place they are spelled; the
//! delivery rows are `crate::delivery::keys`'s, the funnel counters `crate::tallies`'s):
//!
//! - `campaign/{id}` → the current version, `version/{id}/{version:08}` → each version;
//! - `decision/{key}` → a decision, once per (campaign, trigger);
//! - `history/{customer}/{at_ms:016x}/{campaign}` → empty: a send the caps count;
//! - `budget/{campaign}` → the budget's units handed out, `budget/{campaign}/@{shard:04x}` →
//!   a shard's slice of them (allotted, spent);
//! - `analysis-link/{campaign}/{customer}` → the customer's analysis id, and
//!   `analysis/{campaign}/{analysis id}` → their analysis row.

/// Every decision's key starts so.
pub const DECISIONS: &str = "decision/";
/// Every send history's key starts so.
pub const HISTORY: &str = "history/";

/// Every campaign's current version's key starts so.
pub const CAMPAIGNS: &str = "campaign/";

/// A campaign's current version.
pub fn current(id: &str) -> Vec<u8> {
    format!("{CAMPAIGNS}{id}").into_bytes()
}

/// One version of a campaign.
pub fn version(id: &str, version: u32) -> Vec<u8> {
    format!("version/{id}/{version:08}").into_bytes()
}

/// The decision stored under `key` (the stage derives it from the campaign and the trigger).
pub fn decision(key: &str) -> String {
    format!("{DECISIONS}{key}")
}

/// The start of a customer's send history.
pub fn history_prefix(customer: &str) -> String {
    format!("{HISTORY}{customer}/")
}

/// A send in a customer's history.
pub fn history(customer: &str, at_ms: i64, campaign: &str) -> String {
    format!(
        "{}{:016x}/{campaign}",
        history_prefix(customer),
        at_ms.max(0)
    )
}

/// A campaign's budget: the units handed out (`crate::campaigns::stage` spends them).
pub fn budget(campaign: &str) -> String {
    format!("budget/{campaign}")
}

/// The start of a campaign's budget slices.
pub fn budget_slices(campaign: &str) -> String {
    format!("{}/{}", budget(campaign), crate::tallies::funnel::SHARD)
}

/// The budget slice `shard` spends from.
pub fn budget_slice(campaign: &str, shard: u16) -> String {
    format!(
        "{}/{}",
        budget(campaign),
        crate::tallies::funnel::shard_segment(shard)
    )
}

/// A customer's link to their analysis row in a campaign.
pub fn analysis_link(campaign: &str, customer: &str) -> String {
    format!("analysis-link/{campaign}/{customer}")
}

/// Every analysis row's key starts so.
pub const ANALYSES: &str = "analysis/";

/// The start of a campaign's analysis rows.
pub fn analysis_prefix(campaign: &str) -> String {
    format!("{ANALYSES}{campaign}/")
}

/// An analysis row.
pub fn analysis(campaign: &str, analysis: &str) -> String {
    format!("{}{analysis}", analysis_prefix(campaign))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layouts stored data dirs hold: a change here is a format change.
    #[test]
    fn the_layouts_are_the_stored_ones() {
        assert_eq!(current("w"), b"campaign/w");
        assert_eq!(version("w", 3), b"version/w/00000003");
        assert_eq!(decision("k"), "decision/k");
        assert_eq!(history("c_1", 0x10, "w"), "history/c_1/0000000000000010/w");
        assert_eq!(budget("w"), "budget/w");
        assert_eq!(budget_slice("w", 10), "budget/w/@000a");
        assert!(budget_slice("w", 10).starts_with(&budget_slices("w")));
        assert_eq!(analysis_link("w", "c_1"), "analysis-link/w/c_1");
        assert_eq!(analysis("w", "a1"), "analysis/w/a1");
    }
}
