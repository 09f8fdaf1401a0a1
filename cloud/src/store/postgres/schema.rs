//! The PostgreSQL schema, created and migrated at start by numbered migrations. The version
//! lives in `omo_schema`; a database whose version is newer than this binary knows is
//! refused (an older binary must not write under a newer layout).
//!
//! Two instances starting at once both try the next migration in a serialisable transaction:
//! one commits, the other fails (a serialisation failure, or a table that already exists),
//! reads the new version and finds nothing left to do. No advisory lock is needed.

use deadpool_postgres::Pool;
use tokio_postgres::error::SqlState;
use tokio_postgres::IsolationLevel;

use super::{pg_error, pool_error};
use crate::store::{Space, StoreError};

/// The table of `space`.
pub(super) fn table(space: Space) -> String {
    format!("omo_{}", space.name())
}

/// The migrations in order: migration `n` (from 1) takes the schema from version `n - 1` to
/// `n`. Never edit one that has shipped; add the next.
const MIGRATIONS: &[&str] = &[
    // 1: a table per space, as sled has a tree per space.
    "CREATE TABLE omo_registry (k bytea PRIMARY KEY, v bytea NOT NULL);
     CREATE TABLE omo_identity (k bytea PRIMARY KEY, v bytea NOT NULL);
     CREATE TABLE omo_event_log (k bytea PRIMARY KEY, v bytea NOT NULL);
     CREATE TABLE omo_offsets (k bytea PRIMARY KEY, v bytea NOT NULL);
     CREATE TABLE omo_seq_ranges (k bytea PRIMARY KEY, v bytea NOT NULL);
     CREATE TABLE omo_stats (k bytea PRIMARY KEY, v bytea NOT NULL);
     CREATE TABLE omo_dedup (k bytea PRIMARY KEY, v bytea NOT NULL);
     CREATE TABLE omo_visits (k bytea PRIMARY KEY, v bytea NOT NULL);
     CREATE TABLE omo_transitions (k bytea PRIMARY KEY, v bytea NOT NULL);
     CREATE TABLE omo_meta (k bytea PRIMARY KEY, v bytea NOT NULL);
     CREATE TABLE omo_campaigns (k bytea PRIMARY KEY, v bytea NOT NULL);
     CREATE TABLE omo_purchases (k bytea PRIMARY KEY, v bytea NOT NULL);
     CREATE TABLE omo_profiles (k bytea PRIMARY KEY, v bytea NOT NULL);
     CREATE TABLE omo_holder (
         one int PRIMARY KEY CHECK (one = 1),
         holder text NOT NULL,
         host text NOT NULL,
         pid int NOT NULL,
         expires_at timestamptz NOT NULL
     );",
    // 2: leases, when several instances share the pipeline.
    "CREATE TABLE omo_leases (k bytea PRIMARY KEY, v bytea NOT NULL);",
];

/// The schema version this binary writes.
pub const VERSION: i32 = MIGRATIONS.len() as i32;

/// Attempts at migrating before giving up (each failure is another instance migrating too).
const ATTEMPTS: u32 = 20;

/// Creates or migrates the schema to [`VERSION`]; refuses a newer one. A database already at
/// this version is only read (a role without CREATE may run the cloud).
pub(super) async fn migrate(pool: &Pool) -> Result<(), StoreError> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let mut last = None;
    for _ in 0..ATTEMPTS {
        match current(&client).await {
            Ok(Some(found)) if found > VERSION => return Err(too_new(found)),
            Ok(Some(found)) if found == VERSION => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(pg_error(e)),
        }
        match step(&mut client).await {
            Ok(found) if found > VERSION => return Err(too_new(found)),
            Ok(_) => return Ok(()),
            Err(e) if raced(&e) => {
                last = Some(pg_error(e));
                tokio::time::sleep(std::time::Duration::from_millis(rand::random_range(5..50)))
                    .await;
            }
            Err(e) => return Err(pg_error(e)),
        }
    }
    Err(StoreError::Backend(format!(
        "PostgreSQL: creating the schema failed {ATTEMPTS} times, last with: {}",
        last.map_or_else(String::new, |e| e.to_string())
    )))
}

/// The schema version stored, if the schema exists.
async fn current(client: &deadpool_postgres::Client) -> Result<Option<i32>, tokio_postgres::Error> {
    match client
        .query_opt("SELECT version FROM omo_schema WHERE one = 1", &[])
        .await
    {
        Ok(row) => Ok(row.map(|r| r.get(0))),
        Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether `e` is another instance's migration getting there first.
fn raced(e: &tokio_postgres::Error) -> bool {
    super::must_retry(e)
        || e.code().is_some_and(|c| {
            [
                SqlState::UNIQUE_VIOLATION,
                SqlState::DUPLICATE_TABLE,
                SqlState::DUPLICATE_OBJECT,
            ]
            .contains(c)
        })
}

fn too_new(version: i32) -> StoreError {
    StoreError::Backend(format!(
        "PostgreSQL: the database's schema is version {version}, newer than this omo-cloud \
         knows ({VERSION}): run the omo-cloud that wrote it, or a newer one"
    ))
}

/// One attempt: read the version and apply what is missing, all in one transaction. Returns
/// the version found.
async fn step(client: &mut deadpool_postgres::Client) -> Result<i32, tokio_postgres::Error> {
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::Serializable)
        .start()
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS omo_schema (
             one int PRIMARY KEY CHECK (one = 1),
             version int NOT NULL,
             filling text
         )",
    )
    .await?;
    let version: i32 = tx
        .query_opt("SELECT version FROM omo_schema WHERE one = 1", &[])
        .await?
        .map_or(0, |r| r.get(0));
    if version >= VERSION {
        // Newer is refused by the caller; equal is done.
        tx.commit().await?;
        return Ok(version);
    }
    for sql in &MIGRATIONS[usize::try_from(version).unwrap_or(0)..] {
        tx.batch_execute(sql).await?;
    }
    tx.execute(
        "INSERT INTO omo_schema (one, version) VALUES (1, $1)
         ON CONFLICT (one) DO UPDATE SET version = EXCLUDED.version",
        &[&VERSION],
    )
    .await?;
    tx.commit().await?;
    Ok(version)
}
