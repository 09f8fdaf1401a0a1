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

/// Runs `sql` in the database of `settings` on the test cluster.
fn sql(settings: &Settings, sql: &str) {
    let db = settings.url.rsplit('/').next().unwrap();
    testing::cluster().unwrap().execute_in(db, sql).unwrap();
}

#[test]
fn a_schema_newer_than_the_binary_is_refused_with_both_versions() {
    let Some(settings) = fresh_database() else {
        return;
    };
    drop(PgStore::open(&settings).unwrap());
    sql(&settings, "UPDATE omo_schema SET version = 99");
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
    let tls = Settings {
        url: "postgres://omo@db1/omo?sslmode=require".into(),
        ca_file: Some("/etc/omo/db-ca.pem".into()),
        ..Settings::default()
    };
    assert!(tls.problems().is_empty(), "{:?}", tls.problems());
    let socket = Settings {
        url: "host=/var/run/postgresql user=omo dbname=omo sslmode=require".into(),
        ..Settings::default()
    };
    assert!(
        socket.problems()[0].1.contains("unix socket"),
        "{:?}",
        socket.problems()
    );
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
    for url in [
        "postgres://omo:s3cret@db1:5432,db2/omo?target_session_attrs=read-write",
        "postgres://omo:s3/c?r@et@db1/omo",
        "postgresql://omo@db1/omo?password=s3cret",
        "host=db1 user=omo password='s3 cret' dbname=omo",
    ] {
        let settings = Settings {
            url: url.into(),
            password: Some("s3cret".into()),
            ..Settings::default()
        };
        for shown in [settings.url_for_logs(), format!("{settings:?}")] {
            assert!(!shown.contains("s3"), "{url} shown as {shown}");
            assert!(shown.contains("db1") && shown.contains("omo"), "{shown}");
        }
    }
    let multi = Settings {
        url: "postgres://omo@db1:5432,db2:5433/omo?target_session_attrs=read-write".into(),
        ..Settings::default()
    };
    assert_eq!(
        multi.url_for_logs(),
        "postgres://omo@db1:5432,db2:5433/omo?target_session_attrs=read-write"
    );
}

/// Processes starting at once on a fresh database: the schema is made once and every one
/// opens it (several instances share a database); what one commits the others read; a fill
/// is refused while another fill holds the database, naming it.
#[test]
fn processes_share_the_database_and_a_fill_holds_it_alone() {
    let Some(settings) = fresh_database() else {
        return;
    };
    let opened: Vec<PgStore> = (0..4)
        .map(|_| {
            let s = settings.clone();
            std::thread::spawn(move || PgStore::open(&s))
        })
        .map(|t| t.join().unwrap().unwrap())
        .collect();
    let mut c = Commit::new();
    c.put(Space::Meta, b"k".to_vec(), b"v".to_vec());
    opened[0].commit(c).unwrap();
    for store in &opened {
        assert_eq!(store.get(Space::Meta, b"k").unwrap(), Some(b"v".to_vec()));
        assert!(store.shared());
    }
    drop(opened);
    let Some(empty) = fresh_database() else {
        return;
    };
    let filling = PgStore::open_to_fill(&empty, "restore").unwrap();
    let e = PgStore::open_to_fill(&empty, "migrate")
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("is filling this database and holds it until"),
        "{e}"
    );
    assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
    drop(filling);
}

/// A fill's holder on this host whose process is gone (a SIGKILL) is taken over at once; a
/// live one elsewhere is waited out.
#[test]
fn a_holder_whose_process_is_gone_is_taken_over_and_one_elsewhere_is_not() {
    let Some(settings) = fresh_database() else {
        return;
    };
    drop(PgStore::open(&settings).unwrap());
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    if host.is_empty() {
        return;
    }
    let hold = |host: &str, pid: i32| {
        format!(
            "INSERT INTO omo_holder VALUES (1, 'crashed', '{host}', {pid}, now() + interval '1 hour')
             ON CONFLICT (one) DO UPDATE SET holder = EXCLUDED.holder, host = EXCLUDED.host,
                 pid = EXCLUDED.pid, expires_at = EXCLUDED.expires_at"
        )
    };
    sql(&settings, &hold(&host, i32::MAX));
    drop(PgStore::open_to_fill(&settings, "restore").unwrap());
    sql(&settings, &hold("elsewhere", 4242));
    let err = PgStore::open_to_fill(&settings, "restore")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("(elsewhere, pid 4242)"), "{err}");
}

