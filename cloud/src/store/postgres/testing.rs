//! PostgreSQL for the crate's tests: one local cluster per test process, a fresh database per
//! test. Where no cluster can be started the PostgreSQL half of a test is skipped with the
//! reason printed, unless `OMO_POSTGRES_TESTS=required` (CI) makes that a failure.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use super::cluster::LocalCluster;
use super::Settings;

static CLUSTER: OnceLock<Result<LocalCluster, String>> = OnceLock::new();
static DATABASES: AtomicUsize = AtomicUsize::new(0);

/// Whether PostgreSQL tests must run (`OMO_POSTGRES_TESTS=required`).
pub fn required() -> bool {
    std::env::var("OMO_POSTGRES_TESTS").is_ok_and(|v| v == "required")
}

/// This process's cluster, started on first use.
pub fn cluster() -> Option<&'static LocalCluster> {
    match CLUSTER.get_or_init(LocalCluster::start) {
        Ok(c) => Some(c),
        Err(why) if required() => panic!("OMO_POSTGRES_TESTS=required, but {why}"),
        Err(why) => {
            eprintln!("skipping the PostgreSQL half of this test: {why}");
            None
        }
    }
}

/// Settings for a fresh, empty database on this process's cluster.
pub fn fresh_database() -> Option<Settings> {
    let cluster = cluster()?;
    let name = format!("t{}", DATABASES.fetch_add(1, Ordering::SeqCst));
    cluster
        .create_database(&name)
        .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
    Some(Settings {
        url: cluster.url(&name),
        password: Some(cluster.password().to_owned()),
        pool_size: 4,
        ..Settings::default()
    })
}
