//! [`Store`] on PostgreSQL (DESIGN.md, "Growing past one machine"): one table per [`Space`]
//! (`omo_{name}`, `k bytea PRIMARY KEY, v bytea NOT NULL`: bytea compares byte by byte, so
//! scans keep sled's order), each commit one `SERIALIZABLE` transaction that reads the
//! expected keys, checks them, and writes the final value of every key it touches.
//! Serialisation failures and deadlocks are retried here, so [`StoreError::Conflict`] keeps
//! meaning only "an expectation did not hold".
//!
//! The trait stays synchronous: the stages are synchronous engines that call the store from
//! their own threads, and sled answers in microseconds. Each call here runs on this engine's
//! own small tokio runtime and the caller waits for it (inside a multi-thread runtime, with
//! `block_in_place`, so the caller's other tasks move on meanwhile).
//!
//! What it relies on: `bytea` keys and their order, `INSERT … ON CONFLICT … DO UPDATE`,
//! `unnest` of arrays, `= ANY(array)`, `SELECT … FOR UPDATE`, `SERIALIZABLE` transactions and
//! SQLSTATE 40001/40P01.
//! No advisory locks, no triggers, no `LISTEN`: what CockroachDB and YugabyteDB also offer.

pub mod cluster;
mod commit;
mod holder;
pub(crate) use holder::host as host_name;
mod schema;
mod settings;
#[cfg(test)]
pub(crate) mod testing;
mod tls;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use commit::must_retry;
use commit::{apply, Plan};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::{IsolationLevel, NoTls};

use super::{Commit, Entry, Space, Store, StoreError};
pub use settings::Settings;

/// The SQL of one space's table.
struct Queries {
    get: String,
    /// `get`, locking the row until the transaction ends (an append's log end).
    get_for_update: String,
    get_many: String,
    /// `get_many`, locking the rows found until the transaction ends, in key order.
    get_many_for_update: String,
    scan: String,
    scan_range: String,
    /// Each of several ranges' first entries (`scan_range` for many in one query).
    scan_ranges: String,
    last: String,
    last_before: String,
    upsert: String,
    /// Inserts the keys not there yet, answering those it inserted.
    insert_new: String,
    delete: String,
}

impl Queries {
    fn of(space: Space) -> Queries {
        let t = schema::table(space);
        Queries {
            get: format!("SELECT v FROM {t} WHERE k = $1"),
            get_for_update: format!("SELECT v FROM {t} WHERE k = $1 FOR UPDATE"),
            get_many: format!("SELECT k, v FROM {t} WHERE k = ANY($1)"),
            get_many_for_update: format!(
                "SELECT k, v FROM {t} WHERE k = ANY($1) ORDER BY k FOR UPDATE"
            ),
            scan: format!("SELECT k, v FROM {t} WHERE k >= $1 ORDER BY k LIMIT $2"),
            scan_range: format!(
                "SELECT k, v FROM {t} WHERE k >= $1 AND k < $2 ORDER BY k LIMIT $3"
            ),
            scan_ranges: format!(
                "SELECT r.i, x.k, x.v \
                 FROM unnest($1::bytea[], $2::bytea[]) WITH ORDINALITY AS r(lo, hi, i) \
                 CROSS JOIN LATERAL \
                 (SELECT k, v FROM {t} WHERE k >= r.lo AND k < r.hi ORDER BY k LIMIT $3) x \
                 ORDER BY r.i, x.k"
            ),
            last: format!("SELECT k, v FROM {t} ORDER BY k DESC LIMIT 1"),
            last_before: format!("SELECT k, v FROM {t} WHERE k < $1 ORDER BY k DESC LIMIT 1"),
            upsert: format!(
                "INSERT INTO {t} (k, v) SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
                 ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"
            ),
            insert_new: format!(
                "INSERT INTO {t} (k, v) SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
                 ON CONFLICT (k) DO NOTHING RETURNING k"
            ),
            delete: format!("DELETE FROM {t} WHERE k = ANY($1)"),
        }
    }
}

/// Serialisation failures retried at most before a commit gives up with an error.
const MAX_ATTEMPTS: u32 = 40;

pub struct PgStore {
    /// This engine's runtime (taken on drop, to shut it down without blocking).
    runtime: Option<tokio::runtime::Runtime>,
    pool: Pool,
    queries: Arc<Vec<Queries>>,
    /// Per space, the commits applied through this store that wrote to it.
    commits: [AtomicU64; Space::ALL.len()],
    /// This process's hold on the database (see `holder.rs`).
    holder: String,
    /// Set when another process took the hold over: nothing is committed after.
    lost: Arc<AtomicBool>,
    /// The longest a call waits for an answer (a connection, then its statements): a server
    /// that went silent is `Unavailable` after it, not a hang.
    answer_within: Duration,
}

