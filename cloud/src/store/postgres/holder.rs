//! Fills in progress, and the process that runs one.
//!
//! Several instances share one database, so `run` takes no hold. A fill — `omo-cloud migrate`
//! or `restore` — is one process's alone: a row in `omo_holder` with the holder and an expiry
//! in the database's own time, taken with a serialisable check, renewed every few seconds and
//! deleted when the store is dropped; a second fill is refused naming the first. A holder on
//! this host whose process is gone (a crash, a SIGKILL) is taken over at once; any other waits
//! out its hold.
//!
//! A fill marks the database as being filled (`omo_schema.filling`) until its last entry is
//! compared, so a database it left half-filled is refused by `run` and emptied by the next
//! fill instead of being served; and it fills only an empty database (one no instance ran on).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio_postgres::IsolationLevel;

use super::{must_retry, pg_error, pool_error, schema};
use crate::store::{Space, StoreError};

/// How long a hold lasts without renewal, milliseconds.
const HOLD_MS: f64 = 15_000.0;
/// How often the holder renews it.
const RENEW: Duration = Duration::from_secs(5);

/// This host's name, as other instances see it in the holder row and in leases.
pub(crate) fn host() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into())
}

/// Takes the database for this process; returns the holder id. Refuses, naming the holder,
/// while another live process holds it.
pub(super) async fn take(pool: &Pool) -> Result<String, StoreError> {
    let host = host();
    let pid = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
    let id = format!("{host}:{pid}:{:08x}", rand::random::<u32>());
    let mut client = pool.get().await.map_err(pool_error)?;
    for _ in 0..20 {
        match try_take(&mut client, &id, &host, pid).await {
            Ok(None) => return Ok(id),
            Ok(Some(refusal)) => return Err(StoreError::Backend(refusal)),
            Err(e) if must_retry(&e) => {
                tokio::time::sleep(Duration::from_millis(rand::random_range(5..50))).await
            }
            Err(e) => return Err(pg_error(e)),
        }
    }
    Err(StoreError::Backend(
        "PostgreSQL: could not take the database: other processes kept taking it at once".into(),
    ))
}

async fn try_take(
    client: &mut deadpool_postgres::Client,
    id: &str,
    host: &str,
    pid: i32,
) -> Result<Option<String>, tokio_postgres::Error> {
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::Serializable)
        .start()
        .await?;
    let held = tx
        .query_opt(
            "SELECT host, pid, expires_at > now(),
                    to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')
             FROM omo_holder WHERE one = 1",
            &[],
        )
        .await?;
    if let Some(row) = held {
        let (their_host, their_pid, live, until): (String, i32, bool, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let gone_here =
            their_host == host && !std::path::Path::new(&format!("/proc/{their_pid}")).exists();
        if live && !gone_here {
            return Ok(Some(format!(
                "PostgreSQL: another omo-cloud ({their_host}, pid {their_pid}) is filling this \
                 database and holds it until {until} UTC (renewed while it runs)"
            )));
        }
    }
    tx.execute(
        "INSERT INTO omo_holder (one, holder, host, pid, expires_at)
         VALUES (1, $1, $2, $3, now() + $4::float8 * interval '1 millisecond')
         ON CONFLICT (one) DO UPDATE SET holder = EXCLUDED.holder, host = EXCLUDED.host,
             pid = EXCLUDED.pid, expires_at = EXCLUDED.expires_at",
        &[&id, &host, &pid, &HOLD_MS],
    )
    .await?;
    tx.commit().await?;
    Ok(None)
}

/// Renews the hold until the runtime stops; sets `lost` if another process took it meanwhile
/// (this one stalled past its hold), after which this store commits nothing.
pub(super) async fn keep(pool: Pool, id: String, lost: Arc<AtomicBool>) {
    loop {
        tokio::time::sleep(RENEW).await;
        let renewed = async {
            let client = pool.get().await.map_err(pool_error)?;
            client
                .execute(
                    "UPDATE omo_holder
                     SET expires_at = now() + $2::float8 * interval '1 millisecond'
                     WHERE one = 1 AND holder = $1",
                    &[&id, &HOLD_MS],
                )
                .await
                .map_err(pg_error)
        }
        .await;
        match renewed {
            Ok(1) => {}
            Ok(_) => {
                lost.store(true, Ordering::Release);
                tracing::error!(
                    "another omo-cloud took this PostgreSQL database over: this one commits \
                     nothing more; restart it"
                );
                return;
            }
            Err(e) => tracing::warn!(error = %e, "renewing the hold on the database failed"),
        }
    }
}

/// Lets the database go.
pub(super) async fn release(pool: &Pool, id: &str) -> Result<(), StoreError> {
    let client = pool.get().await.map_err(pool_error)?;
    client
        .execute(
            "DELETE FROM omo_holder WHERE one = 1 AND holder = $1",
            &[&id],
        )
        .await
        .map_err(pg_error)?;
    Ok(())
}

/// The fill that left this database half-filled, if one did.
pub(super) async fn filling(pool: &Pool) -> Result<Option<String>, StoreError> {
    let client = pool.get().await.map_err(pool_error)?;
    let row = client
        .query_one("SELECT filling FROM omo_schema WHERE one = 1", &[])
        .await
        .map_err(pg_error)?;
    Ok(row.get(0))
}

/// The refusal of a half-filled database.
pub(super) fn half_filled(what: &str) -> StoreError {
    StoreError::Backend(format!(
        "PostgreSQL: this database was being filled by `omo-cloud {what}`, which stopped before \
         it finished: run it again (it starts over)"
    ))
}

/// Marks the database as being filled by `what`: it must hold nothing, or be what an
/// interrupted fill left (emptied here, to start over).
pub(super) async fn begin_fill(pool: &Pool, what: &str) -> Result<(), StoreError> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let tx = client.transaction().await.map_err(pg_error)?;
    let interrupted: Option<String> = tx
        .query_one("SELECT filling FROM omo_schema WHERE one = 1", &[])
        .await
        .map_err(pg_error)?
        .get(0);
    let tables: Vec<String> = Space::ALL.into_iter().map(schema::table).collect();
    if interrupted.is_some() {
        tx.batch_execute(&format!("TRUNCATE {}", tables.join(", ")))
            .await
            .map_err(pg_error)?;
    } else {
        for (space, table) in Space::ALL.into_iter().zip(&tables) {
            let any = tx
                .query_opt(&format!("SELECT 1 FROM {table} LIMIT 1"), &[])
                .await
                .map_err(pg_error)?;
            if any.is_some() {
                return Err(StoreError::Backend(format!(
                    "the target already holds data (space {}): {what} fills an empty database",
                    space.name()
                )));
            }
        }
    }
    tx.execute("UPDATE omo_schema SET filling = $1 WHERE one = 1", &[&what])
        .await
        .map_err(pg_error)?;
    tx.commit().await.map_err(pg_error)
}

/// The fill finished: the database may be served.
pub(super) async fn end_fill(pool: &Pool) -> Result<(), StoreError> {
    let client = pool.get().await.map_err(pool_error)?;
    client
        .execute("UPDATE omo_schema SET filling = NULL WHERE one = 1", &[])
        .await
        .map_err(pg_error)?;
    Ok(())
}
