//! Privacy through the real binaries: consent kept as records (with time, source and text
//! version) and the current state derived from them; a LINE `unfollow` cancels at once an
//! offer already decided and waiting to be retried; a customer without
//! location consent is never turned into visits, though the gateway hears them; and the
//! export of a customer with an install, visits, an offer and a redemption holds them all.

use std::time::Duration;

use omo_sim::fault::Fault;
use omo_tests::cloud::metric;
use omo_tests::scenario::Visit;
use omo_tests::system::{carried_beacon, Layout, System};
use reqwest::Method;
use serde_json::{json, Value};

const USERS: [&str; 3] = [
    "U00000000000000000000000000000a01",
    "U00000000000000000000000000000a02",
    "U00000000000000000000000000000a03",
];

async fn line_event(
    sys: &System,
    id: &str,
    user: &str,
    kind: &str,
    at_ms: i64,
) -> anyhow::Result<()> {
    sys.line_webhook(vec![
        json!({"type": kind, "mode": "active", "timestamp": at_ms,
        "webhookEventId": id, "deliveryContext": {"isRedelivery": false},
        "source": {"type": "user", "userId": user}, "replyToken": "r"}),
    ])
    .await
}

async fn customer(sys: &System, id: &str) -> anyhow::Result<Value> {
    sys.cloud.admin(&format!("/v1/admin/customers/{id}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_records_the_location_gate_an_unfollow_mid_send_and_the_export(
) -> anyhow::Result<()> {
    let layout = Layout {
        gateways: vec![(
            "s1",
            "g1",
            0,
            (1..=3u8)
                .map(|beacon| Visit {
                    beacon,
                    from_s: 0,
                    to_s: 600,
                })
                .collect(),
        )],
        site: "[[gateway_zones]]\nid = \"floor\"\nstore = \"s1\"\nname = \"Floor\"\ngateways = [\"g1\"]\nmax_distance_m = 15.0\n".into(),
        mosquitto: false,
        speed: 60,
    };
    let mut sys = System::build(layout).await?;
    sys.welcome_campaign(&["s1"], &["line"]).await?;
    // 1 and 3 consent to LINE and location; 2 to LINE only.
    let c1 = sys
        .line_customer(Some(&carried_beacon(1)), USERS[0])
        .await?;
    let c2 = sys
        .admin_call(
            Method::POST,
            "/v1/admin/customers",
            json!({"beacons": [carried_beacon(2)], "line_user": USERS[1], "consent": {"line": true}, "consent_text_version": "terms-2026-10"}),
            201,
        )
        .await?["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let c3 = sys
        .line_customer(Some(&carried_beacon(3)), USERS[2])
        .await?;
    // The first two LINE requests are answered 429 with Retry-After 8 s (wall time, as a real
    // server means it): both offers are decided and wait for their retry.
    sys.line.inject(Fault {
        status: 429,
        count: 2,
        retry_after_s: Some(8),
        latency_ms: 0,
    });
    sys.start_gateways()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while sys.line.request_log().len() < 2 {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "no LINE requests");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Both wait for their retry (pending, after one attempt).
    let deliveries = || async {
        anyhow::Ok(
            sys.cloud.admin("/v1/admin/deliveries?limit=1000").await?["items"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        )
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let d = deliveries().await?;
        if d.len() == 2
            && d.iter()
                .all(|d| d["status"] == "pending" && d["attempts"] == 1)
        {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "not both waiting for a retry: {d:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Customer 3 unfollows the account while their offer waits: it is cancelled at once,
    // seconds before its retry was due.
    let now = sys.cloud.clock_now().millis();
    line_event(&sys, "unfollow-3", USERS[2], "unfollow", now).await?;
    let c = customer(&sys, &c3).await?;
    assert_eq!(c["consent"]["line"], json!(false), "{c}");
    let d = deliveries().await?;
    let of_c3: Vec<_> = d.iter().filter(|d| d["customer"] == json!(c3)).collect();
    assert_eq!(
        (&of_c3[0]["status"], &of_c3[0]["reason"]),
        (&json!("cancelled"), &json!("consent for line withdrawn")),
        "{d:#?}"
    );
    // A redelivered follow from before the unfollow changes nothing.
    line_event(&sys, "follow-3-old", USERS[2], "follow", now - 60_000).await?;
    let c = customer(&sys, &c3).await?;
    assert_eq!(c["consent"]["line"], json!(false), "{c}");
    let sources: Vec<(&str, &str, bool)> = c["consent_records"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r["channel"].as_str().unwrap_or_default(),
                r["source"].as_str().unwrap_or_default(),
                r["granted"].as_bool().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        sources,
        [
            ("line", "admin", true),
            ("location", "admin", true),
            ("line", "line", false),
            ("line", "line", true)
        ],
        "{c}"
    );

    let deliveries = sys.settled_deliveries(2, Duration::from_secs(60)).await?;
    for d in &deliveries {
        if d["customer"] == json!(c3) {
            assert_eq!(d["status"], "cancelled", "{d}");
            assert_eq!(d["reason"], "consent for line withdrawn", "{d}");
        } else {
            assert_eq!(
                (&d["customer"], &d["status"]),
                (&json!(c1), &json!("delivered")),
                "{d}"
            );
        }
    }
    let accepted: Vec<String> = sys.line.accepted().into_iter().map(|a| a.to).collect();
    assert_eq!(
        accepted,
        [USERS[0].to_owned()],
        "only customer 1 got the offer"
    );

    // Customer 2 (no location consent) was heard all along but has no visit.
    let v1 = sys
        .cloud
        .admin(&format!("/v1/admin/visits?customer={c1}"))
        .await?;
    assert!(
        v1["items"].as_array().is_some_and(|v| !v.is_empty()),
        "{v1}"
    );
    let v2 = sys
        .cloud
        .admin(&format!("/v1/admin/visits?customer={c2}"))
        .await?;
    assert_eq!(v2["items"], json!([]), "{v2}");
    let skipped = metric(
        &sys.cloud.metrics().await?,
        "omo_visit_evidence_skipped_total",
        &["no_location_consent"],
    );
    assert!(skipped > 0.0, "location evidence skipped: {skipped}");
    let c = customer(&sys, &c2).await?;
    assert_eq!(
        c["consent_records"][0]["text_version"], "terms-2026-10",
        "{c}"
    );

    // An imported consent (the brand's CRM) is a record with its source and text version.
    let c = sys
        .admin_call(
            Method::POST,
            &format!("/v1/admin/customers/{c2}/consent"),
            json!({"channel": "location", "granted": true, "source": "import", "text_version": "crm-7"}),
            200,
        )
        .await?;
    assert_eq!(c["consent"]["location"], json!(true), "{c}");
    let last = c["consent_records"]
        .as_array()
        .and_then(|r| r.last())
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (&last["source"], &last["text_version"]),
        (&json!("import"), &json!("crm-7"))
    );
    let (status, body) = sys
        .cloud
        .call(
            Method::POST,
            &format!("/v1/admin/customers/{c2}/consent"),
            Some(json!({"channel": "line", "granted": true, "source": "line"})),
            Some(omo_tests::cloud::ADMIN_TOKEN),
        )
        .await?;
    assert_eq!(
        status, 422,
        "only the app and LINE record their own sources: {body}"
    );

    // Customer 1 becomes a member with the app installed and redeems their coupon; their
    // export holds the links, the install, the consent records, the visits, the decision and
    // offer, the redemption and the observations.
    // A patch of one channel's consent leaves the others as they are.
    let c = sys
        .admin_call(
            Method::PATCH,
            &format!("/v1/admin/customers/{c1}"),
            json!({"member_id": "m-export", "consent": {"push": true}}),
            200,
        )
        .await?;
    assert_eq!(
        c["consent"],
        json!({"line": true, "push": true, "webhook": false, "location": true}),
        "{c}"
    );
    let mut install = omo_tests::cloud::CloudUnderTest::install_for_member("ios", "m-export");
    install["push_token"] = json!("apns-token-export");
    let (status, body) = sys
        .cloud
        .call(Method::POST, "/v1/app/installs", Some(install), None)
        .await?;
    assert_eq!(status, 201, "{body}");
    let pos = sys
        .admin_call(Method::POST, "/v1/admin/stores/s1/pos-keys", json!({}), 201)
        .await?["key"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let coupon = deliveries
        .iter()
        .find(|d| d["customer"] == json!(c1))
        .and_then(|d| d["coupon"].as_str())
        .unwrap_or_default()
        .to_owned();
    let (status, body) = sys
        .cloud
        .call(
            Method::POST,
            "/v1/redemptions",
            Some(json!({"store": "s1", "code": coupon, "amount": 30.0})),
            Some(&pos),
        )
        .await?;
    assert_eq!(status, 201, "{body}");
    let export = sys
        .cloud
        .admin(&format!("/v1/admin/customers/{c1}/export"))
        .await?;
    let person = &export["customer"];
    assert_eq!(
        (&person["id"], &person["line_user"], &person["member_id"]),
        (&json!(c1), &json!(USERS[0]), &json!("m-export")),
        "{export:#}"
    );
    assert_eq!(person["beacons"], json!([carried_beacon(1)]));
    assert!(person["consent_records"]
        .as_array()
        .is_some_and(|r| r.len() >= 2));
    assert_eq!(export["installs"][0]["push_token"], "apns-token-export");
    assert!(export["installs"][0].get("token_sha256").is_none());
    let len = |k: &str| export[k].as_array().map_or(0, Vec::len);
    assert!(len("visits") >= 1, "{export:#}");
    assert_eq!(
        (len("decisions"), len("deliveries"), len("redemptions")),
        (1, 1, 1)
    );
    assert_eq!(export["deliveries"][0]["coupon"], json!(coupon));
    assert_eq!(
        export["campaign_measurements"][0]["measurement"]["group"],
        json!("a"),
        "{export:#}"
    );
    assert_eq!(export["redemptions"][0]["code"], json!(coupon));
    assert!(
        len("observations") >= 5,
        "gateway sightings of the carried beacon: {}",
        len("observations")
    );
    let (status, _) = sys
        .cloud
        .call(
            Method::GET,
            &format!("/v1/admin/customers/{c1}/export"),
            None,
            Some(omo_tests::cloud::ANALYST_TOKEN),
        )
        .await?;
    assert_eq!(status, 403, "an analyst sees no personal data");
    Ok(())
}

/// An app report of a GPS fix at `(lat, lon)` (as text) now, with `token`: the answer.
async fn report_gps(
    cloud: &omo_tests::cloud::CloudUnderTest,
    token: &str,
    key: &str,
    (lat, lon): (&str, &str),
) -> anyhow::Result<(u16, Value)> {
    let body = json!({"ts": cloud.clock_now(), "idempotency_key": key,
        "gps": {"lat": lat.parse::<f64>()?, "lon": lon.parse::<f64>()?, "accuracy_m": 12.0}});
    cloud
        .call(Method::POST, "/v1/app/locations", Some(body), Some(token))
        .await
}

/// Every key and value the cloud's storage holds, from its backup export, as text.
async fn storage_text(sys: &System) -> anyhow::Result<Vec<(String, String)>> {
    let body = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/v1/admin/backup",
            sys.cloud.http_port
        ))
        .bearer_auth(omo_tests::cloud::ADMIN_TOKEN)
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    let mut out = Vec::new();
    for (space, entries) in omo_cloud::backup::parse(&body)? {
        for (k, v) in entries {
            out.push((
                format!("{}/{}", space.name(), String::from_utf8_lossy(&k)),
                String::from_utf8_lossy(&v).into_owned(),
            ));
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_customer_leaves_no_trace_and_the_reports_keep_their_totals() -> anyhow::Result<()>
{
    // Customer 1 (to be erased) and 2 visit in the first ten clock minutes; the gateway hears
    // customer 1's beacon again an hour later, with customer 3's.
    let visit = |beacon, from_s, to_s| Visit {
        beacon,
        from_s,
        to_s,
    };
    let layout = Layout {
        gateways: vec![(
            "s1",
            "g1",
            0,
            vec![
                visit(1, 0, 600),
                visit(2, 0, 600),
                visit(1, 3600, 3900),
                visit(3, 3600, 3900),
            ],
        )],
        site: "[[gateway_zones]]\nid = \"floor\"\nstore = \"s1\"\nname = \"Floor\"\ngateways = [\"g1\"]\nmax_distance_m = 15.0\n".into(),
        mosquitto: false,
        speed: 120,
    };
    let mut sys = System::build(layout).await?;
    sys.welcome_campaign(&["s1"], &["line"]).await?;
    let users = [
        "U00000000000000000000000000000b01",
        "U00000000000000000000000000000b02",
        "U00000000000000000000000000000b03",
    ];
    let c1 = sys
        .line_customer(Some(&carried_beacon(1)), users[0])
        .await?;
    let c2 = sys
        .line_customer(Some(&carried_beacon(2)), users[1])
        .await?;
    let c3 = sys
        .line_customer(Some(&carried_beacon(3)), users[2])
        .await?;
    // Customer 1 is also a member with the app, reporting a GPS fix.
    sys.admin_call(
        Method::PATCH,
        &format!("/v1/admin/customers/{c1}"),
        json!({"member_id": "m-erase-1", "attributes": {"name": "Hanako Erase"}}),
        200,
    )
    .await?;
    let mut install = omo_tests::cloud::CloudUnderTest::install_for_member("android", "m-erase-1");
    install["push_token"] = json!("fcm-token-erase-1");
    let (status, body) = sys
        .cloud
        .call(Method::POST, "/v1/app/installs", Some(install), None)
        .await?;
    assert_eq!(status, 201, "{body}");
    let token = body["token"].as_str().unwrap_or_default().to_owned();
    let install_id = token.split('.').next().unwrap_or_default().to_owned();
    let (lat, lon) = ("35.658034", "139.701636");
    let (status, body) = report_gps(&sys.cloud, &token, "fix-1", (lat, lon)).await?;
    assert_eq!(status, 202, "{body}");

    sys.start_gateways()?;
    let deliveries = sys.settled_deliveries(2, Duration::from_secs(60)).await?;
    let coupon = deliveries
        .iter()
        .find(|d| d["customer"] == json!(c1))
        .and_then(|d| d["coupon"].as_str())
        .unwrap_or_default()
        .to_owned();
    assert!(!coupon.is_empty(), "{deliveries:#?}");
    let pos = sys
        .admin_call(Method::POST, "/v1/admin/stores/s1/pos-keys", json!({}), 201)
        .await?["key"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (status, body) = sys
        .cloud
        .call(
            Method::POST,
            "/v1/redemptions",
            Some(
                json!({"store": "s1", "code": coupon, "amount": 30.0, "order_id": "order-erase-1"}),
            ),
            Some(&pos),
        )
        .await?;
    assert_eq!(status, 201, "{body}");
    // The first visits end (exit timeout) and everything the gateway sent is stored.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let v = sys
            .cloud
            .admin(&format!("/v1/admin/visits?customer={c1}"))
            .await?;
        let visits = v["items"].as_array().cloned().unwrap_or_default();
        if !visits.is_empty() && visits.iter().all(|v| !v["exited"].is_null()) {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "customer 1's visits did not end: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sys.wait_drained(Duration::from_secs(20)).await?;
    let report_before = sys
        .cloud
        .admin("/v1/admin/reports/campaigns/welcome")
        .await?;
    // s1's report over the days around now, from its tallies and from its rows.
    let today: chrono::NaiveDate = sys.cloud.clock_now().to_string()[..10].parse()?;
    let store_report = format!(
        "/v1/admin/reports/stores/s1?from={}&to={}",
        today - chrono::Days::new(1),
        today + chrono::Days::new(1)
    );
    let s1_before = sys.cloud.admin(&store_report).await?;
    let s1_rows = sys
        .cloud
        .admin(&format!("{store_report}&source=rows"))
        .await?;
    assert_eq!(s1_before, s1_rows);
    assert_eq!(s1_before["unique_visitors"], json!(2), "{s1_before}");
    let export = sys
        .cloud
        .admin(&format!("/v1/admin/customers/{c1}/export"))
        .await?;
    let observations = export["observations"].as_array().map_or(0, Vec::len);

    // The erasure, and its receipt.
    let receipt = sys
        .admin_call(
            Method::DELETE,
            &format!("/v1/admin/customers/{c1}"),
            json!(null),
            200,
        )
        .await?;
    let identity = &receipt["identity"];
    assert_eq!(
        (
            &identity["member_id"],
            &identity["line_user"],
            &identity["beacons"],
            &identity["installs"],
            &identity["push_tokens"]
        ),
        (&json!(true), &json!(true), &json!(1), &json!(1), &json!(1)),
        "{receipt:#}"
    );
    assert!(
        receipt["visits"]["visits"].as_u64() >= Some(1),
        "{receipt:#}"
    );
    assert!(
        receipt["removed"]["transitions"].as_u64() >= Some(2),
        "{receipt:#}"
    );
    let removed = &receipt["removed"];
    assert_eq!(
        removed["observations"].as_u64(),
        Some(observations as u64),
        "every observation the export showed: {receipt:#}"
    );
    assert_eq!(
        (
            &removed["decisions"],
            &removed["deliveries_scrubbed"],
            &removed["deliveries_cancelled"],
            &removed["redemptions_scrubbed"],
            &removed["analysis_links"],
            &removed["dedup_keys"]
        ),
        (
            &json!(1),
            &json!(1),
            &json!(0),
            &json!(1),
            &json!(1),
            &json!(1)
        ),
        "{receipt:#}"
    );
    let (status, _) = sys
        .cloud
        .call(
            Method::GET,
            &format!("/v1/admin/customers/{c1}"),
            None,
            Some(omo_tests::cloud::ADMIN_TOKEN),
        )
        .await?;
    assert_eq!(status, 404);
    let (status, _) = sys
        .cloud
        .call(
            Method::DELETE,
            &format!("/v1/admin/customers/{c1}"),
            None,
            Some(omo_tests::cloud::ADMIN_TOKEN),
        )
        .await?;
    assert_eq!(status, 404, "erased once");
    let (status, _) = sys
        .cloud
        .call(
            Method::DELETE,
            &format!("/v1/admin/customers/{c2}"),
            None,
            Some(omo_tests::cloud::ANALYST_TOKEN),
        )
        .await?;
    assert_eq!(status, 403, "an analyst erases nobody");

    // The campaign report keeps its totals.
    let report_after = sys
        .cloud
        .admin("/v1/admin/reports/campaigns/welcome")
        .await?;
    assert_eq!(report_after, report_before);
    // The store report keeps its visits but no longer counts customer 1 as a visitor; the
    // rows, deleted, no longer show their visits.
    let s1_after = sys.cloud.admin(&store_report).await?;
    assert_eq!(s1_after["visits"], s1_before["visits"], "{s1_after}");
    assert_eq!(s1_after["unique_visitors"], json!(1), "{s1_after}");
    let s1_rows = sys
        .cloud
        .admin(&format!("{store_report}&source=rows"))
        .await?;
    assert!(
        s1_rows["visits"].as_u64() < s1_before["visits"].as_u64(),
        "{s1_rows}"
    );

    // Nothing the storage holds leads back to customer 1.
    let needles = [
        c1.as_str(),
        users[0],
        "m-erase-1",
        "Hanako",
        "fcm-token-erase-1",
        install_id.as_str(),
        &carried_beacon(1),
        &carried_beacon(1)["line:".len()..],
        lat,
        lon,
        "order-erase-1",
    ];
    let stored = storage_text(&sys).await?;
    assert!(stored.len() > 50, "a real store: {} entries", stored.len());
    for (key, value) in &stored {
        for n in needles {
            assert!(
                !key.contains(n) && !value.contains(n),
                "{n} is still stored: {key} = {value}"
            );
        }
    }
    // Customer 2's data is all there.
    assert!(stored.iter().any(|(k, _)| k.contains(&c2)));

    // The old install token no longer authenticates.
    let (status, body) = report_gps(&sys.cloud, &token, "fix-2", (lat, lon)).await?;
    assert_eq!(status, 401, "{body}");

    // An hour later the gateway hears customer 1's old beacon again, with customer 3's: only
    // customer 3 gets a visit and an offer.
    sys.wait_settled(Duration::from_secs(90)).await?;
    let deliveries = sys.settled_deliveries(3, Duration::from_secs(30)).await?;
    assert_eq!(deliveries.len(), 3, "{deliveries:#?}");
    assert!(deliveries.iter().any(|d| d["customer"] == json!(c3)));
    let visits = sys.cloud.admin("/v1/admin/visits?store=s1").await?;
    let customers: std::collections::BTreeSet<&str> = visits["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["customer"].as_str())
        .collect();
    assert_eq!(
        customers,
        [c2.as_str(), c3.as_str()].into_iter().collect(),
        "{visits:#}"
    );
    let accepted: Vec<String> = sys.line.accepted().into_iter().map(|a| a.to).collect();
    assert_eq!(accepted.len(), 3, "{accepted:?}");
    assert_eq!(
        metric(
            &sys.cloud.metrics().await?,
            "omo_customers_erased_total",
            &[]
        ),
        1.0
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retention_sweeper_deletes_expired_observations_and_counts_them() -> anyhow::Result<()>
{
    use omo_tests::cloud::{CloudUnderTest, Creds, Outbound};
    let mut cloud = CloudUnderTest::new(vec![Creds::new("s1", "g1")?], None)?;
    cloud.set_outbound(Outbound {
        sections: "[retention]\nobservations_days = 30\nsweep_interval_s = 1\nbatch = 50\n".into(),
        ..Outbound::default()
    })?;
    cloud.start()?;
    let install = CloudUnderTest::install_for_member("ios", "m-retention");
    let (status, body) = cloud
        .call(Method::POST, "/v1/app/installs", Some(install), None)
        .await?;
    assert_eq!(status, 201, "{body}");
    let token = body["token"].as_str().unwrap_or_default().to_owned();
    let customer = body["customer_id"].as_str().unwrap_or_default().to_owned();
    let here = ("35.6581", "139.7017");
    for i in 0..30 {
        let (status, body) = report_gps(&cloud, &token, &format!("old-{i}"), here).await?;
        assert_eq!(status, 202, "{body}");
    }
    let export = cloud
        .admin(&format!("/v1/admin/customers/{customer}/export"))
        .await?;
    assert_eq!(export["observations"].as_array().map(Vec::len), Some(30));
    // Let the stages read them, then come back 40 days later.
    tokio::time::sleep(Duration::from_secs(2)).await;
    cloud.stop()?;
    let now = chrono::Utc::now();
    let later = (now + chrono::Days::new(40)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    cloud.share_clock(
        &later,
        1,
        &now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    );
    cloud.start()?;
    let (status, body) = report_gps(&cloud, &token, "new-1", here).await?;
    assert_eq!(status, 202, "{body}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let m = cloud.metrics().await?;
        let deleted = |kind: &str| {
            metric(
                &m,
                "omo_retention_deleted_total",
                &[&format!("kind=\"{kind}\"")],
            )
        };
        if deleted("observations") >= 30.0 && deleted("processed_ids") >= 30.0 {
            assert!(deleted("ticks") >= 1.0, "{m}");
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the sweeper did not delete the expired rows:\n{m}\n{}",
            cloud.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Only today's report is left; the customer is not touched.
    let export = cloud
        .admin(&format!("/v1/admin/customers/{customer}/export"))
        .await?;
    assert_eq!(
        export["observations"].as_array().map(Vec::len),
        Some(1),
        "{export:#}"
    );
    assert_eq!(export["customer"]["member_id"], "m-retention");
    assert!(cloud.log().contains("retention sweep deleted expired rows"));
    Ok(())
}
