//! Stores for the crate's tests on every engine that can run here: a fresh sled dir always,
//! and a fresh PostgreSQL database whenever a local cluster can be started (see
//! `postgres::testing`; `OMO_POSTGRES_TESTS=required` makes that a must). A test runs its body
//! once per [`Place`]:
//!
//! ```ignore
//! for place in places() {
//!     let store = place.open();
//!     …
//! }
//! ```

use std::sync::Arc;

use super::postgres::{PgStore, Settings};
use super::sled_store::SledStore;
use super::Store;

/// Where one engine's store for a test lives; it can be opened again (a restart).
pub enum Place {
    Sled(tempfile::TempDir),
    Postgres(Settings),
}

/// A fresh place on every engine that can run here, sled first.
pub fn places() -> Vec<Place> {
    let mut out = vec![Place::Sled(tempfile::tempdir().expect("a temp dir"))];
    if let Some(settings) = super::postgres::testing::fresh_database() {
        out.push(Place::Postgres(settings));
    }
    out
}

impl Place {
    pub fn engine(&self) -> &'static str {
        match self {
            Place::Sled(_) => "sled",
            Place::Postgres(_) => "postgres",
        }
    }

    /// A fresh place on the same engine.
    pub fn fresh_like(&self) -> Place {
        match self {
            Place::Sled(_) => Place::Sled(tempfile::tempdir().expect("a temp dir")),
            Place::Postgres(_) => Place::Postgres(
                super::postgres::testing::fresh_database().expect("a cluster, as before"),
            ),
        }
    }

    /// A fresh sled place (for property tests, whose many cases would each want a database).
    pub fn sled() -> Place {
        Place::Sled(tempfile::tempdir().expect("a temp dir"))
    }

    /// Opens the store here (again, if it was opened before and dropped).
    pub fn open(&self) -> TestStore {
        let inner: Arc<dyn Store> = match self {
            Place::Sled(dir) => Arc::new(SledStore::open(dir.path(), 1 << 20).expect("sled")),
            Place::Postgres(settings) => Arc::new(PgStore::open(settings).expect("postgres")),
        };
        eprintln!("on {}", self.engine());
        inner
    }
}

impl super::conformance::Fixture for Place {
    fn open(&self) -> Arc<dyn Store> {
        Place::open(self)
    }
}

/// A store opened for a test: any engine, used as `&store` wherever a `&dyn Store` is.
pub type TestStore = Arc<dyn Store>;