/// A fill (migrate, restore) that stopped half-way leaves a database `open` refuses; the next
/// fill starts over on an emptied database.
#[test]
fn a_half_filled_database_is_refused_until_a_fill_finishes() {
    let Some(settings) = fresh_database() else {
        return;
    };
    let filling = PgStore::open_to_fill(&settings, "migrate").unwrap();
    let mut c = Commit::new();
    c.put(Space::Registry, b"half".to_vec(), b"way".to_vec());
    filling.commit(c).unwrap();
    drop(filling);
    let err = open_err(&settings);
    assert!(err.contains("`omo-cloud migrate`, which stopped"), "{err}");
    let again = PgStore::open_to_fill(&settings, "migrate").unwrap();
    assert_eq!(
        again.get(Space::Registry, b"half").unwrap(),
        None,
        "started over"
    );
    let mut c = Commit::new();
    c.put(Space::Registry, b"whole".to_vec(), b"1".to_vec());
    again.commit(c).unwrap();
    again.finish_fill().unwrap();
    drop(again);
    let served = PgStore::open(&settings).unwrap();
    assert_eq!(
        served.get(Space::Registry, b"whole").unwrap(),
        Some(b"1".to_vec())
    );
    drop(served);
    // A finished fill's database is not emptied by another: it is refused.
    let err = PgStore::open_to_fill(&settings, "restore")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("already holds data"), "{err}");
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

/// The database goes away and comes back: commits and reads in between fail as
/// `Unavailable` (nothing panics, nothing hangs past the timeouts); after, the same store
/// works again with what was committed before.
#[test]
fn a_database_outage_is_unavailable_and_the_store_works_after_it() {
    let mut cluster = match cluster::LocalCluster::start() {
        Ok(c) => c,
        Err(why) if testing::required() => panic!("{why}"),
        Err(_) => return,
    };
    cluster.create_database("outage").unwrap();
    let settings = Settings {
        url: cluster.url("outage"),
        password: Some(cluster.password().to_owned()),
        connect_timeout_ms: 1000,
        pool_size: 2,
        ..Settings::default()
    };
    let s = PgStore::open(&settings).unwrap();
    let put = |k: &[u8]| {
        let mut c = Commit::new();
        c.put(Space::Meta, k.to_vec(), b"v".to_vec());
        s.commit(c)
    };
    put(b"before").unwrap();
    cluster.pause().unwrap();
    for _ in 0..2 {
        let e = put(b"during").unwrap_err();
        assert!(matches!(e, StoreError::Unavailable(_)), "{e}");
        let e = s.get(Space::Meta, b"before").unwrap_err();
        assert!(matches!(e, StoreError::Unavailable(_)), "{e}");
    }
    cluster.resume().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while put(b"after").is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the store did not come back"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(s.get(Space::Meta, b"before").unwrap(), Some(b"v".to_vec()));
    assert_eq!(s.get(Space::Meta, b"during").unwrap(), None);
}

/// A backup's snapshot on a database another instance writes to is one moment's: a commit
/// writing two spaces is in it whole or not at all.
#[test]
fn a_snapshot_holds_while_another_instance_commits() {
    let Some(settings) = fresh_database() else {
        return;
    };
    let writer = PgStore::open(&settings).unwrap();
    let reader =
        crate::store::barrier::BarrierStore::new(Arc::new(PgStore::open(&settings).unwrap()));
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut c = Commit::new();
                c.put(Space::Registry, i.to_be_bytes().to_vec(), b"r".to_vec());
                c.put(Space::Meta, i.to_be_bytes().to_vec(), b"m".to_vec());
                writer.commit(c).unwrap();
                i += 1;
            }
        });
        for _ in 0..5 {
            let snapshot = reader.snapshot().unwrap();
            let keys = |space| {
                snapshot
                    .iter()
                    .find(|(s, _)| *s == space)
                    .map(|(_, e)| e.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>())
                    .unwrap()
            };
            assert_eq!(keys(Space::Registry), keys(Space::Meta));
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
}

