//! A throwaway PostgreSQL cluster for the end-to-end tests (the cloud's own local cluster:
//! `initdb` and `postgres` on a free loopback port, removed when dropped). Where none can be
//! started the test says so and passes, unless `OMO_POSTGRES_TESTS=required` (CI).

use omo_cloud::store::postgres::cluster::LocalCluster;

/// A started cluster, or None (with the reason printed) where PostgreSQL cannot run here.
pub fn cluster() -> anyhow::Result<Option<LocalCluster>> {
    match LocalCluster::start() {
        Ok(c) => Ok(Some(c)),
        Err(why) if std::env::var("OMO_POSTGRES_TESTS").is_ok_and(|v| v == "required") => {
            anyhow::bail!("OMO_POSTGRES_TESTS=required, but {why}")
        }
        Err(why) => {
            eprintln!("skipping this PostgreSQL test: {why}");
            Ok(None)
        }
    }
}
