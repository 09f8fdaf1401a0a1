//! A commit as one transaction: its plan (the expectations and final writes, an append that
//! may move to the log's end), one attempt, and the retries of serialisation failures.

use std::collections::BTreeMap;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio_postgres::error::SqlState;
use tokio_postgres::IsolationLevel;

use super::{pg_error, pool_error, Queries, MAX_ATTEMPTS};
use crate::store::{event_log, Commit, Hex, Space, StoreError};

/// A commit's expectations and final writes, grouped by space.
#[derive(Clone)]
pub(super) struct Plan {
    /// The expectations in the order given (the first that fails is the one reported).
    expects: Vec<(Space, Vec<u8>, Option<Vec<u8>>)>,
    /// Per space, the final value of every key written (`None`: deleted).
    pub writes: BTreeMap<Space, BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
    /// Where the commit's event-log append was written to start, if it has one and may be
    /// moved to the log's end as found ([`Store::commit_appending`]).
    append: Option<u64>,
}

impl Plan {
    pub(super) fn of(commit: Commit, movable: bool) -> Plan {
        let append = commit.appends_at().filter(|_| movable);
        let mut writes: BTreeMap<Space, BTreeMap<Vec<u8>, Option<Vec<u8>>>> = BTreeMap::new();
        for (space, key, value) in commit.writes {
            writes.entry(space).or_default().insert(key, value);
        }
        Plan {
            expects: commit.expects,
            writes,
            append,
        }
    }

    /// Whether row locks keep every expectation: each key expected absent is one the commit
    /// writes (inserted only if still absent), so nothing needs `SERIALIZABLE`'s predicate
    /// locks — a key expected absent and not written has no row to lock.
    fn row_locks_suffice(&self) -> bool {
        self.expects.iter().all(|(space, key, value)| {
            value.is_some()
                || self
                    .writes
                    .get(space)
                    .and_then(|w| w.get(key))
                    .is_some_and(Option::is_some)
        })
    }

    /// This plan with its append moved on by `delta` offsets from `first`.
    fn moved(&self, first: u64, delta: u64) -> Result<Plan, StoreError> {
        let by = (first, delta);
        let mut expects = Vec::new();
        for (space, key, value) in &self.expects {
            let (k, v) = event_log::moved(by, *space, key, value.as_deref())?;
            expects.push((*space, k, v));
        }
        let mut writes: BTreeMap<Space, BTreeMap<Vec<u8>, Option<Vec<u8>>>> = BTreeMap::new();
        for (space, keys) in &self.writes {
            for (key, value) in keys {
                let (k, v) = event_log::moved(by, *space, key, value.as_deref())?;
                writes.entry(*space).or_default().insert(k, v);
            }
        }
        Ok(Plan {
            expects,
            writes,
            append: Some(first + delta),
        })
    }
}

/// Why one attempt at a commit failed.
enum Failed {
    /// A serialisation failure or deadlock: nothing was written; try again.
    Retry,
    Store(StoreError),
}

/// A serialisation failure or a deadlock: the transaction was rolled back; run it again.
pub(super) fn must_retry(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|c| {
        *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    })
}

impl From<tokio_postgres::Error> for Failed {
    fn from(e: tokio_postgres::Error) -> Failed {
        if must_retry(&e) {
            Failed::Retry
        } else {
            Failed::Store(pg_error(e))
        }
    }
}

/// One attempt: a serialisable transaction that checks every expectation, then writes; an
/// append that may move goes at the log's end, locked first so appenders wait their turn.
/// Answers where the append's first record went.
async fn attempt(
    client: &mut deadpool_postgres::Client,
    queries: &[Queries],
    plan: &Plan,
) -> Result<Option<u64>, Failed> {
    // Row locks where they keep every expectation (`REPEATABLE READ`: a locked row changed
    // since the snapshot fails 40001 and the attempt runs again); `SERIALIZABLE` otherwise.
    // Its predicate locks made nearly every stage commit fail under load: the stages' offsets
    // share an index page, and every commit that reads one conflicted with every other.
    let locked = plan.row_locks_suffice();
    let tx = client
        .build_transaction()
        .isolation_level(if locked {
            IsolationLevel::RepeatableRead
        } else {
            IsolationLevel::Serializable
        })
        .start()
        .await?;
    let moved;
    let plan = match plan.append {
        Some(first) => {
            let stmt = tx
                .prepare_cached(&queries[Space::Offsets.index()].get_for_update)
                .await?;
            let end = tx
                .query_opt(&stmt, &[&event_log::end_key()])
                .await?
                .map(|r| r.get::<_, Vec<u8>>(0));
            let end = end
                .map(|v| event_log::end_of(&v))
                .transpose()
                .map_err(Failed::Store)?;
            match end {
                // Another writer appended since this one read the end: after it.
                Some(end) if end > first => {
                    moved = plan.moved(first, end - first).map_err(Failed::Store)?;
                    &moved
                }
                _ => plan,
            }
        }
        None => plan,
    };
    let mut wanted: BTreeMap<Space, Vec<Vec<u8>>> = BTreeMap::new();
    for (space, key, _) in &plan.expects {
        wanted.entry(*space).or_default().push(key.clone());
    }
    let mut found: BTreeMap<(Space, Vec<u8>), Vec<u8>> = BTreeMap::new();
    for (space, keys) in wanted {
        let q = &queries[space.index()];
        let read = if locked {
            &q.get_many_for_update
        } else {
            &q.get_many
        };
        let stmt = tx.prepare_cached(read).await?;
        for row in tx.query(&stmt, &[&keys]).await? {
            found.insert((space, row.get(0)), row.get(1));
        }
    }
    for (space, key, expected) in &plan.expects {
        if found.get(&(*space, key.clone())) != expected.as_ref() {
            return Err(Failed::Store(StoreError::Conflict {
                space: *space,
                key: Hex(key.clone()),
            }));
        }
    }
    write(&tx, queries, plan, locked).await?;
    tx.commit().await?;
    Ok(plan.append)
}

