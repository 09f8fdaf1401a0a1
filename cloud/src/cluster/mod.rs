//! How the pipeline's work is shared (DESIGN.md, "Growing past one machine"): the visit and
//! decision stages are split by customer into partitions, each with its own offset and its
//! own rows, so several instances — or one instance's cores — run them side by side.
//!
//! The partition count is fixed when a store is first started (`[cluster] partitions`) and
//! kept in [`Space::Meta`] under `partitions` (a big-endian u16). A store from before
//! partitions has no such key: it holds one partition, whose keys carry no partition prefix,
//! so its data reads on as it was written.

pub mod lease;

use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::store::{Commit, Space, Store, StoreError};

/// A new store's partition count when `[cluster] partitions` does not say.
pub const DEFAULT_PARTITIONS: u16 = 8;
/// The most partitions a store may have.
pub const MAX_PARTITIONS: u16 = 256;

const COUNT_KEY: &[u8] = b"partitions";

/// `[cluster]` in `cloud.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSettings {
    /// How many partitions a new store's visit and decision stages are split into (a store
    /// keeps the count it was first started with; unset: [`DEFAULT_PARTITIONS`]).
    pub partitions: Option<u16>,
    /// This instance's name among the instances sharing a database (unset: host and process
    /// id, so a restarted process is a new instance).
    pub instance: Option<String>,
    /// How long a lease holds without being renewed, seconds: an instance that dies has its
    /// work taken over within this (it renews every third of it).
    pub lease_s: u32,
    /// Whether instances share the work by leases. Off (for tests), every instance runs every
    /// stage and partition: still correct, as every commit expects what it read.
    pub leases: bool,
}

impl Default for ClusterSettings {
    fn default() -> ClusterSettings {
        ClusterSettings {
            partitions: None,
            instance: None,
            lease_s: 15,
            leases: true,
        }
    }
}

impl ClusterSettings {
    /// What is wrong with these settings, as (key under `cluster.`, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        if let Some(n) = self.partitions.filter(|n| *n == 0 || *n > MAX_PARTITIONS) {
            p.push((
                "partitions",
                format!("must be between 1 and {MAX_PARTITIONS}, not {n}"),
            ));
        }
        if !(3..=600).contains(&self.lease_s) {
            p.push((
                "lease_s",
                format!("must be between 3 and 600, not {}", self.lease_s),
            ));
        }
        if let Some(name) = &self.instance {
            if name.is_empty() || name.len() > 100 || name.chars().any(|c| c.is_control()) {
                p.push((
                    "instance",
                    "must be 1 to 100 characters, none a control character".into(),
                ));
            }
        }
        p
    }

    /// This instance's name: `instance`, or host and process id.
    pub fn instance_name(&self) -> String {
        self.instance.clone().unwrap_or_else(|| {
            let host = crate::store::postgres::host_name();
            format!("{host}-{}", std::process::id())
        })
    }
}

/// How many shards an instance's counters may fall in.
pub const COUNTER_SHARDS: u16 = 16;

/// The shard of the counters `instance` adds to outside the partitioned stages (its delivery
/// worker's): instances running at once most likely keep apart rows, and the rows of a
/// campaign stay few however often instances restart under new names.
pub fn counter_shard(instance: &str) -> u16 {
    let h = sha2::Sha256::digest(instance.as_bytes());
    u16::from_be_bytes([h[0], h[1]]) % COUNTER_SHARDS
}

/// One partition of a store's customers: the `index`th of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Partition {
    index: u16,
    count: u16,
}

impl Partition {
    /// The `index`th of `count` partitions (`index < count`).
    pub fn new(index: u16, count: u16) -> Partition {
        assert!(index < count, "partition {index} of {count}");
        Partition { index, count }
    }

    /// Every partition of `count`, in order.
    pub fn all(count: u16) -> impl Iterator<Item = Partition> {
        (0..count).map(move |index| Partition { index, count })
    }