/// SQLSTATEs that mean the server is going away or not taking connections yet.
fn server_unavailable(code: &str) -> bool {
    // 08P01 is a protocol violation: a client's bug, not an outage. 25006: a read-only
    // transaction, as on a primary demoted by a failover.
    (code.starts_with("08") && code != "08P01")
        || matches!(code, "57P01" | "57P02" | "57P03" | "53300" | "25006")
}

fn pg_error(e: tokio_postgres::Error) -> StoreError {
    // The server's own message is the useful part ("password authentication failed for
    // user …", "relation … does not exist"); the client's adds the context.
    match e.as_db_error() {
        Some(db) if server_unavailable(db.code().code()) => StoreError::Unavailable(format!(
            "PostgreSQL: {} ({})",
            db.message(),
            db.code().code()
        )),
        Some(db) => StoreError::Backend(format!(
            "PostgreSQL: {} ({})",
            db.message(),
            db.code().code()
        )),
        None => {
            // "error connecting to server" says little without its cause.
            let mut text = format!("PostgreSQL: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            // No answer from a server: the connection broke or never came.
            let io = std::error::Error::source(&e)
                .is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some());
            if e.is_closed() || io {
                StoreError::Unavailable(text)
            } else {
                StoreError::Backend(text)
            }
        }
    }
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg_error(e),
        // Timed out waiting for a connection, or making one.
        e => StoreError::Unavailable(format!("PostgreSQL: {e}")),
    }
}

impl PgStore {
    /// Connects and creates or migrates the schema (refusing one newer than this binary
    /// knows); refuses a database a fill left half-done. Several instances open one database.
    pub fn open(settings: &Settings) -> Result<PgStore, StoreError> {
        let store = PgStore::connect(settings)?;
        if let Some(what) = store.run(|pool, _| async move { holder::filling(&pool).await })? {
            return Err(holder::half_filled(&what));
        }
        Ok(store)
    }

    /// Opens the database for `omo-cloud {what}` (`migrate`, `restore`) to fill, for this
    /// process alone (a second fill is refused naming this one): it must hold nothing — no
    /// instance has run on it — or be what an interrupted fill left (emptied, to start over).
    /// Until [`PgStore::finish_fill`], `open` refuses it.
    pub fn open_to_fill(settings: &Settings, what: &str) -> Result<PgStore, StoreError> {
        let mut store = PgStore::connect(settings)?;
        store.take_hold()?;
        let what = what.to_owned();
        store.run(|pool, _| async move { holder::begin_fill(&pool, &what).await })?;
        Ok(store)
    }

    /// The fill is complete: the database may be served.
    pub fn finish_fill(&self) -> Result<(), StoreError> {
        self.run(|pool, _| async move { holder::end_fill(&pool).await })
    }

    fn connect(settings: &Settings) -> Result<PgStore, StoreError> {
        let config = settings.client_config()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("omo-postgres")
            .enable_all()
            .build()
            .map_err(|e| StoreError::backend("starting the PostgreSQL engine", e))?;
        // Each host is tried in turn, each within the connect timeout.
        let hosts = u64::try_from(config.get_hosts().len().max(1)).unwrap_or(1);
        let create =
            Duration::from_millis(settings.connect_timeout_ms.saturating_mul(hosts) + 1000);
        let statement = match settings.statement_timeout_ms {
            0 => Duration::from_secs(30),
            ms => Duration::from_millis(ms),
        };
        let recycling = || ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = if settings::requires_tls(&config) {
            let tls = tls::MakeRustls::new(settings.ca_file.as_deref())
                .map_err(|e| StoreError::backend("data.postgres.ca_file", e))?;
            Manager::from_config(config, tls, recycling())
        } else {
            Manager::from_config(config, NoTls, recycling())
        };
        let built = {
            let _entered = runtime.enter();
            Pool::builder(manager)
                .max_size(settings.pool_size)
                .runtime(deadpool_postgres::Runtime::Tokio1)
                // A caller waits for a connection at most while one is made, or one in use
                // finishes its statement.
                .wait_timeout(Some(create + statement))
                .create_timeout(Some(create))
                .build()
        };
        let pool = match built {
            Ok(pool) => pool,
            Err(e) => {
                runtime.shutdown_background();
                return Err(StoreError::backend("the PostgreSQL pool", e));
            }
        };
        let store = PgStore {
            runtime: Some(runtime),
            pool,
            queries: Arc::new(Space::ALL.into_iter().map(Queries::of).collect()),
            commits: Default::default(),
            holder: String::new(),
            lost: Arc::new(AtomicBool::new(false)),
            answer_within: create + statement * 2 + Duration::from_secs(5),
        };
        store.run(|pool, _| async move { schema::migrate(&pool).await })?;
        Ok(store)
    }

