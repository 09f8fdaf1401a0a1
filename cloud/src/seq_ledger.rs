//! The per-(gateway, epoch) ledger of stored presence seqs (DESIGN.md, "Event identity"): a
//! few ranges per gateway, nothing to expire. Ingest splits each arriving batch into new and
//! duplicate events by it, stores the new ones, and records them only once the store has made
//! them durable; both kinds are then acknowledged.
//!
//! Pure bookkeeping: persisting the ledger with the events is the storage layer's job.

use std::collections::HashMap;

use omo_device_config::payload::Epoch;
use omo_device_config::{GatewayId, SeqRanges};

/// Seqs already stored, per gateway and epoch.
#[derive(Debug, Default, Clone)]
pub struct SeqLedger {
    stored: HashMap<(GatewayId, Epoch), SeqRanges>,
}

/// A batch's seqs split by the ledger.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Split {
    /// Not stored before: store these.
    pub new: SeqRanges,
    /// Stored before: acknowledge again, store nothing.
    pub duplicate: SeqRanges,
}

impl SeqLedger {
    pub fn new() -> SeqLedger {
        SeqLedger::default()
    }

    /// Splits `seqs` into new and already-stored ones; linear in ranges, so a batch's
    /// `dropped` ranges cost the same whatever they span.
    pub fn split(&self, gateway: &GatewayId, epoch: Epoch, seqs: &SeqRanges) -> Split {
        match self.stored.get(&(gateway.clone(), epoch)) {
            None => Split {
                new: seqs.clone(),
                duplicate: SeqRanges::new(),
            },
            Some(stored) => Split {
                new: seqs.difference(stored),
                duplicate: seqs.intersection(stored),
            },
        }
    }

    /// Records seqs as durably stored. Call only after the store's flush has returned.
    pub fn record_stored(&mut self, gateway: &GatewayId, epoch: Epoch, seqs: &SeqRanges) {
        self.stored
            .entry((gateway.clone(), epoch))
            .or_default()
            .merge(seqs);
    }

    /// What is stored for one gateway epoch.
    pub fn stored(&self, gateway: &GatewayId, epoch: Epoch) -> Option<&SeqRanges> {
        self.stored.get(&(gateway.clone(), epoch))
    }

    /// Every (gateway, epoch) and what is stored of it.
    pub fn iter(&self) -> impl Iterator<Item = (&GatewayId, Epoch, &SeqRanges)> {
        self.stored.iter().map(|((g, e), s)| (g, *e, s))
    }

    /// The epochs seen from a gateway (a new one means a new or reinstalled outbox).
    pub fn epochs<'a>(&'a self, gateway: &'a GatewayId) -> impl Iterator<Item = Epoch> + 'a {
        self.stored
            .keys()
            .filter(move |(g, _)| g == gateway)
            .map(|(_, e)| *e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn gw(id: &str) -> GatewayId {
        GatewayId::new(id).unwrap()
    }

    #[test]
    fn duplicates_are_split_out_per_gateway_and_epoch() {
        let mut ledger = SeqLedger::new();
        let split = ledger.split(&gw("g1"), Epoch(1), &SeqRanges::from_range(1, 5));
        assert_eq!(split.new, SeqRanges::from_range(1, 5));
        ledger.record_stored(&gw("g1"), Epoch(1), &split.new);
        let again = ledger.split(&gw("g1"), Epoch(1), &SeqRanges::from_range(4, 7));
        assert_eq!(again.duplicate, SeqRanges::from_range(4, 5));
        assert_eq!(again.new, SeqRanges::from_range(6, 7));
        // Same seqs under a new epoch or another gateway are different events.
        let five = SeqRanges::from_range(1, 5);
        assert!(ledger
            .split(&gw("g1"), Epoch(2), &five)
            .duplicate
            .is_empty());
        assert!(ledger
            .split(&gw("g2"), Epoch(1), &five)
            .duplicate
            .is_empty());
        // A huge dropped range costs nothing to split.
        let huge = ledger.split(&gw("g1"), Epoch(1), &SeqRanges::from_range(0, u64::MAX));
        assert_eq!(huge.duplicate, SeqRanges::from_range(1, 5));
        assert_eq!(ledger.epochs(&gw("g1")).collect::<Vec<_>>(), [Epoch(1)]);
    }

    proptest! {
        /// Whatever order and repetition batches arrive in, each seq is "new" exactly once.
        #[test]
        fn each_seq_is_new_exactly_once(batches in proptest::collection::vec(proptest::collection::vec(0u64..60, 0..20), 0..30)) {
            let mut ledger = SeqLedger::new();
            let g = gw("g");
            let mut news = Vec::new();
            for batch in &batches {
                let split = ledger.split(&g, Epoch(9), &batch.iter().copied().collect());
                news.extend(split.new.ranges().iter().flat_map(|&(a, b)| a..=b));
                ledger.record_stored(&g, Epoch(9), &split.new);
            }
            let distinct: BTreeSet<u64> = batches.iter().flatten().copied().collect();
            news.sort_unstable();
            prop_assert_eq!(news, distinct.into_iter().collect::<Vec<_>>());
        }
    }
}
