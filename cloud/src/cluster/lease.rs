//! Leases (DESIGN.md, "Growing past one machine"): which instance runs which piece of the
//! pipeline's work. A lease is a row in [`Space::Leases`] — its holder, how many hands it went
//! through (its epoch), until when — taken, renewed and let go with an expectation on the row
//! as read, so two instances never both take it. Each instance also keeps a row of its own
//! alive, so the instances count each other and share the partitions evenly: each takes at
//! most its share (the partitions over the live instances, rounded up) and lets go of what is
//! over it, so an instance that joins gets about its share within a lease time.
//!
//! Leases only save work: a stage's commit expects its offset as it read it, so an instance
//! whose lease ran out while it stalled conflicts instead of writing twice.
//!
//! Whether another instance's row ran out is judged on this instance's own steady clock, never
//! by comparing the row's `expires_ms` (the holder's wall clock) with this one's: a row is
//! alive while its bytes changed (a renewal) within the lease time of this instance seeing
//! them. Instances whose wall clocks disagree by more than a lease time still never take each
//! other's live leases; `expires_ms` is what the holder meant, for people reading the rows.
//! The price: an instance that has just started counts every row it finds as alive for a
//! lease time (a crashed one's too), so it takes a dead instance's work a lease time after it
//! starts at the latest.
//!
//! Keys in [`Space::Leases`] (this module owns them): `instance/{id}` and `work/{name}` (a
//! partition's `visits/3`, a single stage's `stats`) → a [`Lease`] as JSON.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::Partition;
use crate::store::barrier::scan_prefix;
use crate::store::{Commit, Space, Store, StoreError};

const INSTANCE: &str = "instance/";
const WORK: &str = "work/";

/// A lease as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub holder: String,
    /// How many times the lease changed hands (a holder taking it over adds one).
    pub epoch: u64,
    /// Until when the holder means to hold it, on the holder's wall clock (ms since the
    /// epoch): for people and the start check ([`live_instances`]); rounds judge run-out rows
    /// on their own steady clock instead.
    pub expires_ms: i64,
}

/// The pipeline's work, as leases name it: stages split in partitions, and single stages.
#[derive(Debug, Clone)]
pub struct Work {
    pub partitioned: Vec<&'static str>,
    pub single: Vec<&'static str>,
    pub count: u16,
}

/// What an instance runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assignment {
    /// Each partitioned stage's partitions this instance holds.
    pub partitions: BTreeMap<&'static str, BTreeSet<Partition>>,
    /// The single stages this instance holds.
    pub single: BTreeSet<&'static str>,
    /// The instances alive (this one included) as of the round.
    pub instances: usize,
}

impl Assignment {
    /// Everything: one instance alone, or leases switched off.
    pub fn everything(work: &Work) -> Assignment {
        Assignment {
            partitions: work
                .partitioned
                .iter()
                .map(|s| (*s, Partition::all(work.count).collect()))
                .collect(),
            single: work.single.iter().copied().collect(),
            instances: 1,
        }
    }

    /// The partitions of `stage` this instance holds.
    pub fn of(&self, stage: &str) -> BTreeSet<Partition> {
        self.partitions.get(stage).cloned().unwrap_or_default()
    }
}

/// One instance's side of the leases.
pub struct Leases {
    /// This instance's id (unique among the live ones: host and process id by default).
    pub me: String,
    pub lease_ms: i64,
    pub work: Work,
    /// Each lease row as last read (key → its bytes, and when this instance first read those
    /// bytes on its steady clock).
    seen: std::sync::Mutex<BTreeMap<Vec<u8>, Seen>>,
}

/// A lease row's bytes as this instance last read them, and when it first read those bytes
/// (its steady clock, ms).
type Seen = (Vec<u8>, i64);

/// The clocks a round reads: the wall clock (written as `expires_ms`) and this process's
/// steady clock (what it judges other rows' age by), both in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub wall_ms: i64,
    pub steady_ms: i64,
}

impl Now {
    /// Now on both clocks (the steady one counted from the first call in this process).
    pub fn read() -> Now {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let start = *START.get_or_init(std::time::Instant::now);
        Now {
            wall_ms: chrono::Utc::now().timestamp_millis(),
            steady_ms: i64::try_from(start.elapsed().as_millis()).unwrap_or(i64::MAX),
        }
    }
}

