//! A set of event sequence numbers kept as sorted, disjoint, non-adjacent inclusive ranges:
//! `[[first,last],…]` on the wire. The cloud's per-(gateway, epoch) ledger of stored seqs, the
//! `seqs` of a presence ack and a batch's `dropped` are all one of these, so a gateway that has
//! sent a million events is still described by a few numbers.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A set of `u64` kept as merged inclusive ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct SeqRanges {
    /// Sorted by start; no two overlap or touch.
    ranges: Vec<(u64, u64)>,
}

impl SeqRanges {
    pub fn new() -> SeqRanges {
        SeqRanges::default()
    }

    /// One range `first..=last` (empty if `first > last`).
    pub fn from_range(first: u64, last: u64) -> SeqRanges {
        let mut set = SeqRanges::new();
        set.insert_range(first, last);
        set
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// How many seqs the set holds.
    pub fn count(&self) -> u128 {
        self.ranges
            .iter()
            .map(|&(a, b)| u128::from(b - a) + 1)
            .sum()
    }

    /// The ranges, sorted, as `(first, last)`.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }

    pub fn insert(&mut self, seq: u64) {
        self.insert_range(seq, seq);
    }

    /// Adds `first..=last`; nothing happens when `first > last`.
    pub fn insert_range(&mut self, first: u64, last: u64) {
        if first > last {
            return;
        }
        // Ranges that overlap or touch [first, last] form one run [lo, hi).
        let lo = self
            .ranges
            .partition_point(|&(_, b)| b.saturating_add(1) < first);
        let hi = self
            .ranges
            .partition_point(|&(a, _)| a <= last.saturating_add(1));
        if lo == hi {
            self.ranges.insert(lo, (first, last));
            return;
        }
        let merged = (
            first.min(self.ranges[lo].0),
            last.max(self.ranges[hi - 1].1),
        );
        self.ranges.splice(lo..hi, std::iter::once(merged));
    }

    /// Adds every seq of `other`.
    pub fn merge(&mut self, other: &SeqRanges) {
        for &(a, b) in &other.ranges {
            self.insert_range(a, b);
        }
    }

    pub fn contains(&self, seq: u64) -> bool {
        self.covers(seq, seq)
    }

    /// Whether every seq of `first..=last` is in the set.
    pub fn covers(&self, first: u64, last: u64) -> bool {
        if first > last {
            return true;
        }
        let i = self.ranges.partition_point(|&(_, b)| b < first);
        self.ranges
            .get(i)
            .is_some_and(|&(a, b)| a <= first && last <= b)
    }

    /// The seqs in both sets. Linear in the number of ranges, never in the number of seqs.
    pub fn intersection(&self, other: &SeqRanges) -> SeqRanges {
        let (mut i, mut j) = (0, 0);
        let mut out = Vec::new();
        while i < self.ranges.len() && j < other.ranges.len() {
            let (a1, b1) = self.ranges[i];
            let (a2, b2) = other.ranges[j];
            let (lo, hi) = (a1.max(a2), b1.min(b2));
            if lo <= hi {
                out.push((lo, hi));
            }
            if b1 < b2 {
                i += 1;
            } else {
                j += 1;
            }
        }
        // Pieces of sorted, non-touching ranges cut by sorted, non-touching ranges stay so.
        SeqRanges { ranges: out }
    }

    /// The seqs in `self` but not in `other`. Linear in the number of ranges.
    pub fn difference(&self, other: &SeqRanges) -> SeqRanges {
        let mut out = Vec::new();
        let mut j = 0;
        for &(a, b) in &self.ranges {
            let mut lo = a;
            while j < other.ranges.len() && other.ranges[j].1 < lo {
                j += 1;
            }
            let mut k = j;
            let mut done = false;
            while k < other.ranges.len() && other.ranges[k].0 <= b {
                let (oa, ob) = other.ranges[k];
                if oa > lo {
                    out.push((lo, oa - 1));
                }
                if ob >= b {
                    done = true;
                    break;
                }
                lo = ob + 1;
                k += 1;
            }
            if !done {
                out.push((lo, b));
            }
        }
        SeqRanges { ranges: out }
    }

    /// Removes every seq below `seq` (what a gateway forgets once acked).
    pub fn remove_below(&mut self, seq: u64) {
        self.ranges.retain(|&(_, b)| b >= seq);
        if let Some(first) = self.ranges.first_mut() {
            first.0 = first.0.max(seq);
        }
    }

    /// The lowest seq in the set.
    pub fn first(&self) -> Option<u64> {
        self.ranges.first().map(|r| r.0)
    }

    /// The highest seq in the set.
    pub fn last(&self) -> Option<u64> {
        self.ranges.last().map(|r| r.1)
    }
}

impl FromIterator<u64> for SeqRanges {
    fn from_iter<I: IntoIterator<Item = u64>>(iter: I) -> SeqRanges {
        let mut set = SeqRanges::new();
        for seq in iter {
            set.insert(seq);
        }
        set
    }
}

impl Serialize for SeqRanges {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.ranges.iter().map(|&(a, b)| [a, b]))
    }
}

