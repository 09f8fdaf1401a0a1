//! The cloud's storage across a kill -9, through backup and restore, and from a sled data dir
//! into PostgreSQL: nothing stored is lost, nothing is counted twice, and a restored or
//! migrated store serves the same state.

use std::time::Duration;

use omo_device_config::payload::{Epoch, PresenceEvent};
use omo_device_config::SeqRanges;
use omo_tests::cloud::{sightings, CloudUnderTest, Creds, MqttGateway, ADMIN_TOKEN};
use reqwest::Method;

const WAIT: Duration = Duration::from_secs(15);

fn events(seqs: std::ops::RangeInclusive<u64>) -> Vec<PresenceEvent> {
    sightings(seqs, PresenceEvent::Enter)
}

/// Starts `cloud`, stores gateway `g1`'s events 1..=30 of epoch 3 and one app install
/// (platform, member id); returns the connected gateway.
async fn first_day(
    cloud: &mut CloudUnderTest,
    g1: &Creds,
    (platform, member): (&str, &str),
) -> anyhow::Result<MqttGateway> {
    cloud.start()?;
    let mut gw = MqttGateway::connect(cloud.mqtt_port, g1, &g1.password).await?;
    gw.publish_presence(Epoch(3), events(1..=30), SeqRanges::new())
        .await?;
    assert!(gw.next_ack(WAIT).await?.is_some());
    let (status, install) = cloud
        .call(
            Method::POST,
            "/v1/app/installs",
            Some(CloudUnderTest::install_for_member(platform, member)),
            None,
        )
        .await?;
    assert_eq!(status, 201, "{install}");
    cloud.wait_stored("g1", 30).await?;
    Ok(gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_and_a_restored_backup_serves_the_same_state() -> anyhow::Result<()> {
    let g1 = Creds::new("s1", "g1")?;
    let mut cloud = CloudUnderTest::new(vec![g1.clone()], None)?;
    let gw = first_day(&mut cloud, &g1, ("ios", "m-9")).await?;

    // A power cut: everything acked survives, and the stats stage counts nothing twice.
    drop(gw);
    cloud.process().kill()?;
    cloud.start()?;
    cloud.wait_stored("g1", 30).await?;
    let mut gw = MqttGateway::connect(cloud.mqtt_port, &g1, &g1.password).await?;
    gw.publish_presence(Epoch(3), events(25..=40), SeqRanges::new())
        .await?;
    let ack = gw.next_ack(WAIT).await?.expect("acked");
    assert_eq!(ack.seqs, SeqRanges::from_range(25, 40));
    cloud.wait_stored("g1", 40).await?;

    // Backup through the running service, then restore offline into a fresh data dir.
    let backup_dir = cloud.dir.path().join("backup");
    let url = format!("http://127.0.0.1:{}", cloud.http_port);
    let out = cloud.command(&[
        "backup",
        &backup_dir.display().to_string(),
        "--url",
        &url,
        "--token",
        ADMIN_TOKEN,
    ])?;
    assert!(out.contains("backed up"), "{out}");
    let before = cloud.admin("/v1/admin/stats").await?;
    let customers_before = cloud.admin("/v1/admin/customers").await?;
    drop(gw);
    cloud.stop()?;

    let mut restored = CloudUnderTest::empty(vec![g1.clone()], None)?;
    let out = restored.command(&[
        "restore",
        &backup_dir.display().to_string(),
        "--config",
        &restored.path("cloud.toml"),
    ])?;
    assert!(out.contains("restored"), "{out}");
    // Restoring twice into the same data dir is refused.
    assert!(restored
        .command(&[
            "restore",
            &backup_dir.display().to_string(),
            "--config",
            &restored.path("cloud.toml")
        ])
        .is_err());
    restored.start()?;
    restored.wait_stored("g1", 40).await?;
    let after = restored.admin("/v1/admin/stats").await?;
    assert_eq!(after["stats"]["gateway/g1"], before["stats"]["gateway/g1"]);
    assert_eq!(
        restored.admin("/v1/admin/customers").await?,
        customers_before
    );
    // The restored registry lets the gateway in, and its seq ranges still catch duplicates.
    let mut gw = MqttGateway::connect(restored.mqtt_port, &g1, &g1.password).await?;
    gw.publish_presence(Epoch(3), events(1..=5), SeqRanges::new())
        .await?;
    assert_eq!(
        gw.next_ack(WAIT).await?.expect("acked").seqs,
        SeqRanges::from_range(1, 5)
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    restored.wait_stored("g1", 40).await?;
    restored.stop()?;
    Ok(())
}

/// A sled data dir written by a running cloud moves into PostgreSQL with `omo-cloud migrate`;
/// the cloud on PostgreSQL serves the same state, catches the gateway's duplicates and stores
/// what comes next. A backup restores into a second empty database alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_migrates_into_postgresql_and_serves_the_same_state() -> anyhow::Result<()> {
    let Some(pg) = omo_tests::postgres::cluster()? else {
        return Ok(());
    };
    let g1 = Creds::new("s1", "g1")?;
    let mut cloud = CloudUnderTest::new(vec![g1.clone()], None)?;
    let gw = first_day(&mut cloud, &g1, ("android", "m-7")).await?;
    let backup_dir = cloud.dir.path().join("backup");
    let url = format!("http://127.0.0.1:{}", cloud.http_port);
    cloud.command(&[
        "backup",
        &backup_dir.display().to_string(),
        "--url",
        &url,
        "--token",
        ADMIN_TOKEN,
    ])?;
    let stats = cloud.admin("/v1/admin/stats").await?;
    let customers = cloud.admin("/v1/admin/customers").await?;
    drop(gw);
    cloud.stop()?;

    // Into PostgreSQL: copied, compared, and refused a second time.
    pg.create_database("migrated").map_err(anyhow::Error::msg)?;
    cloud.use_postgres(&pg.url("migrated"), pg.password())?;
    let data_dir = cloud.dir.path().join("data").display().to_string();
    let config = cloud.path("cloud.toml");
    let migrate = ["migrate", "--from-dir", &data_dir, "--config", &config];
    let out = cloud.command(&migrate)?;
    assert!(out.contains("every entry compared"), "{out}");
    let again = cloud.command(&migrate).unwrap_err().to_string();
    assert!(again.contains("already holds data"), "{again}");

    cloud.start()?;
    cloud.wait_stored("g1", 30).await?;
    // While it runs, another process may write to its database too (instances share it).
    let imported = cloud.command(&["import", &cloud.path("site.toml"), "--config", &config])?;
    assert!(!imported.is_empty(), "{imported}");
    assert_eq!(
        cloud.admin("/v1/admin/stats").await?["stats"]["gateway/g1"],
        stats["stats"]["gateway/g1"]
    );
    assert_eq!(cloud.admin("/v1/admin/customers").await?, customers);
    // The gateway's seq ranges came along: a resend is acked and not stored twice; what is
    // new is stored.
    let mut gw = MqttGateway::connect(cloud.mqtt_port, &g1, &g1.password).await?;
    gw.publish_presence(Epoch(3), events(25..=40), SeqRanges::new())
        .await?;
    assert_eq!(
        gw.next_ack(WAIT).await?.expect("acked").seqs,
        SeqRanges::from_range(25, 40)
    );
    cloud.wait_stored("g1", 40).await?;
    drop(gw);
    cloud.stop()?;

    // The backup restores into an empty database and serves what was backed up.
    pg.create_database("restored").map_err(anyhow::Error::msg)?;
    let mut restored = CloudUnderTest::empty(vec![g1.clone()], None)?;
    restored.use_postgres(&pg.url("restored"), pg.password())?;
    let out = restored.command(&[
        "restore",
        &backup_dir.display().to_string(),
        "--config",
        &restored.path("cloud.toml"),
    ])?;
    assert!(
        out.contains("restored") && out.contains("postgres"),
        "{out}"
    );
    restored.start()?;
    restored.wait_stored("g1", 30).await?;
    assert_eq!(restored.admin("/v1/admin/customers").await?, customers);
    restored.stop()?;
    Ok(())
}

/// PostgreSQL stops mid-stream and comes back: the cloud acknowledges nothing it could not
/// store (the gateway keeps those events), an HTTP write answers 503, nothing crashes; once the
/// database is back the gateway's resend is stored once and the cloud goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_acks_nothing_unstored_and_loses_nothing() -> anyhow::Result<()> {
    let Some(mut pg) = omo_tests::postgres::cluster()? else {
        return Ok(());
    };
    pg.create_database("outage").map_err(anyhow::Error::msg)?;
    let g1 = Creds::new("s1", "g1")?;
    let mut cloud =
        CloudUnderTest::on_postgres(vec![g1.clone()], &pg.url("outage"), pg.password())?;
    cloud.start()?;
    let mut gw = MqttGateway::connect(cloud.mqtt_port, &g1, &g1.password).await?;
    gw.publish_presence(Epoch(5), events(1..=20), SeqRanges::new())
        .await?;
    assert_eq!(
        gw.next_ack(WAIT).await?.expect("acked").seqs,
        SeqRanges::from_range(1, 20)
    );
    cloud.wait_stored("g1", 20).await?;

    tokio::task::block_in_place(|| pg.pause()).map_err(anyhow::Error::msg)?;
    gw.publish_presence(Epoch(5), events(21..=40), SeqRanges::new())
        .await?;
    assert!(
        gw.next_ack(Duration::from_secs(5)).await?.is_none(),
        "nothing is acknowledged while the database is down"
    );
    let install = || CloudUnderTest::install_for_member("ios", "m-1");
    let (status, body) = cloud
        .call(Method::POST, "/v1/app/installs", Some(install()), None)
        .await?;
    assert_eq!(status, 503, "{body}");
    tokio::task::block_in_place(|| pg.resume()).map_err(anyhow::Error::msg)?;

    // The gateway resends what was not acknowledged (with some that was): each stored once.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        gw.publish_presence(Epoch(5), events(15..=40), SeqRanges::new())
            .await?;
        if let Some(ack) = gw.next_ack(Duration::from_secs(3)).await? {
            if ack.seqs == SeqRanges::from_range(15, 40) {
                break;
            }
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "no ack after the database came back\n{}",
            cloud.log()
        );
    }
    cloud.wait_stored("g1", 40).await?;
    let (status, body) = cloud
        .call(Method::POST, "/v1/app/installs", Some(install()), None)
        .await?;
    assert_eq!(status, 201, "{body}");
    drop(gw);
    cloud.stop()?;
    Ok(())
}