/// A lease row as read: its key, its bytes (to expect) and what they say.
struct Row {
    key: Vec<u8>,
    bytes: Vec<u8>,
    lease: Lease,
}

fn work_key(name: &str) -> Vec<u8> {
    format!("{WORK}{name}").into_bytes()
}

fn encode(lease: &Lease) -> Vec<u8> {
    serde_json::to_vec(lease).expect("leases serialise")
}

/// Every row under `prefix`, by the name after it (an unreadable row counts as free).
fn rows(store: &dyn Store, prefix: &str) -> Result<BTreeMap<String, Row>, StoreError> {
    let entries = scan_prefix(store, Space::Leases, prefix.as_bytes(), usize::MAX)?;
    Ok(entries
        .into_iter()
        .map(|(key, bytes)| {
            let name = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
            let lease = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(lease = %name, error = %e, "unreadable lease taken as free");
                Lease {
                    holder: String::new(),
                    epoch: 0,
                    expires_ms: i64::MIN,
                }
            });
            (name, Row { key, bytes, lease })
        })
        .collect())
}

impl Leases {
    pub fn new(me: String, lease_ms: i64, work: Work) -> Leases {
        Leases {
            me,
            lease_ms,
            work,
            seen: Default::default(),
        }
    }

    /// Notes the rows under `prefix` read at `steady_ms` (forgetting those gone); answers
    /// which are alive: changed within the lease time of this instance first reading their
    /// bytes.
    fn alive(
        &self,
        prefix: &str,
        read: &BTreeMap<String, Row>,
        steady_ms: i64,
    ) -> BTreeSet<String> {
        let mut seen = self.seen.lock().expect("lease rows seen lock");
        seen.retain(|key, _| {
            !key.starts_with(prefix.as_bytes())
                || read.contains_key(&*String::from_utf8_lossy(&key[prefix.len()..]))
        });
        let mut alive = BTreeSet::new();
        for (name, row) in read {
            let since = match seen.get(&row.key) {
                Some((bytes, since)) if *bytes == row.bytes => *since,
                _ => {
                    seen.insert(row.key.clone(), (row.bytes.clone(), steady_ms));
                    steady_ms
                }
            };
            if steady_ms - since < self.lease_ms {
                alive.insert(name.clone());
            }
        }
        alive
    }

    /// One round at `now`: keeps this instance's row alive, renews what it holds, lets go
    /// of what is over its share, takes free or run-out work up to its share; answers what it
    /// now holds. A lease another instance changed meanwhile is simply not held this round.
    pub fn round(&self, store: &dyn Store, now: Now) -> Result<Assignment, StoreError> {
        let until = now.wall_ms.saturating_add(self.lease_ms);
        let mut c = Commit::new();
        c.put(
            Space::Leases,
            format!("{INSTANCE}{}", self.me).into_bytes(),
            encode(&Lease {
                holder: self.me.clone(),
                epoch: 0,
                expires_ms: until,
            }),
        );
        store.commit(c)?;
        let instances = self
            .alive(INSTANCE, &rows(store, INSTANCE)?, now.steady_ms)
            .iter()
            .filter(|name| **name != self.me)
            .count()
            + 1;
        let leases = rows(store, WORK)?;
        let alive = self.alive(WORK, &leases, now.steady_ms);
        let mut out = Assignment {
            instances,
            ..Assignment::default()
        };
        let share = usize::from(self.work.count).div_ceil(instances);
        for stage in &self.work.partitioned {
            let names: Vec<(Partition, String)> = Partition::all(self.work.count)
                .map(|p| (p, p.consumer(stage)))
                .collect();
            let mine: Vec<&(Partition, String)> = names
                .iter()
                .filter(|(_, n)| leases.get(n).is_some_and(|r| r.lease.holder == self.me))
                .collect();
            // Over its share: the last ones go (another instance takes them).
            let keep = mine.len().min(share);
            let mut held = BTreeSet::new();
            for (i, (p, name)) in mine.iter().enumerate() {
                let row = &leases[name];
                if i < keep && self.renew(store, row, until)? {
                    held.insert(*p);
                } else if i >= keep {
                    self.release(store, row)?;
                }
            }
            for (p, name) in &names {
                if held.len() >= share {
                    break;
                }
                if self.take(store, name, leases.get(name), alive.contains(name), until)? {
                    held.insert(*p);
                }
            }
            out.partitions.insert(stage, held);
        }
        for stage in &self.work.single {
            let row = leases.get(*stage);
            let held = match row {
                Some(r) if r.lease.holder == self.me => self.renew(store, r, until)?,
                _ => self.take(store, stage, row, alive.contains(*stage), until)?,
            };
            if held {
                out.single.insert(stage);
            }
        }
        Ok(out)
    }

