//! A campaign's funnel: counters per (campaign, group, metric) — `funnel/{campaign}/{group}/
//! {metric}` in the campaigns space, big-endian u64s — that the campaign stage, the delivery
//! worker, tracked links and redemptions add to in the commits that store what they count.
//! The campaign report (`crate::campaigns::report`) reads them back.

use std::collections::BTreeMap;

use crate::store::{Commit, Space, Store, StoreError};

/// The counter of `metric` (`decided`, `delivered`, `failed:…`, …) for `group` in `campaign`.
pub fn funnel_key(campaign: &str, group: &str, metric: &str) -> String {
    funnel_counter(campaign, group, metric).key(None)
}

/// The same counter, to be kept by shard.
pub fn funnel_counter(campaign: &str, group: &str, metric: &str) -> CounterKey {
    CounterKey::new(funnel_prefix(campaign), format!("{group}/{metric}"))
}

/// The start of a campaign's counters.
pub fn funnel_prefix(campaign: &str) -> String {
    format!("funnel/{campaign}/")
}

/// What marks a shard's segment in a key (a counter's, a budget slice's).
pub const SHARD: char = '@';

/// The segment of `shard` in a key.
pub fn shard_segment(shard: u16) -> String {
    format!("{SHARD}{shard:04x}")
}

/// A counter's key in two halves. A writer that adds to it often from several instances at
/// once keeps it by shard: `{head}@{shard:04x}/{tail}`, a row per shard, so the instances do
/// not wait on each other's row; a reader adds up every row ([`unsharded`] drops the segment).
/// No head is followed by a name that may start with `@` (ids and groups are `[A-Za-z0-9._-]`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CounterKey {
    head: String,
    tail: String,
}

impl CounterKey {
    pub fn new(head: String, tail: String) -> Self {
        CounterKey { head, tail }
    }

    /// The key of its row: `shard`'s, or the one unsharded row.
    pub fn key(&self, shard: Option<u16>) -> String {
        match shard {
            Some(n) => format!("{}{}/{}", self.head, shard_segment(n), self.tail),
            None => format!("{}{}", self.head, self.tail),
        }
    }
}

/// What follows a counter key's head, without the shard's segment if there is one.
pub fn unsharded(rest: &str) -> &str {
    rest.strip_prefix(SHARD)
        .and_then(|r| r.split_once('/'))
        .map_or(rest, |(_, tail)| tail)
}

/// A stored counter's value (a big-endian u64; absent: 0); an error names the key.
pub fn counter_value(key: &str, stored: Option<&[u8]>) -> Result<u64, StoreError> {
    match stored {
        None => Ok(0),
        Some(b) => b
            .try_into()
            .map(u64::from_be_bytes)
            .map_err(|_| StoreError::backend(key, format!("not a counter ({} bytes)", b.len()))),
    }
}

/// Counter increments gathered over a step, written at its end.
#[derive(Debug, Default)]
pub struct Counts {
    added: BTreeMap<CounterKey, u64>,
    shard: Option<u16>,
}

impl Counts {
    /// Counts written to `shard`'s rows (see [`CounterKey`]).
    pub fn in_shard(shard: u16) -> Self {
        Counts {
            shard: Some(shard),
            ..Counts::default()
        }
    }

    pub fn add(&mut self, campaign: &str, group: &str, metric: &str) {
        self.add_counter(funnel_counter(campaign, group, metric));
    }

    /// Counts one under a counter of its own (not a funnel's).
    pub fn add_counter(&mut self, key: CounterKey) {
        *self.added.entry(key).or_default() += 1;
    }

    /// Adds the increments to `c`, each expecting the counter it read.
    pub fn write(self, store: &dyn Store, c: &mut Commit) -> Result<(), StoreError> {
        let keys: Vec<String> = self.added.keys().map(|k| k.key(self.shard)).collect();
        let bytes: Vec<Vec<u8>> = keys.iter().map(|k| k.as_bytes().to_vec()).collect();
        // One round trip for them all.
        let olds = store.get_many(Space::Campaigns, &bytes)?;
        for ((key, n), old) in keys.into_iter().zip(self.added.into_values()).zip(olds) {
            let value = counter_value(&key, old.as_deref())?;
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
        let sharded = funnel_counter("w", "a", "failed:404 X/Y").key(Some(10));
        assert_eq!(sharded, "funnel/w/@000a/a/failed:404 X/Y");
        let rest = &sharded[funnel_prefix("w").len()..];
        assert_eq!(unsharded(rest), "a/failed:404 X/Y");
        assert_eq!(unsharded("a/decided"), "a/decided");
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