    /// The partition `customer` belongs to: FNV-1a (64 bits) of the id, modulo the count.
    /// Stored data depends on it: it never changes.
    pub fn of(customer: &str, count: u16) -> Partition {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in customer.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Partition {
            index: (h % u64::from(count.max(1))) as u16,
            count: count.max(1),
        }
    }

    pub fn index(self) -> u16 {
        self.index
    }

    pub fn count(self) -> u16 {
        self.count
    }

    /// Whether `customer`'s rows are this partition's.
    pub fn owns(self, customer: &str) -> bool {
        Partition::of(customer, self.count) == self
    }

    /// The first partition, which also counts what is about no customer (a gateway's
    /// footfall).
    pub fn is_first(self) -> bool {
        self.index == 0
    }

    /// This partition's name for `stage` in the offsets space (and in leases): `visits/3`;
    /// the stage's own name when the store holds one partition.
    pub fn consumer(self, stage: &str) -> String {
        if self.count == 1 {
            stage.to_owned()
        } else {
            format!("{stage}/{}", self.index)
        }
    }

    /// What this partition's keys start with in a space shared by the partitions: `p003/`;
    /// nothing when the store holds one partition.
    pub fn key_prefix(self) -> Vec<u8> {
        if self.count == 1 {
            Vec::new()
        } else {
            format!("p{:03}/", self.index).into_bytes()
        }
    }
}

impl std::fmt::Display for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Where each of `partitions` of `stage` is (its offset in its input), in their order, in one
/// read.
pub fn positions_of(
    store: &dyn Store,
    stage: &str,
    partitions: &[Partition],
) -> Result<Vec<u64>, StoreError> {
    let consumers: Vec<String> = partitions.iter().map(|p| p.consumer(stage)).collect();
    crate::store::event_log::positions(store, &consumers)
}

/// Where every partition of `stage` is (retention keeps what any has still to read).
pub fn positions(store: &dyn Store, stage: &str) -> Result<Vec<u64>, StoreError> {
    let all: Vec<Partition> = Partition::all(count(store)?).collect();
    positions_of(store, stage, &all)
}

/// The partition count `store` holds (1 for a store from before partitions).
pub fn count(store: &dyn Store) -> Result<u16, StoreError> {
    match store.get(Space::Meta, COUNT_KEY)? {
        None => Ok(1),
        Some(v) => decode_count(&v),
    }
}

fn decode_count(v: &[u8]) -> Result<u16, StoreError> {
    let n = <[u8; 2]>::try_from(v)
        .map(u16::from_be_bytes)
        .map_err(|_| StoreError::backend("partition count", format!("{} bytes, not 2", v.len())))?;
    if n == 0 || n > MAX_PARTITIONS {
        return Err(StoreError::backend(
            "partition count",
            format!("{n} is not between 1 and {MAX_PARTITIONS}"),
        ));
    }
    Ok(n)
}

/// Why a store's partition count could not be settled at start.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "cluster.partitions is {wanted}, but this data holds {held} partition(s): the count is \
         fixed when the data is first started (remove cluster.partitions, or set it to {held})"
    )]
    Mismatch { wanted: u16, held: u16 },
}