    /// Renews a lease this instance holds; false if another took it meanwhile.
    fn renew(&self, store: &dyn Store, row: &Row, until: i64) -> Result<bool, StoreError> {
        let lease = Lease {
            expires_ms: until,
            ..row.lease.clone()
        };
        self.write(
            store,
            row.key.clone(),
            Some(row.bytes.clone()),
            Some(encode(&lease)),
        )
    }

    /// Takes `name` if it is free or its row ran out (not while another instance renews it).
    fn take(
        &self,
        store: &dyn Store,
        name: &str,
        row: Option<&Row>,
        alive: bool,
        until: i64,
    ) -> Result<bool, StoreError> {
        // An unreadable row names no holder: free.
        if row.is_some_and(|r| alive && r.lease.holder != self.me && !r.lease.holder.is_empty()) {
            return Ok(false);
        }
        let lease = Lease {
            holder: self.me.clone(),
            epoch: row.map_or(0, |r| r.lease.epoch) + 1,
            expires_ms: until,
        };
        let took = self.write(
            store,
            work_key(name),
            row.map(|r| r.bytes.clone()),
            Some(encode(&lease)),
        )?;
        if took {
            tracing::info!(work = name, epoch = lease.epoch, "lease taken");
        }
        Ok(took)
    }

    /// Lets a lease go, so another instance takes it at once.
    fn release(&self, store: &dyn Store, row: &Row) -> Result<(), StoreError> {
        self.write(store, row.key.clone(), Some(row.bytes.clone()), None)?;
        Ok(())
    }

    /// Lets go of everything this instance holds and of its own row (a clean stop).
    pub fn release_all(&self, store: &dyn Store) -> Result<(), StoreError> {
        for row in rows(store, WORK)?.values() {
            if row.lease.holder == self.me {
                self.release(store, row)?;
            }
        }
        let mut c = Commit::new();
        c.delete(Space::Leases, format!("{INSTANCE}{}", self.me).into_bytes());
        store.commit(c)
    }