/// Two instances append to one log: a writer behind the log's end has its append put after
/// what the other appended (waiting its turn, never a conflict on the end), other expectations
/// of the commit still hold it back, a plain commit keeps the old rule, and two writers
/// appending at once leave every record once, in each writer's order, with no gap.
#[test]
fn appends_of_two_instances_go_at_the_log_end_in_turn() {
    use crate::store::event_log::{self, EventLog};
    let Some(settings) = fresh_database() else {
        return;
    };
    let (a, b) = (
        PgStore::open(&settings).unwrap(),
        PgStore::open(&settings).unwrap(),
    );
    let (mut la, mut lb) = (EventLog::open(&a).unwrap(), EventLog::open(&b).unwrap());
    let append = |log: &mut EventLog, records: &[&str]| {
        let mut c = Commit::new();
        let written = records
            .iter()
            .map(|r| log.append(&mut c, r.as_bytes()))
            .collect::<Vec<_>>();
        (c, written)
    };
    let (c, _) = append(&mut lb, &["b1", "b2"]);
    assert_eq!(b.commit_appending(c).unwrap(), Some(1));
    // a read the end before b appended: a plain commit conflicts, as it always did…
    let (c, written) = append(&mut la, &["a1"]);
    assert_eq!(written, [1]);
    assert!(matches!(
        a.commit(c.clone()),
        Err(StoreError::Conflict { .. })
    ));
    // …and so does an appending one whose other expectation fails, writing nothing…
    let mut failing = c.clone();
    failing.expect(Space::Meta, b"ledger".to_vec(), Some(b"old".to_vec()));
    assert!(matches!(
        a.commit_appending(failing),
        Err(StoreError::Conflict { .. })
    ));
    // …while the append alone goes after b's.
    assert_eq!(a.commit_appending(c).unwrap(), Some(3));
    la.moved_on(2);
    assert_eq!(la.next_offset(), 4);
    let (c, _) = append(&mut la, &["a2"]);
    assert_eq!(a.commit_appending(c).unwrap(), Some(4));
    let read = |store: &PgStore| -> Vec<(u64, String)> {
        event_log::read(store, 1, 1000)
            .unwrap()
            .into_iter()
            .map(|(o, r)| (o, String::from_utf8(r).unwrap()))
            .collect()
    };
    let want: Vec<(u64, String)> = [(1, "b1"), (2, "b2"), (3, "a1"), (4, "a2")]
        .iter()
        .map(|(o, r)| (*o, r.to_string()))
        .collect();
    assert_eq!(read(&a), want);

    // Two writers at once, a hundred commits each.
    let writers: Vec<_> = ["x", "y"]
        .into_iter()
        .map(|name| {
            let settings = settings.clone();
            std::thread::spawn(move || {
                let store = PgStore::open(&settings).unwrap();
                let mut log = EventLog::open(&store).unwrap();
                for i in 0..100 {
                    let mut c = Commit::new();
                    let first = log.append(&mut c, format!("{name}{i:03}").as_bytes());
                    let went = store.commit_appending(c).unwrap().unwrap();
                    log.moved_on(went - first);
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let all = read(&b);
    assert_eq!(all.len(), 204);
    assert!(all.iter().enumerate().all(|(i, (o, _))| *o == i as u64 + 1));
    for name in ["x", "y"] {
        let mine: Vec<&str> = all
            .iter()
            .filter(|(_, r)| r.starts_with(name))
            .map(|(_, r)| r.as_str())
            .collect();
        let want: Vec<String> = (0..100).map(|i| format!("{name}{i:03}")).collect();
        assert_eq!(mine, want);
    }
}
