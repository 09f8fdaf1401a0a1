use std::sync::Arc;

use super::testing::fresh_database;
use super::*;
use crate::store::conformance::{store_conformance, Fixture};

struct PgFixture(Settings);

impl Fixture for PgFixture {
    fn open(&self) -> Arc<dyn Store> {
        Arc::new(PgStore::open(&self.0).unwrap())
    }
}

store_conformance!(fresh_database().map(PgFixture));

fn open_err(settings: &Settings) -> String {
    match PgStore::open(settings) {
        Ok(_) => panic!("opened with {settings:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_schema_newer_than_the_binary_is_refused_with_both_versions() {
    let Some(settings) = fresh_database() else {
        return;
    };
    drop(PgStore::open(&settings).unwrap());
    let db = settings.url.rsplit('/').next().unwrap().to_owned();
    let cluster = testing::cluster().unwrap();
    let mut config: tokio_postgres::Config = cluster.url(&db).parse().unwrap();
    config.password(cluster.password());
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let (client, conn) = config.connect(NoTls).await.unwrap();
                tokio::spawn(conn);
                client
                    .execute("UPDATE omo_schema SET version = 99", &[])
                    .await
                    .unwrap();
            })
    })
    .join()
    .unwrap();
    let err = open_err(&settings);
    assert!(
        err.contains("version 99") && err.contains(&format!("({})", schema::VERSION)),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn a_wrong_password_is_one_clear_line() {
    let Some(mut settings) = fresh_database() else {
        return;
    };
    settings.password = Some("not-it".into());
    let err = open_err(&settings);
    assert!(err.contains("password authentication failed"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn an_unreachable_server_is_one_clear_line_soon() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let settings = Settings {
        url: format!("postgres://omo@127.0.0.1:{port}/omo"),
        connect_timeout_ms: 500,
        ..Settings::default()
    };
    let err = open_err(&settings);
    assert!(err.contains("PostgreSQL: error connecting"), "{err}");
    assert!(err.to_lowercase().contains("refused"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn settings_name_each_problem_by_key() {
    let bad = Settings {
        url: "postgres://h/db?target_session_attrs=sometimes".into(),
        pool_size: 0,
        connect_timeout_ms: 0,
        ..Settings::default()
    };
    let keys: Vec<&str> = bad.problems().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["url", "pool_size", "connect_timeout_ms"]);
    let empty = Settings::default().problems();
    assert_eq!(empty[0].0, "url");
    let multi = Settings {
        url: "postgres://omo@db1:5432,db2:5433/omo?target_session_attrs=read-write".into(),
        ..Settings::default()
    };
    assert!(multi.problems().is_empty(), "{:?}", multi.problems());
    assert!(!format!(
        "{:?}",
        Settings {
            password: Some("s3cret".into()),
            ..multi
        }
    )
    .contains("s3cret"));
}

#[test]
fn logs_never_show_a_password() {
    let url = |u: &str| {
        Settings {
            url: u.into(),
            ..Settings::default()
        }
        .url_for_logs()
    };
    assert_eq!(
        url("postgres://omo:s3cret@db1:5432,db2/omo?target_session_attrs=read-write"),
        "postgres://omo:…@db1:5432,db2/omo?target_session_attrs=read-write"
    );
    assert_eq!(url("postgresql://omo@db/omo"), "postgresql://omo@db/omo");
    assert_eq!(
        url("host=db user=omo password=s3cret"),
        "host=db user=omo password=…"
    );
}

#[test]
fn instances_starting_at_once_migrate_once() {
    let Some(settings) = fresh_database() else {
        return;
    };
    let opened: Vec<_> = (0..4)
        .map(|_| {
            let s = settings.clone();
            std::thread::spawn(move || PgStore::open(&s).map(|_| ()))
        })
        .collect();
    for t in opened {
        t.join().unwrap().unwrap();
    }
    let s = PgStore::open(&settings).unwrap();
    let mut c = Commit::new();
    c.put(Space::Meta, b"k".to_vec(), b"v".to_vec());
    s.commit(c).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_answers_from_inside_a_multi_thread_runtime() {
    let Some(settings) = fresh_database() else {
        return;
    };
    let s = PgStore::open(&settings).unwrap();
    let mut c = Commit::new();
    c.put(Space::Meta, b"k".to_vec(), b"v".to_vec());
    s.commit(c).unwrap();
    assert_eq!(s.get(Space::Meta, b"k").unwrap(), Some(b"v".to_vec()));
    drop(s);
}

#[tokio::test(flavor = "current_thread")]
async fn it_answers_from_inside_a_current_thread_runtime() {
    let Some(settings) = fresh_database() else {
        return;
    };
    let s = PgStore::open(&settings).unwrap();
    assert_eq!(s.get(Space::Meta, b"k").unwrap(), None);
    drop(s);
}
