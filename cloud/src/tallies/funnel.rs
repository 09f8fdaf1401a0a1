//! A campaign's funnel: counters per (campaign, group, metric) — `funnel/{campaign}/{group}/
//! {metric}` in the campaigns space, big-endian u64s — that the campaign stage, the delivery
//! worker, tracked links and redemptions add to in the commits that store what they count.
//! The campaign report (`crate::campaigns::report`) reads them back.

use std::collections::BTreeMap;

use crate::store::{Commit, Space, Store, StoreError};

/// The counter of `metric` (`decided`, `delivered`, `failed:…`, …) for `group` in `campaign`.
pub fn funnel_key(campaign: &str, group: &str, metric: &str) -> String {
    format!("{}{group}/{metric}", funnel_prefix(campaign))
}

/// The start of a campaign's counters.
pub fn funnel_prefix(campaign: &str) -> String {
    format!("funnel/{campaign}/")
}

/// Counter increments gathered over a step, written at its end.
#[derive(Debug, Default)]
pub struct Counts(BTreeMap<String, u64>);

impl Counts {
    pub fn add(&mut self, campaign: &str, group: &str, metric: &str) {
        *self
            .0
            .entry(funnel_key(campaign, group, metric))
            .or_default() += 1;
    }

    /// Counts one under a key of its own (not a funnel's).
    pub fn add_key(&mut self, key: String) {
        *self.0.entry(key).or_default() += 1;
    }

    /// Adds the increments to `c`, each expecting the counter it read.
    pub fn write(self, store: &dyn Store, c: &mut Commit) -> Result<(), StoreError> {
        for (key, n) in self.0 {
            let old = store.get(Space::Campaigns, key.as_bytes())?;
            let value = match &old {
                Some(b) => u64::from_be_bytes(
                    b.as_slice()
                        .try_into()
                        .map_err(|_| StoreError::Backend(format!("{key}: not a counter")))?,
                ),
                None => 0,
            };
            c.expect(Space::Campaigns, key.clone(), old);
            c.put(
                Space::Campaigns,
                key,
                value.saturating_add(n).to_be_bytes().to_vec(),
            );
        }
        Ok(())
    }
}

/// A short reason for counting (the status code and the service's code, no free text).
pub fn reason_class(reason: &str) -> String {
    let mut parts = reason.splitn(3, ':');
    match (parts.next(), parts.next()) {
        (Some(code), Some(rest)) if code.trim().parse::<u16>().is_ok() => {
            let service = rest.split_whitespace().next().unwrap_or("");
            if service
                .chars()
                .all(|c| c.is_ascii_uppercase() || c == '_' || c == '/')
                && !service.is_empty()
            {
                format!("{} {service}", code.trim())
            } else {
                code.trim().to_owned()
            }
        }
        _ => reason.chars().take(60).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout stored data dirs hold: a change here is a format change.
    #[test]
    fn the_layout_is_the_stored_one() {
        assert_eq!(funnel_key("w", "a", "decided"), "funnel/w/a/decided");
        assert!(funnel_key("w", "a", "decided").starts_with(&funnel_prefix("w")));
    }

    #[test]
    fn reasons_are_counted_by_class_without_free_text() {
        assert_eq!(
            reason_class("404: NOT_FOUND/UNREGISTERED: Requested entity was not found."),
            "404 NOT_FOUND/UNREGISTERED"
        );
        assert_eq!(reason_class("400: The property, 'to', is invalid"), "400");
        assert_eq!(
            reason_class("the customer has no LINE user id"),
            "the customer has no LINE user id"
        );
    }
}