/// Writes `plan`'s final values in `tx`; under row locks (`locked`) a key expected absent is
/// inserted only if still absent, else the commit conflicts.
async fn write(
    tx: &deadpool_postgres::Transaction<'_>,
    queries: &[Queries],
    plan: &Plan,
    locked: bool,
) -> Result<(), Failed> {
    // Keys expected absent: inserted only if still absent (another transaction may have
    // inserted one since this one looked; under row locks nothing else would stop it).
    let fresh: std::collections::BTreeSet<(Space, &[u8])> = plan
        .expects
        .iter()
        .filter(|(_, _, v)| v.is_none())
        .map(|(s, k, _)| (*s, k.as_slice()))
        .collect();
    for (space, keys) in &plan.writes {
        let q = &queries[space.index()];
        let (mut put_keys, mut put_values, mut gone) = (Vec::new(), Vec::new(), Vec::new());
        let (mut new_keys, mut new_values) = (Vec::new(), Vec::new());
        for (k, v) in keys {
            match v {
                Some(v) if locked && fresh.contains(&(*space, k.as_slice())) => {
                    new_keys.push(k.as_slice());
                    new_values.push(v.as_slice());
                }
                Some(v) => {
                    put_keys.push(k.as_slice());
                    put_values.push(v.as_slice());
                }
                None => gone.push(k.as_slice()),
            }
        }
        if !new_keys.is_empty() {
            let stmt = tx.prepare_cached(&q.insert_new).await?;
            let inserted: std::collections::BTreeSet<Vec<u8>> = tx
                .query(&stmt, &[&new_keys, &new_values])
                .await?
                .iter()
                .map(|row| row.get(0))
                .collect();
            // The conflict names the key another transaction inserted first.
            if let Some(taken) = new_keys.iter().find(|k| !inserted.contains(**k)) {
                return Err(Failed::Store(StoreError::Conflict {
                    space: *space,
                    key: Hex(taken.to_vec()),
                }));
            }
        }
        if !put_keys.is_empty() {
            let stmt = tx.prepare_cached(&q.upsert).await?;
            tx.execute(&stmt, &[&put_keys, &put_values]).await?;
        }
        if !gone.is_empty() {
            let stmt = tx.prepare_cached(&q.delete).await?;
            tx.execute(&stmt, &[&gone]).await?;
        }
    }
    Ok(())
}

/// Applies `plan`, retrying serialisation failures with a short growing pause; answers where
/// its append's first record went.
pub(super) async fn apply(
    pool: &Pool,
    queries: &[Queries],
    plan: &Plan,
) -> Result<Option<u64>, StoreError> {
    let mut client = pool.get().await.map_err(pool_error)?;
    for n in 0..MAX_ATTEMPTS {
        match attempt(&mut client, queries, plan).await {
            Ok(first) => return Ok(first),
            Err(Failed::Store(e)) => return Err(e),
            // The first few again at once: most are an append that waited for another's lock
            // on the log's end and now finds it moved (`attempt` moves it on).
            Err(Failed::Retry) if n < 3 => {}
            Err(Failed::Retry) => {
                let cap = 1u64 << (n - 3).min(6);
                let pause = rand::random_range(0..=cap);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        }
    }
    Err(StoreError::Backend(format!(
        "PostgreSQL: a commit met {MAX_ATTEMPTS} serialisation failures in a row"
    )))
}