impl<'de> Deserialize<'de> for SeqRanges {
    /// Accepts ranges in any order, overlapping or not; refuses `[first, last]` with first > last.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SeqRanges, D::Error> {
        let pairs = Vec::<[u64; 2]>::deserialize(d)?;
        let mut set = SeqRanges::new();
        for (i, [a, b]) in pairs.into_iter().enumerate() {
            if a > b {
                return Err(serde::de::Error::custom(format!(
                    "range {i} is [{a},{b}]: first is greater than last"
                )));
            }
            set.insert_range(a, b);
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn merges_adjacent_and_overlapping() {
        let mut s = SeqRanges::new();
        s.insert_range(5, 7);
        s.insert_range(1, 2);
        s.insert(3);
        assert_eq!(s.ranges(), &[(1, 3), (5, 7)]);
        s.insert(4);
        assert_eq!(s.ranges(), &[(1, 7)]);
        s.insert_range(u64::MAX - 1, u64::MAX);
        s.insert_range(0, 0);
        assert_eq!(s.ranges(), &[(0, 7), (u64::MAX - 1, u64::MAX)]);
        assert!(s.covers(2, 6) && !s.covers(6, 8) && s.contains(u64::MAX));
    }

    #[test]
    fn set_operations_at_the_edges_of_u64() {
        let all = SeqRanges::from_range(0, u64::MAX);
        let some = SeqRanges::from_range(5, 9);
        assert_eq!(all.intersection(&some), some);
        assert_eq!(all.difference(&some).ranges(), &[(0, 4), (10, u64::MAX)]);
        assert!(some.difference(&all).is_empty());
    }

    #[test]
    fn wire_form() {
        let s: SeqRanges = serde_json::from_str("[[9,10],[1,3],[4,4]]").unwrap();
        assert_eq!(serde_json::to_string(&s).unwrap(), "[[1,4],[9,10]]");
        let err = serde_json::from_str::<SeqRanges>("[[1,2],[5,3]]").unwrap_err();
        assert!(err.to_string().contains("range 1 is [5,3]"), "{err}");
        assert!(serde_json::from_str::<SeqRanges>("[[1]]").is_err());
    }

    fn model_ops() -> impl Strategy<Value = Vec<(u64, u64)>> {
        proptest::collection::vec(
            (0u64..200, 0u64..12).prop_map(|(a, len)| (a, a + len)),
            0..40,
        )
    }

    proptest! {
        #[test]
        fn behaves_like_a_set(ops in model_ops(), probe in 0u64..220) {
            let mut s = SeqRanges::new();
            let mut model = BTreeSet::new();
            for (a, b) in ops {
                s.insert_range(a, b);
                model.extend(a..=b);
            }
            prop_assert_eq!(s.contains(probe), model.contains(&probe));
            prop_assert_eq!(s.count(), model.len() as u128);
            // canonical: sorted, disjoint, non-adjacent
            for w in s.ranges().windows(2) {
                prop_assert!(w[0].1 + 1 < w[1].0);
            }
            let back: SeqRanges = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
            prop_assert_eq!(back, s);
        }

        #[test]
        fn merge_is_union(a in model_ops(), b in model_ops()) {
            let sa: SeqRanges = a.iter().flat_map(|&(x, y)| x..=y).collect();
            let sb: SeqRanges = b.iter().flat_map(|&(x, y)| x..=y).collect();
            let mut u = sa.clone();
            u.merge(&sb);
            let all: SeqRanges = a.iter().chain(&b).flat_map(|&(x, y)| x..=y).collect();
            prop_assert_eq!(u, all);
        }

        #[test]
        fn intersection_and_difference_match_sets(a in model_ops(), b in model_ops()) {
            let sa: SeqRanges = a.iter().flat_map(|&(x, y)| x..=y).collect();
            let sb: SeqRanges = b.iter().flat_map(|&(x, y)| x..=y).collect();
            let ma: BTreeSet<u64> = a.iter().flat_map(|&(x, y)| x..=y).collect();
            let mb: BTreeSet<u64> = b.iter().flat_map(|&(x, y)| x..=y).collect();
            let inter: SeqRanges = ma.intersection(&mb).copied().collect();
            let diff: SeqRanges = ma.difference(&mb).copied().collect();
            prop_assert_eq!(sa.intersection(&sb), inter);
            prop_assert_eq!(sa.difference(&sb), diff);
        }

        #[test]
        fn remove_below_matches_model(ops in model_ops(), cut in 0u64..220) {
            let mut s = SeqRanges::new();
            let mut model = BTreeSet::new();
            for (a, b) in ops { s.insert_range(a, b); model.extend(a..=b); }
            s.remove_below(cut);
            let expect: SeqRanges = model.into_iter().filter(|&x| x >= cut).collect();
            prop_assert_eq!(s, expect);
        }
    }
}