    /// Writes `key` if it still holds `expected`; false if it changed meanwhile.
    fn write(
        &self,
        store: &dyn Store,
        key: Vec<u8>,
        expected: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
    ) -> Result<bool, StoreError> {
        let mut c = Commit::new();
        c.expect(Space::Leases, key.clone(), expected);
        match value {
            Some(v) => c.put(Space::Leases, key, v),
            None => c.delete(Space::Leases, key),
        }
        match store.commit(c) {
            Ok(()) => Ok(true),
            Err(StoreError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Keeps `tx` telling what this instance runs: with `leases`, a round every third of the
/// lease time (what it held stays told while the store cannot be reached: its commits fail
/// then anyway, and another instance takes its work once the leases run out); without,
/// everything. Runs until the process ends.
pub async fn keep(
    store: std::sync::Arc<dyn Store>,
    leases: Option<std::sync::Arc<Leases>>,
    work: Work,
    tx: tokio::sync::watch::Sender<Assignment>,
) {
    let Some(leases) = leases else {
        let everything = Assignment::everything(&work);
        publish(&everything);
        tx.send_replace(everything);
        return std::future::pending().await;
    };
    let period = std::time::Duration::from_millis((leases.lease_ms / 3).max(1) as u64);
    loop {
        let (s, l) = (store.clone(), leases.clone());
        let now = Now::read();
        match tokio::task::spawn_blocking(move || l.round(s.as_ref(), now)).await {
            Ok(Ok(a)) => {
                publish(&a);
                tx.send_if_modified(|old| {
                    let changed = *old != a;
                    if changed {
                        tracing::info!(
                            instances = a.instances,
                            held = ?a.partitions.iter().map(|(s, p)| (s, p.iter().map(|p| p.index()).collect::<Vec<_>>())).collect::<Vec<_>>(),
                            single = ?a.single,
                            "this instance's share of the work"
                        );
                        *old = a;
                    }
                    changed
                });
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "leases not renewed this round"),
            Err(e) if e.is_cancelled() => return,
            Err(e) => tracing::error!(error = %e, "lease round failed"),
        }
        tokio::time::sleep(period).await;
    }
}

/// The instances alive at `now_ms` by their rows' `expires_ms` (wall clocks compared: for the
/// start-up check that refuses the embedded broker beside another instance, where a minute of
/// skew at worst delays or misses that refusal), by name.
pub fn live_instances(store: &dyn Store, now_ms: i64) -> Result<Vec<String>, StoreError> {
    Ok(rows(store, INSTANCE)?
        .into_iter()
        .filter(|(_, r)| r.lease.expires_ms > now_ms)
        .map(|(name, _)| name)
        .collect())
}

/// What this instance runs, on `/metrics`: the instances alive and the partitions it holds.
fn publish(a: &Assignment) {
    metrics::gauge!("omo_cluster_instances").set(a.instances as f64);
    for (stage, held) in &a.partitions {
        metrics::gauge!("omo_partitions_held", "stage" => *stage).set(held.len() as f64);
    }
}

/// Every lease of the pipeline's work as stored, by name (for `/metrics` and the API).
pub fn all(store: &dyn Store) -> Result<BTreeMap<String, Lease>, StoreError> {
    Ok(rows(store, WORK)?
        .into_iter()
        .map(|(name, row)| (name, row.lease))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::places;

    const LEASE_MS: i64 = 15_000;
    const T: i64 = 1_790_000_000_000;

    fn instance(me: &str) -> Leases {
        Leases::new(
            me.into(),
            LEASE_MS,
            Work {
                partitioned: vec!["visits", "decide"],
                single: vec!["stats", "retention"],
                count: 4,
            },
        )
    }

    /// `ms` on both clocks.
    fn at(ms: i64) -> Now {
        Now {
            wall_ms: ms,
            steady_ms: ms,
        }
    }

    fn indexes(a: &Assignment, stage: &str) -> Vec<u16> {
        a.of(stage).iter().map(|p| p.index()).collect()
    }

    #[test]
    fn instances_share_the_work_and_take_a_dead_ones_over() {
        for place in places() {
            let store = place.open();
            let (a, b) = (instance("a"), instance("b"));
            let alone = a.round(&store, at(T)).unwrap();
            assert_eq!(alone, Assignment::everything(&a.work), "{}", place.engine());
            // b joins: a holds everything still alive, so b gets nothing at first…
            let first = b.round(&store, at(T + 1000)).unwrap();
            assert_eq!((first.instances, indexes(&first, "visits")), (2, vec![]));
            // …a lets go of what is over its share, and b takes it.
            let a2 = a.round(&store, at(T + 2000)).unwrap();
            let b2 = b.round(&store, at(T + 3000)).unwrap();
            assert_eq!(indexes(&a2, "visits"), [0, 1]);
            assert_eq!(indexes(&a2, "decide"), [0, 1]);
            assert_eq!(indexes(&b2, "visits"), [2, 3]);
            assert_eq!(indexes(&b2, "decide"), [2, 3]);
            assert_eq!(a2.single, BTreeSet::from(["stats", "retention"]));
            assert!(b2.single.is_empty());
            // Renewed, a keeps its share.
            assert_eq!(a.round(&store, at(T + 8000)).unwrap(), a2);
            // a dies. b sees a's last renewal at 9 s; a lease time later on b's own clock
            // (whatever the rows' expiry says), b takes everything, each lease one hand on.
            let before = all(&store).unwrap();
            assert_eq!(b.round(&store, at(T + 9000)).unwrap().of("visits").len(), 2);
            assert_eq!(
                b.round(&store, at(T + 9000 + LEASE_MS - 1))
                    .unwrap()
                    .of("visits")
                    .len(),
                2
            );
            let b3 = b.round(&store, at(T + 9000 + LEASE_MS)).unwrap();
            assert_eq!(b3, Assignment::everything(&b.work));
            let after = all(&store).unwrap();
            assert_eq!(after["visits/0"].holder, "b");
            assert_eq!(after["visits/0"].epoch, before["visits/0"].epoch + 1);
            assert_eq!(after["visits/2"].epoch, before["visits/2"].epoch);
            // a comes back (under a new id, as a restarted process): about half again.
            let c = instance("c");
            c.round(&store, at(T + 30_000)).unwrap();
            let b3 = b.round(&store, at(T + 31_000)).unwrap();
            let c2 = c.round(&store, at(T + 32_000)).unwrap();
            assert_eq!(indexes(&b3, "visits"), [0, 1]);
            assert_eq!(indexes(&c2, "visits"), [2, 3]);
            // A clean stop lets go at once.
            c.release_all(&store).unwrap();
            let b4 = b.round(&store, at(T + 33_000)).unwrap();
            assert_eq!(b4, Assignment::everything(&b.work));
        }
    }

    #[test]
    fn two_instances_racing_never_hold_one_lease_both() {
        for place in places() {
            let store = place.open();
            let (a, b) = (instance("a"), instance("b"));
            for round in 0..30 {
                let now = T + round * 1000;
                let (x, y) = std::thread::scope(|s| {
                    let x = s.spawn(|| a.round(&store, at(now)).unwrap());
                    let y = s.spawn(|| b.round(&store, at(now)).unwrap());
                    (x.join().unwrap(), y.join().unwrap())
                });
                for stage in ["visits", "decide"] {
                    assert!(x.of(stage).is_disjoint(&y.of(stage)), "{x:?} {y:?}");
                }
                assert!(x.single.is_disjoint(&y.single), "{x:?} {y:?}");
            }
            // And, taking turns, they settle on two partitions each.
            let mut last = (Assignment::default(), Assignment::default());
            for round in 0..4 {
                let now = T + 40_000 + round * 1000;
                last = (
                    a.round(&store, at(now)).unwrap(),
                    b.round(&store, at(now + 500)).unwrap(),
                );
            }
            assert_eq!(last.0.of("visits").len(), 2, "{last:?}");
            assert_eq!(last.1.of("visits").len(), 2, "{last:?}");
        }
    }

    /// Wall clocks a minute apart: the instance whose clock is ahead does not take the other's
    /// renewed leases (their `expires_ms` long past on its clock), and one whose clock is behind
    /// still takes a dead instance's leases a lease time after it last saw them renewed.
    #[test]
    fn wall_clocks_apart_neither_take_live_leases_nor_keep_dead_ones() {
        let place = crate::store::testing::Place::sled();
        let store = place.open();
        let (a, b) = (instance("a"), instance("b"));
        let skewed = |steady_ms: i64, wall_skew_ms: i64| Now {
            wall_ms: T + steady_ms + wall_skew_ms,
            steady_ms,
        };
        // a's wall clock is a minute behind b's; both renew every 5 s.
        for round in 0..8 {
            let ms = round * 5000;
            let x = a.round(&store, skewed(ms, -60_000)).unwrap();
            let y = b.round(&store, skewed(ms + 100, 0)).unwrap();
            if round >= 2 {
                assert_eq!(
                    (x.of("visits").len(), y.of("visits").len()),
                    (2, 2),
                    "{x:?} {y:?}"
                );
            }
            assert!(x.of("visits").is_disjoint(&y.of("visits")));
        }
        // b stops renewing (dies) after 35.1 s; a, its clock behind, sees that renewal at 40 s
        // and takes over a lease time later, though b's rows' `expires_ms` is then still a
        // minute ahead of a's wall clock.
        let seen = 40_000;
        let x = a.round(&store, skewed(seen, -60_000)).unwrap();
        assert_eq!(x.of("visits").len(), 2);
        let x = a
            .round(&store, skewed(seen + LEASE_MS - 1, -60_000))
            .unwrap();
        assert_eq!(x.of("visits").len(), 2);
        let x = a.round(&store, skewed(seen + LEASE_MS, -60_000)).unwrap();
        assert_eq!(x, Assignment::everything(&a.work));
    }

    #[test]
    fn an_unreadable_lease_is_taken_as_free() {
        let place = crate::store::testing::Place::sled();
        let store = place.open();
        let mut c = Commit::new();
        c.put(Space::Leases, b"work/stats".to_vec(), b"{".to_vec());
        store.commit(c).unwrap();
        let a = instance("a").round(&store, at(T)).unwrap();
        assert!(a.single.contains("stats"));
        assert_eq!(all(&store).unwrap()["stats"].epoch, 1);
    }
}
