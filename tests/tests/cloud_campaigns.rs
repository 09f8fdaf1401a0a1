//! Campaign definitions through the real `omo-cloud`'s admin API: validated by field against
//! the registry and the cloud's milestones, stored as versions, paused and resumed.

use omo_tests::cloud::{CloudUnderTest, Creds, ADMIN_TOKEN, ANALYST_TOKEN};
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaigns_are_validated_versioned_and_paused() -> anyhow::Result<()> {
    let mut cloud = CloudUnderTest::new(vec![Creds::new("s1", "g1")?], None)?;
    cloud.start()?;
    let campaign = json!({
        "name": "Welcome coffee",
        "trigger": {"kind": "dwell", "minutes": 10},
        "places": {"stores": ["s1"]},
        "schedule": {"from": "2026-11-01", "to": "2026-12-31", "days": ["mon", "sat"], "hours": {"from": "10:00:00", "to": "20:00:00"}},
        "caps": {"per_customer": 1, "period_days": 7},
        "budget": 500,
        "offer_ttl_minutes": 60,
        "channels": ["line", "push"],
        "variants": [{"id": "a", "weight": 1, "template": {"text": "Hi {name}: {coupon}"}}],
        "holdout_percent": 10
    });
    let admin = Some(ADMIN_TOKEN);
    let (status, body) = cloud
        .call(
            Method::PUT,
            "/v1/admin/campaigns/coffee",
            Some(campaign.clone()),
            admin,
        )
        .await?;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["version"], 1);

    let mut bad = campaign.clone();
    bad["places"] = json!({"zones": ["nowhere"]});
    bad["schedule"]["time_zone"] = json!("Mars/Olympus");
    bad["caps"]["per_customer"] = json!(0);
    bad["variants"][0]["template"]["text"] = json!("Hi {nickname}");
    let (status, body) = cloud
        .call(Method::PUT, "/v1/admin/campaigns/coffee", Some(bad), admin)
        .await?;
    assert_eq!(status, 422, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    for field in [
        "schedule.time_zone",
        "caps.per_customer",
        "variants[0].template.text",
        "places.zones",
    ] {
        assert!(message.contains(field), "{field} in {message}");
    }
    let (status, body) = cloud
        .call(
            Method::PUT,
            "/v1/admin/campaigns/coffee",
            Some(json!({"name": 3})),
            admin,
        )
        .await?;
    assert_eq!(status, 422, "{body}");

    assert_eq!(
        cloud
            .call(
                Method::POST,
                "/v1/admin/campaigns/coffee/pause",
                None,
                Some(ANALYST_TOKEN)
            )
            .await?
            .0,
        403
    );
    let (status, body) = cloud
        .call(
            Method::POST,
            "/v1/admin/campaigns/coffee/pause",
            None,
            admin,
        )
        .await?;
    assert_eq!(
        (status, &body["version"], &body["campaign"]["paused"]),
        (200, &json!(2), &json!(true)),
        "{body}"
    );
    let read = cloud
        .call(
            Method::GET,
            "/v1/admin/campaigns/coffee",
            None,
            Some(ANALYST_TOKEN),
        )
        .await?
        .1;
    assert_eq!(read["campaign"]["paused"], true);
    let (status, body) = cloud
        .call(
            Method::POST,
            "/v1/admin/campaigns/coffee/resume",
            None,
            admin,
        )
        .await?;
    assert_eq!((status, &body["version"]), (200, &json!(3)), "{body}");
    assert_eq!(
        cloud
            .call(Method::POST, "/v1/admin/campaigns/none/pause", None, admin)
            .await?
            .0,
        404
    );
    assert_eq!(
        cloud.admin("/v1/admin/campaigns").await?["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    cloud.stop()?;
    Ok(())
}