/// At start: the partition count this store runs with. A new store (nothing in its event log
/// and no stage has an offset) takes `wanted` (or [`DEFAULT_PARTITIONS`]) and keeps it; a
/// store from before partitions keeps its one. `wanted` differing from what the store holds
/// is refused.
pub fn settle(store: &dyn Store, wanted: Option<u16>) -> Result<u16, SettleError> {
    let held = match store.get(Space::Meta, COUNT_KEY)? {
        Some(v) => decode_count(&v)?,
        None => {
            let fresh = store.last(Space::EventLog)?.is_none()
                && store.scan(Space::Offsets, b"", 1)?.is_empty()
                && store.last(Space::Transitions)?.is_none();
            let n = if fresh {
                wanted.unwrap_or(DEFAULT_PARTITIONS)
            } else {
                1
            };
            let mut c = Commit::new();
            c.expect(Space::Meta, COUNT_KEY.to_vec(), None);
            c.put(Space::Meta, COUNT_KEY.to_vec(), n.to_be_bytes().to_vec());
            match store.commit(c) {
                Ok(()) => n,
                // Another instance settled it first: theirs holds.
                Err(StoreError::Conflict { .. }) => count(store)?,
                Err(e) => return Err(e.into()),
            }
        }
    };
    match wanted {
        Some(w) if w != held => Err(SettleError::Mismatch { wanted: w, held }),
        _ => Ok(held),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::event_log::advance;
    use crate::store::testing::places;

    #[test]
    fn a_customer_always_falls_in_the_same_partition() {
        // Stored rows depend on these: they never change.
        let got: Vec<u16> = ["c_1", "c_2", "c_3", "", "顧客"]
            .iter()
            .map(|c| Partition::of(c, 16).index())
            .collect();
        assert_eq!(got, [2, 15, 12, 5, 11]);
        assert_eq!(Partition::of("c_1", 1), Partition::new(0, 1));
        assert!(Partition::of("c_2", 16).owns("c_2"));
        assert!(!Partition::new(0, 16).owns("c_2"));
    }

    #[test]
    fn customers_spread_over_the_partitions() {
        let mut n = [0u32; 8];
        for i in 0..8000 {
            n[Partition::of(&format!("c_{i:08x}"), 8).index() as usize] += 1;
        }
        assert!(n.iter().all(|k| (850..1150).contains(k)), "{n:?}");
    }

    #[test]
    fn one_partition_keeps_the_layout_from_before_partitions() {
        let whole = Partition::new(0, 1);
        assert_eq!(whole.consumer("visits"), "visits");
        assert_eq!(whole.key_prefix(), b"");
        let third = Partition::new(3, 16);
        assert_eq!(third.consumer("visits"), "visits/3");
        assert_eq!(third.key_prefix(), b"p003/");
        assert_eq!(third.to_string(), "3/16");
    }

    #[test]
    fn a_new_store_takes_the_count_and_keeps_it() {
        for place in places() {
            let store = place.open();
            assert_eq!(count(&store).unwrap(), 1);
            assert_eq!(settle(&store, Some(4)).unwrap(), 4, "{}", place.engine());
            assert_eq!(count(&store).unwrap(), 4);
            assert_eq!(settle(&store, None).unwrap(), 4);
            let e = settle(&store, Some(8)).unwrap_err();
            assert!(
                e.to_string()
                    .starts_with("cluster.partitions is 8, but this data holds 4 partition(s)"),
                "{e}"
            );
            let fresh = place.fresh_like().open();
            assert_eq!(settle(&fresh, None).unwrap(), DEFAULT_PARTITIONS);
        }
    }

    #[test]
    fn a_store_from_before_partitions_keeps_one() {
        for place in places() {
            let store = place.open();
            let mut c = Commit::new();
            advance(&mut c, "visits", 1, 40);
            store.commit(c).unwrap();
            assert_eq!(settle(&store, None).unwrap(), 1, "{}", place.engine());
            assert!(matches!(
                settle(&store, Some(8)),
                Err(SettleError::Mismatch { wanted: 8, held: 1 })
            ));
            assert_eq!(settle(&store, Some(1)).unwrap(), 1);
        }
    }

    #[test]
    fn an_unreadable_count_is_named() {
        for place in places() {
            let store = place.open();
            let mut c = Commit::new();
            c.put(Space::Meta, COUNT_KEY.to_vec(), vec![0, 0]);
            store.commit(c).unwrap();
            let e = count(&store).unwrap_err().to_string();
            assert!(
                e.contains("partition count: 0 is not between 1 and 256"),
                "{e}"
            );
        }
    }
}
