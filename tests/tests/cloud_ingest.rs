//! The real `omo-cloud` with its embedded broker: gateways connect as they would (rumqttc,
//! provisioned credentials and key), presence is acked only once stored, bad logins and bad
//! messages are refused and counted, app and LINE reports are checked field by field, and a
//! crash between flush and ack loses and duplicates nothing.

use std::time::Duration;

use omo_device_config::envelope::{open, seal};
use omo_device_config::payload::{
    Epoch, PresenceBatch, PresenceEvent, RemoteConfig, Sighting, Status,
};
use omo_device_config::{Channel, SeqRanges, Timestamp};
use omo_tests::cloud::{metric, CloudUnderTest, Creds, MqttGateway, ADMIN_TOKEN, LINE_SECRET};
use reqwest::Method;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(15);

fn events(seqs: std::ops::RangeInclusive<u64>, at: Timestamp) -> Vec<PresenceEvent> {
    seqs.map(|seq| {
        PresenceEvent::Stay(Sighting {
            seq,
            ts: at,
            beacon: "line:016a4b2c3d".parse().unwrap(),
            rssi: -61.5,
            distance_m: 2.0,
            seen_s: 30.0,
        })
    })
    .collect()
}

fn now() -> Timestamp {
    Timestamp::new(chrono::Utc::now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_acked_once_stored_and_bad_messages_are_refused_and_counted(
) -> anyhow::Result<()> {
    let g1 = Creds::new("s1", "g1")?;
    let g2 = Creds::new("s2", "g2")?;
    let mut cloud = CloudUnderTest::new(vec![g1.clone(), g2.clone()], None)?;
    cloud.start()?;

    // Logins: wrong password and unknown gateway are refused at CONNECT.
    assert!(MqttGateway::connect(cloud.mqtt_port, &g1, "wrong")
        .await
        .is_err());
    let stranger = Creds::new("s1", "stranger")?;
    assert!(
        MqttGateway::connect(cloud.mqtt_port, &stranger, &stranger.password)
            .await
            .is_err()
    );

    let mut gw = MqttGateway::connect(cloud.mqtt_port, &g1, &g1.password).await?;
    let epoch = Epoch(0x0a0b0c0d);
    gw.publish_presence(epoch, events(1..=20, now()), SeqRanges::from_range(21, 22))
        .await?;
    let ack = gw
        .next_ack(WAIT)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no ack\n{}", cloud.log()))?;
    assert_eq!(ack.epoch, epoch);
    assert_eq!(ack.seqs, SeqRanges::from_range(1, 22));
    assert!(ack.rejected.is_empty());
    cloud.wait_stored("g1", 20).await?;

    // The gateway's resend of the same batch is acked again and stored nothing new.
    gw.publish_presence(epoch, events(1..=20, now()), SeqRanges::new())
        .await?;
    let again = gw
        .next_ack(WAIT)
        .await?
        .expect("duplicates are acked again");
    assert_eq!(again.seqs, SeqRanges::from_range(1, 20));

    // A far-future event is acked as rejected, with the reason.
    let future = Timestamp::from_millis(now().millis() + 3_600_000).unwrap();
    gw.publish_presence(epoch, events(23..=23, future), SeqRanges::new())
        .await?;
    let rejected = gw.next_ack(WAIT).await?.expect("a rejection is acked");
    assert!(rejected.seqs.is_empty());
    assert_eq!(rejected.rejected.len(), 1);
    assert_eq!(rejected.rejected[0].seqs, SeqRanges::from_range(23, 23));
    assert!(
        rejected.rejected[0].reason.contains("ahead"),
        "{:?}",
        rejected.rejected
    );

    // A bad signature, and another store's topic: no ack, counted.
    let topic = g1.topic(Channel::Presence);
    let batch = PresenceBatch {
        gateway: g1.gateway.clone(),
        store: g1.store.clone(),
        epoch,
        events: events(24..=24, now()),
        dropped: SeqRanges::new(),
    };
    let forged = seal(&topic, &omo_device_config::SigningKey::generate(), &batch)?;
    gw.publish_raw(&topic, forged).await?;
    let other_store = format!(
        "omo/v1/stores/{}/gateways/{}/presence",
        g2.store, g1.gateway
    );
    let mut elsewhere = batch.clone();
    elsewhere.store = g2.store.clone();
    gw.publish_raw(&other_store, seal(&other_store, &g1.key, &elsewhere)?)
        .await?;
    assert!(
        gw.next_ack(Duration::from_secs(2)).await?.is_none(),
        "refused messages are not acked"
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let m = cloud.metrics().await?;
        let bad = metric(&m, "omo_ingest_bad_signatures_total", &[]);
        let wrong = metric(&m, "omo_ingest_rejected_total", &["reason=\"wrong_store\""]);
        let refused = metric(&m, "omo_broker_logins_refused_total", &[]);
        if bad == 1.0 && wrong == 1.0 && refused == 2.0 {
            assert!(
                metric(&m, "omo_ingest_duplicates_total", &[]) >= 20.0,
                "{m}"
            );
            assert_eq!(metric(&m, "omo_ingest_dropped_total", &[]), 2.0, "{m}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "counters: bad {bad} wrong {wrong} refused {refused}\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Seqs neither stored nor rejected below the highest settled one are open gaps.
    assert_eq!(
        metric(&cloud.metrics().await?, "omo_presence_open_gap_seqs", &[]),
        0.0
    );
    gw.publish_presence(epoch, events(30..=30, now()), SeqRanges::new())
        .await?;
    assert_eq!(
        gw.next_ack(WAIT).await?.expect("acked").seqs,
        SeqRanges::from_range(30, 30)
    );
    let gaps = metric(&cloud.metrics().await?, "omo_presence_open_gap_seqs", &[]);
    assert_eq!(gaps, 6.0, "seqs 24..=29 are open");
    cloud.wait_stored("g1", 21).await?;
    let g = cloud.admin("/v1/admin/gateways/g1").await?;
    assert_eq!(g["ingest"]["dropped"], 2);
    assert!(g.get("signing_key").is_none());
    cloud.stop()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_and_line_reports_are_checked_field_by_field() -> anyhow::Result<()> {
    let mut cloud = CloudUnderTest::new(vec![Creds::new("s1", "g1")?], None)?;
    cloud.start()?;
    let (status, body) = cloud
        .call(
            Method::POST,
            "/v1/app/installs",
            Some({
                let mut b = CloudUnderTest::install_for_member("android", "m-1");
                b["push_token"] = json!("tok");
                b
            }),
            None,
        )
        .await?;
    assert_eq!(status, 201, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();
    // Claiming a member id needs the brand backend's proof.
    let (status, body) = cloud
        .call(
            Method::POST,
            "/v1/app/installs",
            Some(json!({"platform": "ios", "member_id": "m-1", "member_sig": "00"})),
            None,
        )
        .await?;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("member_sig"),
        "{body}"
    );
    let (status, body) = cloud
        .call(
            Method::POST,
            "/v1/app/installs",
            Some(json!({"platform": "windows"})),
            None,
        )
        .await?;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("platform"),
        "{body}"
    );

    let report = |lat: f64| json!({"ts": now(), "idempotency_key": "r-1", "gps": {"lat": lat, "lon": 139.7, "accuracy_m": 12.0}});
    let (status, _) = cloud
        .call(Method::POST, "/v1/app/locations", Some(report(35.6)), None)
        .await?;
    assert_eq!(status, 401, "no install token");
    let (status, _) = cloud
        .call(
            Method::POST,
            "/v1/app/locations",
            Some(report(35.6)),
            Some("i_nope.nope"),
        )
        .await?;
    assert_eq!(status, 401, "a wrong install token");
    let (status, body) = cloud
        .call(
            Method::POST,
            "/v1/app/locations",
            Some(report(95.0)),
            Some(&token),
        )
        .await?;
    assert_eq!(status, 422);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("gps.lat"),
        "{body}"
    );
    let bad_bssid =
        json!({"ts": now(), "idempotency_key": "r-2", "wifi": [{"bssid": "zz", "rssi": -50}]});
    let (status, body) = cloud
        .call(
            Method::POST,
            "/v1/app/locations",
            Some(bad_bssid),
            Some(&token),
        )
        .await?;
    assert_eq!(status, 422);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("wifi[0].bssid"),
        "{body}"
    );
    let future = json!({"ts": Timestamp::from_millis(now().millis() + 86_400_000).unwrap(), "idempotency_key": "r-3", "beacons": [{"id": "line:016a4b2c3d", "rssi": -60}]});
    let (status, body) = cloud
        .call(
            Method::POST,
            "/v1/app/locations",
            Some(future),
            Some(&token),
        )
        .await?;
    assert_eq!(status, 422);
    assert!(
        body["error"]["message"].as_str().unwrap().starts_with("ts"),
        "{body}"
    );
    let (status, body) = cloud
        .call(
            Method::POST,
            "/v1/app/locations",
            Some(report(35.6)),
            Some(&token),
        )
        .await?;
    assert_eq!((status, &body["duplicate"]), (202, &json!(false)), "{body}");
    let (status, body) = cloud
        .call(
            Method::POST,
            "/v1/app/locations",
            Some(report(35.6)),
            Some(&token),
        )
        .await?;
    assert_eq!(
        (status, &body["duplicate"]),
        (200, &json!(true)),
        "the same idempotency key is stored once: {body}"
    );

    // LINE: the signature is checked over the raw body before parsing.
    let event = |id: &str| json!({"events": [{"type": "beacon", "webhookEventId": id, "timestamp": now().millis(), "source": {"type": "user", "userId": "U123"}, "beacon": {"hwid": "016a4b2c3d", "type": "enter"}, "deliveryContext": {"isRedelivery": false}}]});
    let body = event("ev-1").to_string().into_bytes();
    let sig = omo_cloud::secrets::line_signature(LINE_SECRET.as_bytes(), &body);
    let (status, _) = cloud
        .post_raw(
            "/v1/line/webhook",
            body.clone(),
            &[("x-line-signature", "AAAA".into())],
        )
        .await?;
    assert_eq!(status, 401);
    let (status, r) = cloud
        .post_raw(
            "/v1/line/webhook",
            body.clone(),
            &[("x-line-signature", sig.clone())],
        )
        .await?;
    assert_eq!((status, &r["stored"]), (200, &json!(1)), "{r}");
    let (status, r) = cloud
        .post_raw("/v1/line/webhook", body, &[("x-line-signature", sig)])
        .await?;
    assert_eq!(
        (status, &r["stored"]),
        (200, &json!(0)),
        "a redelivery is dropped by webhookEventId: {r}"
    );
    let mut bad = event("ev-2");
    bad["events"][0]["beacon"]["hwid"] = json!("xyz");
    let body = bad.to_string().into_bytes();
    let sig = omo_cloud::secrets::line_signature(LINE_SECRET.as_bytes(), &body);
    let (status, r) = cloud
        .post_raw("/v1/line/webhook", body, &[("x-line-signature", sig)])
        .await?;
    assert_eq!(status, 422);
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("events[0].beacon.hwid"),
        "{r}"
    );

    // The stats stage counted one app report and one LINE event.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = cloud.admin("/v1/admin/stats").await?;
        if s["stats"]["source/app"]["stay"] == 1 && s["stats"]["source/line"]["stay"] == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The customer behind the install: found by an operator, not by an analyst or anonymous.
    let customers = cloud.admin("/v1/admin/customers").await?;
    assert_eq!(
        customers["items"].as_array().unwrap().len(),
        2,
        "{customers}"
    );
    let (status, _) = cloud
        .call(Method::GET, "/v1/admin/customers", None, None)
        .await?;
    assert_eq!(status, 401);
    cloud.stop()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_flush_and_ack_stores_every_event_once() -> anyhow::Result<()> {
    let g1 = Creds::new("s1", "g1")?;
    let mut cloud = CloudUnderTest::new(vec![g1.clone()], None)?;
    cloud.start_with_env(&[("FAILPOINTS", "ingest.after_flush_before_ack=return")])?;
    let gw = MqttGateway::connect(cloud.mqtt_port, &g1, &g1.password).await?;
    let epoch = Epoch(7);
    let at = now();
    gw.publish_presence(epoch, events(1..=20, at), SeqRanges::new())
        .await?;
    cloud.process().wait_exit(WAIT)?;
    assert!(
        cloud
            .log()
            .contains("failpoint ingest.after_flush_before_ack fired"),
        "{}",
        cloud.log()
    );
    drop(gw);

    cloud.start()?;
    let mut gw = MqttGateway::connect(cloud.mqtt_port, &g1, &g1.password).await?;
    // The gateway never got its ack, so it resends the batch.
    gw.publish_presence(epoch, events(1..=20, at), SeqRanges::new())
        .await?;
    let ack = gw.next_ack(WAIT).await?.expect("acked after the restart");
    assert_eq!(ack.seqs, SeqRanges::from_range(1, 20));
    cloud.wait_stored("g1", 20).await?;
    let m = cloud.metrics().await?;
    assert_eq!(
        metric(&m, "omo_ingest_duplicates_total", &[]),
        20.0,
        "the resend was recognised as stored: {m}"
    );
    cloud.stop()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_back_online_with_an_old_config_gets_it_again_after_a_restart(
) -> anyhow::Result<()> {
    let g1 = Creds::new("s1", "g1")?;
    let mut cloud = CloudUnderTest::new(vec![g1.clone()], None)?;
    cloud.start()?;
    let config = json!({"version": 2, "presence": {"stay_interval_s": 45}});
    let (status, body) = cloud
        .call(
            Method::PUT,
            "/v1/admin/gateways/g1/config",
            Some(config),
            Some(ADMIN_TOKEN),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    let (status, body) = cloud
        .call(
            Method::PUT,
            "/v1/admin/gateways/g1/config",
            Some(json!({"version": 2})),
            Some(ADMIN_TOKEN),
        )
        .await?;
    assert_eq!(status, 422, "a version not newer is refused: {body}");
    cloud.stop()?;
    cloud.start()?;

    let mut gw = MqttGateway::connect(cloud.mqtt_port, &g1, &g1.password).await?;
    let status = Status {
        state: omo_device_config::payload::GatewayState::Online,
        ts: now(),
        uptime_s: 5,
        outbox_depth: 0,
        adverts_per_s: 0.0,
        config_version: 1,
        dropped: 0,
        sw_version: "test".into(),
        accepts_v: vec![1],
        clock_synced: true,
        epoch: None,
        last_seq: None,
    };
    let topic = g1.topic(Channel::Status);
    gw.publish_raw(&topic, seal(&topic, &g1.key, &status)?)
        .await?;
    let payload = gw
        .next_on(Channel::Config, WAIT)
        .await
        .ok_or_else(|| anyhow::anyhow!("no config\n{}", cloud.log()))?;
    let doc: RemoteConfig = open(&g1.topic(Channel::Config), &g1.key, &payload)?;
    assert_eq!(doc.version, 2);
    assert_eq!(doc.presence.stay_interval_s, 45);
    // The gateway acks it; an online heartbeat with the new version gets nothing more.
    let ack = omo_device_config::payload::ConfigAck {
        version: 2,
        ok: true,
        error: None,
        warnings: vec![],
    };
    let ack_topic = g1.topic(Channel::ConfigAck);
    gw.publish_raw(&ack_topic, seal(&ack_topic, &g1.key, &ack)?)
        .await?;
    let current = Status {
        config_version: 2,
        ..status
    };
    gw.publish_raw(&topic, seal(&topic, &g1.key, &current)?)
        .await?;
    assert!(gw
        .next_on(Channel::Config, Duration::from_secs(2))
        .await
        .is_none());
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let g = cloud.admin("/v1/admin/gateways/g1").await?;
        if g["last_config_ack"]["version"] == 2 && g["runtime"]["online"] == true {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{g}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cloud.stop()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_ingest_works_through_an_external_mosquitto() -> anyhow::Result<()> {
    use omo_device_config::broker_auth::{cloud_acl, gateway_acl, password_line, PasswordHash};
    use omo_tests::cloud::External;
    use omo_tests::{Broker, BrokerKind};

    let g1 = Creds::new("s1", "g1")?;
    let lines = vec![
        password_line("g1", &PasswordHash::new(&g1.password)),
        password_line("omo-cloud", &PasswordHash::new("cloud-password")),
    ];
    let acl = format!(
        "{}\n{}",
        gateway_acl(&g1.store, &g1.gateway),
        cloud_acl("omo-cloud")
    );
    let broker = Broker::start(BrokerKind::Mosquitto, &lines, &acl)?;
    let external = External {
        shared: None,
        url: format!("mqtt://127.0.0.1:{}", broker.port),
        username: "omo-cloud".into(),
        password: "cloud-password".into(),
    };
    let mut cloud = CloudUnderTest::new(vec![g1.clone()], Some(external))?;
    cloud.start()?;
    let mut gw = MqttGateway::connect(broker.port, &g1, &g1.password).await?;
    let epoch = Epoch(0x51);
    // The cloud may still be subscribing: resend until acked, as the gateway would.
    let mut ack = None;
    for _ in 0..10 {
        gw.publish_presence(epoch, events(1..=20, now()), SeqRanges::from_range(21, 21))
            .await?;
        ack = gw.next_ack(Duration::from_secs(2)).await?;
        if ack.is_some() {
            break;
        }
    }
    let ack = ack.ok_or_else(|| anyhow::anyhow!("no ack through Mosquitto\n{}", cloud.log()))?;
    assert_eq!(ack.seqs, SeqRanges::from_range(1, 21));
    cloud.wait_stored("g1", 20).await?;
    // A far-future event is acked as rejected here too.
    let future = Timestamp::from_millis(now().millis() + 3_600_000).unwrap();
    gw.publish_presence(epoch, events(22..=22, future), SeqRanges::new())
        .await?;
    let rejected = loop {
        let a = gw.next_ack(WAIT).await?.expect("acked");
        if !a.rejected.is_empty() {
            break a;
        }
    };
    assert_eq!(rejected.rejected[0].seqs, SeqRanges::from_range(22, 22));
    cloud.wait_stored("g1", 20).await?;
    cloud.stop()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_records_a_consent_given_or_withdrawn_after_install() -> anyhow::Result<()> {
    let mut cloud = CloudUnderTest::new(vec![Creds::new("s1", "g1")?], None)?;
    cloud.start()?;
    let (status, install) = cloud
        .call(
            Method::POST,
            "/v1/app/installs",
            Some(serde_json::json!({"platform": "android", "push_token": "tok-1", "consent": {"push": true, "location": true, "text_version": "1"}})),
            None,
        )
        .await?;
    assert_eq!(status, 201, "{install}");
    let token = install["token"].as_str().unwrap();
    let path = "/v1/app/consent";
    let withdraw = serde_json::json!({"channel": "push", "granted": false});
    // Only the install's own token.
    for auth in [None, Some("not-a-token")] {
        let (status, _) = cloud
            .call(Method::POST, path, Some(withdraw.clone()), auth)
            .await?;
        assert_eq!(status, 401, "{auth:?}");
    }
    // Bad input, named by field.
    for (body, field) in [
        (
            serde_json::json!({"channel": "fax", "granted": false}),
            "channel",
        ),
        (serde_json::json!({"channel": "push"}), ""),
        (
            serde_json::json!({"channel": "push", "granted": true, "text_version": ""}),
            "text_version",
        ),
        (
            serde_json::json!({"channel": "push", "granted": false, "at": "2099-01-01T00:00:00.000Z"}),
            "at",
        ),
    ] {
        let (status, e) = cloud
            .call(Method::POST, path, Some(body), Some(token))
            .await?;
        assert_eq!(status, 422, "{e}");
        assert_eq!(e["error"]["fields"][0]["field"], field, "{e}");
    }
    // Withdrawn: the answer says the consent now, and nothing else of the customer; the record
    // says it came from the app.
    let (status, body) = cloud
        .call(Method::POST, path, Some(withdraw), Some(token))
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        serde_json::json!({"consent": {"line": false, "push": false, "webhook": false, "location": true}})
    );
    let customer = cloud
        .admin(&format!(
            "/v1/admin/customers/{}",
            install["customer_id"].as_str().unwrap()
        ))
        .await?;
    let last = customer["consent_records"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        (&last["channel"], &last["granted"], &last["source"]),
        (
            &serde_json::json!("push"),
            &serde_json::json!(false),
            &serde_json::json!("app")
        ),
        "{customer}"
    );
    // Given again, with the text's version.
    let (status, body) = cloud
        .call(
            Method::POST,
            path,
            Some(serde_json::json!({"channel": "push", "granted": true, "text_version": "2"})),
            Some(token),
        )
        .await?;
    assert_eq!(
        (status, &body["consent"]["push"]),
        (200, &serde_json::json!(true)),
        "{body}"
    );
    // A revoked install says nothing more.
    let install_id = install["install_id"].as_str().unwrap();
    let (status, b) = cloud
        .call(
            Method::POST,
            &format!("/v1/admin/installs/{install_id}/revoke"),
            None,
            Some(omo_tests::cloud::ADMIN_TOKEN),
        )
        .await?;
    assert!(status < 300, "{b}");
    let (status, _) = cloud
        .call(
            Method::POST,
            path,
            Some(serde_json::json!({"channel": "location", "granted": false})),
            Some(token),
        )
        .await?;
    assert_eq!(status, 401);
    Ok(())
}