    /// Takes the database for this process alone (a fill), renewed until the store is dropped.
    fn take_hold(&mut self) -> Result<(), StoreError> {
        self.holder = self.run(|pool, _| async move { holder::take(&pool).await })?;
        let (pool, id, lost) = (self.pool.clone(), self.holder.clone(), self.lost.clone());
        self.runtime
            .as_ref()
            .expect("the runtime lives until drop")
            .spawn(holder::keep(pool, id, lost));
        Ok(())
    }

    /// Runs `f` on this engine's runtime and waits for its answer.
    fn run<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Pool, Arc<Vec<Queries>>) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
        T: Send + 'static,
    {
        let runtime = self.runtime.as_ref().expect("the runtime lives until drop");
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let work = f(self.pool.clone(), self.queries.clone());
        let limit = self.answer_within;
        runtime.spawn(async move {
            let answer = tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
                Err(StoreError::Unavailable(format!(
                    "PostgreSQL: no answer within {} s",
                    limit.as_secs()
                )))
            });
            let _ = tx.send(answer);
        });
        let wait = move || {
            rx.recv()
                .map_err(|_| StoreError::Backend("the PostgreSQL engine stopped".into()))?
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        }
    }

    fn rows(
        &self,
        space: Space,
        query: fn(&Queries) -> &str,
        params: Vec<Param>,
    ) -> Result<Vec<Entry>, StoreError> {
        self.run(move |pool, queries| async move {
            let client = pool.get().await.map_err(pool_error)?;
            let stmt = client
                .prepare_cached(query(&queries[space.index()]))
                .await
                .map_err(pg_error)?;
            let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                params.iter().map(Param::as_sql).collect();
            let rows = client.query(&stmt, &params).await.map_err(pg_error)?;
            Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }
}

/// A parameter handed to the engine's runtime (owned, so it outlives the caller's borrow).
enum Param {
    Bytes(Vec<u8>),
    Limit(i64),
}

impl Param {
    fn as_sql(&self) -> &(dyn tokio_postgres::types::ToSql + Sync) {
        match self {
            Param::Bytes(b) => b,
            Param::Limit(n) => n,
        }
    }
}

fn limit(n: usize) -> Param {
    Param::Limit(i64::try_from(n).unwrap_or(i64::MAX))
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if !self.holder.is_empty() {
            let id = self.holder.clone();
            if let Err(e) = self.run(|pool, _| async move { holder::release(&pool, &id).await }) {
                tracing::warn!(error = %e, "letting the database go failed (its hold expires)");
            }
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl PgStore {
    /// Applies `commit`, its append moved to the log's end if `movable`; answers where the
    /// append's first record went.
    fn apply_commit(&self, commit: Commit, movable: bool) -> Result<Option<u64>, StoreError> {
        if commit.writes.is_empty() && commit.expects.is_empty() {
            return Ok(None);
        }
        if self.lost.load(Ordering::Acquire) {
            return Err(StoreError::Backend(
                "PostgreSQL: another omo-cloud took this database over while this one stalled: \
                 restart it"
                    .into(),
            ));
        }
        let plan = Plan::of(commit, movable);
        let written: Vec<Space> = plan.writes.keys().copied().collect();
        let result =
            self.run(move |pool, queries| async move { apply(&pool, &queries, &plan).await });
        // Counted once applied, so a count taken before a read never hides this one; and after
        // a failure whose outcome is unknown (the connection broke at COMMIT), so what was read
        // is read again.
        if !matches!(result, Err(StoreError::Conflict { .. })) {
            for space in written {
                self.commits[space.index()].fetch_add(1, Ordering::Release);
            }
        }
        result
    }
}

impl Store for PgStore {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.to_vec();
        self.run(move |pool, queries| async move {
            let client = pool.get().await.map_err(pool_error)?;
            let stmt = client
                .prepare_cached(&queries[space.index()].get)
                .await
                .map_err(pg_error)?;
            let row = client.query_opt(&stmt, &[&key]).await.map_err(pg_error)?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    fn get_many(&self, space: Space, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let wanted = keys.to_vec();
        let found: std::collections::HashMap<Vec<u8>, Vec<u8>> =
            self.run(move |pool, queries| async move {
                let client = pool.get().await.map_err(pool_error)?;
                let stmt = client
                    .prepare_cached(&queries[space.index()].get_many)
                    .await
                    .map_err(pg_error)?;
                let rows = client.query(&stmt, &[&wanted]).await.map_err(pg_error)?;
                Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
            })?;
        Ok(keys.iter().map(|k| found.get(k).cloned()).collect())
    }

    fn scan(&self, space: Space, from: &[u8], n: usize) -> Result<Vec<Entry>, StoreError> {
        let params = vec![Param::Bytes(from.to_vec()), limit(n)];
        self.rows(space, |q| &q.scan, params)
    }

    fn scan_range(
        &self,
        space: Space,
        from: &[u8],
        end: &[u8],
        n: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        if from >= end {
            return Ok(Vec::new());
        }
        let params = vec![
            Param::Bytes(from.to_vec()),
            Param::Bytes(end.to_vec()),
            limit(n),
        ];
        self.rows(space, |q| &q.scan_range, params)
    }

    fn scan_ranges(
        &self,
        space: Space,
        ranges: &[(Vec<u8>, Vec<u8>)],
        n: usize,
    ) -> Result<Vec<Vec<Entry>>, StoreError> {
        if ranges.is_empty() {
            return Ok(Vec::new());
        }
        let (from, end): (Vec<Vec<u8>>, Vec<Vec<u8>>) = ranges.iter().cloned().unzip();
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        let rows: Vec<(i64, Entry)> = self.run(move |pool, queries| async move {
            let client = pool.get().await.map_err(pool_error)?;
            let stmt = client
                .prepare_cached(&queries[space.index()].scan_ranges)
                .await
                .map_err(pg_error)?;
            let rows = client
                .query(&stmt, &[&from, &end, &n])
                .await
                .map_err(pg_error)?;
            Ok(rows
                .into_iter()
                .map(|r| (r.get(0), (r.get(1), r.get(2))))
                .collect())
        })?;
        let mut out = vec![Vec::new(); ranges.len()];
        for (i, entry) in rows {
            // WITH ORDINALITY counts from 1.
            if let Some(range) = usize::try_from(i - 1).ok().and_then(|i| out.get_mut(i)) {
                range.push(entry);
            }
        }
        Ok(out)
    }

    fn last(&self, space: Space) -> Result<Option<Entry>, StoreError> {
        Ok(self.rows(space, |q| &q.last, Vec::new())?.pop())
    }

    fn last_before(&self, space: Space, end: &[u8]) -> Result<Option<Entry>, StoreError> {
        let params = vec![Param::Bytes(end.to_vec())];
        Ok(self.rows(space, |q| &q.last_before, params)?.pop())
    }

    fn commit(&self, commit: Commit) -> Result<(), StoreError> {
        self.apply_commit(commit, false).map(drop)
    }

    fn commit_appending(&self, commit: Commit) -> Result<Option<u64>, StoreError> {
        self.apply_commit(commit, true)
    }

    /// A commit is durable when PostgreSQL acknowledges it (`synchronous_commit`, on by
    /// default): nothing is left to flush.
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// The commits this process applied: it alone holds the database (see `holder.rs`).
    fn commits_to(&self, space: Space) -> u64 {
        self.commits[space.index()].load(Ordering::Acquire)
    }

    fn shared(&self) -> bool {
        true
    }

    fn consistent_snapshot(&self) -> Option<Result<super::barrier::Snapshot, StoreError>> {
        Some(self.run(|pool, _| async move {
            let mut client = pool.get().await.map_err(pool_error)?;
            let tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(pg_error)?;
            let mut out = Vec::new();
            for space in Space::ALL {
                let sql = format!("SELECT k, v FROM {} ORDER BY k", schema::table(space));
                let rows = tx.query(&sql, &[]).await.map_err(pg_error)?;
                out.push((
                    space,
                    rows.into_iter().map(|r| (r.get(0), r.get(1))).collect(),
                ));
            }
            tx.commit().await.map_err(pg_error)?;
            Ok(out)
        }))
    }
}

#[cfg(test)]
mod tests;
