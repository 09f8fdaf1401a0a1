//! Campaign definitions through the real `omo-cloud`'s admin API: validated by field against
//! the registry and the cloud's milestones, stored as versions, paused and resumed; drafts
//! launched and campaigns ended; each version's changes; the reach of a definition.

use omo_tests::cloud::{CloudUnderTest, Creds, ADMIN_TOKEN, ANALYST_TOKEN, MARKETER_TOKEN};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draft_is_launched_paused_and_ended_and_each_version_says_what_changed(
) -> anyhow::Result<()> {
    let mut cloud = CloudUnderTest::new(vec![Creds::new("s1", "g1")?], None)?;
    cloud.start()?;
    let admin = Some(ADMIN_TOKEN);
    let draft = json!({
        "name": "Autumn tea",
        "draft": true,
        "trigger": {"kind": "enter"},
        "places": {"stores": ["s1"]},
        "audience": {"include_tags": ["tea"]},
        "schedule": {"from": "2026-01-01", "to": "2099-12-31", "days": ["mon","tue","wed","thu","fri","sat","sun"]},
        "caps": {"per_customer": 1, "period_days": 7},
        "budget": 100,
        "offer_ttl_minutes": 60,
        "channels": ["line", "push"],
        "variants": [{"id": "a", "weight": 1, "template": {"text": "Tea for you: {coupon}"}}],
    });
    let call = |m: Method, path: &'static str, body: Option<serde_json::Value>| {
        let cloud = &cloud;
        async move { cloud.call(m, path, body, admin).await }
    };
    let (status, body) = call(Method::PUT, "/v1/admin/campaigns/tea", Some(draft.clone())).await?;
    assert_eq!(
        (status, &body["campaign"]["draft"]),
        (201, &json!(true)),
        "{body}"
    );
    // Whom it would reach: two customers tagged tea, one on LINE, one on LINE and push; a
    // third without the tag; a fourth tagged but reachable on no channel.
    for c in [
        json!({"line_user": "U1", "tags": ["tea"], "consent": {"line": true}}),
        json!({"line_user": "U2", "tags": ["tea"], "consent": {"line": true, "push": false}}),
        json!({"line_user": "U3", "tags": ["coffee"], "consent": {"line": true}}),
        json!({"tags": ["tea"]}),
    ] {
        let (status, body) = call(Method::POST, "/v1/admin/customers", Some(c)).await?;
        assert_eq!(status, 201, "{body}");
    }
    let (status, reach) = call(
        Method::POST,
        "/v1/admin/campaigns/reach",
        Some(draft.clone()),
    )
    .await?;
    assert_eq!(status, 200, "{reach}");
    assert_eq!(
        (
            &reach["customers"],
            &reach["in_audience"],
            &reach["unreachable"]
        ),
        (&json!(4), &json!(3), &json!(1)),
        "{reach}"
    );
    assert_eq!(reach["sent_on"], json!({"line": 2, "push": 0}), "{reach}");
    let (status, body) = call(
        Method::POST,
        "/v1/admin/campaigns/reach",
        Some(json!({"name": 1})),
    )
    .await?;
    assert_eq!(status, 422, "{body}");

    // A 422 names its fields one by one, for a form.
    let mut bad = draft.clone();
    bad["caps"]["per_customer"] = json!(0);
    bad["budget"] = json!(0);
    let (status, body) = call(Method::PUT, "/v1/admin/campaigns/tea", Some(bad)).await?;
    assert_eq!(status, 422, "{body}");
    let fields: Vec<&str> = body["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["field"].as_str())
        .collect();
    assert!(
        fields.contains(&"caps.per_customer") && fields.contains(&"budget"),
        "{body}"
    );

    let (status, body) = call(Method::POST, "/v1/admin/campaigns/tea/end", None).await?;
    assert_eq!(status, 409, "a draft is not ended: {body}");
    assert_eq!(
        call(Method::POST, "/v1/admin/campaigns/tea/pause", None)
            .await?
            .0,
        409,
        "a draft is not paused"
    );
    // A PUT does not launch (launching is asked for on its own), and a composer's new campaign
    // (If-None-Match: *) never replaces one with its id.
    let mut launched = draft.clone();
    launched["draft"] = json!(false);
    let (status, body) = call(Method::PUT, "/v1/admin/campaigns/tea", Some(launched)).await?;
    assert_eq!(
        (status, body["error"]["fields"][0]["field"].as_str()),
        (422, Some("draft")),
        "{body}"
    );
    let r = omo_cloud::tls::http_client_builder()
        .build()?
        .put(format!(
            "http://127.0.0.1:{}/v1/admin/campaigns/tea",
            cloud.http_port
        ))
        .bearer_auth(ADMIN_TOKEN)
        .header("if-none-match", "*")
        .json(&draft)
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 409);
    assert_eq!(
        call(
            Method::PUT,
            "/v1/admin/campaigns/reach",
            Some(draft.clone())
        )
        .await?
        .0,
        422
    );
    assert_eq!(
        cloud
            .call(
                Method::POST,
                "/v1/admin/campaigns/reach",
                Some(draft.clone()),
                Some(ANALYST_TOKEN)
            )
            .await?
            .0,
        403,
        "reach counts are for those who compose campaigns"
    );
    // A marketer launches campaigns; an analyst may not; neither a marketer nor an analyst
    // reads or writes customers.
    let as_role = |m: Method, path: &'static str, token: &'static str| {
        let cloud = &cloud;
        async move { cloud.call(m, path, None, Some(token)).await.map(|r| r.0) }
    };
    assert_eq!(
        as_role(
            Method::POST,
            "/v1/admin/campaigns/tea/launch",
            ANALYST_TOKEN
        )
        .await?,
        403
    );
    for token in [MARKETER_TOKEN, ANALYST_TOKEN] {
        assert_eq!(
            as_role(Method::GET, "/v1/admin/customers", token).await?,
            403
        );
        assert_eq!(
            as_role(Method::GET, "/v1/admin/decisions", token).await?,
            403
        );
    }
    assert_eq!(
        as_role(
            Method::GET,
            "/v1/admin/campaigns/tea/versions",
            MARKETER_TOKEN
        )
        .await?,
        200
    );
    let (status, body) = cloud
        .call(
            Method::POST,
            "/v1/admin/campaigns/tea/launch",
            None,
            Some(MARKETER_TOKEN),
        )
        .await?;
    assert_eq!((status, &body["version"]), (200, &json!(2)), "{body}");
    assert!(body["campaign"].get("draft").is_none(), "{body}");
    assert_eq!(
        call(Method::POST, "/v1/admin/campaigns/tea/launch", None)
            .await?
            .0,
        409
    );
    let (status, body) = call(Method::PUT, "/v1/admin/campaigns/tea", Some(draft.clone())).await?;
    assert_eq!(
        (status, body["error"]["fields"][0]["field"].as_str()),
        (422, Some("draft")),
        "{body}"
    );
    let mut edited = draft.clone();
    edited["draft"] = json!(false);
    edited["budget"] = json!(250);
    edited["variants"][0]["template"]["text"] = json!("Tea time: {coupon}");
    assert_eq!(
        call(Method::PUT, "/v1/admin/campaigns/tea", Some(edited.clone()))
            .await?
            .0,
        200
    );
    assert_eq!(
        call(Method::POST, "/v1/admin/campaigns/tea/pause", None)
            .await?
            .0,
        200
    );
    assert_eq!(
        call(Method::POST, "/v1/admin/campaigns/tea/pause", None)
            .await?
            .0,
        409,
        "paused already"
    );
    let (status, body) = call(Method::POST, "/v1/admin/campaigns/tea/end", None).await?;
    assert_eq!(
        (status, &body["campaign"]["ended"]),
        (200, &json!(true)),
        "{body}"
    );
    assert_eq!(
        call(Method::POST, "/v1/admin/campaigns/tea/resume", None)
            .await?
            .0,
        409
    );
    assert_eq!(
        call(Method::PUT, "/v1/admin/campaigns/tea", Some(edited))
            .await?
            .0,
        422
    );

    let (status, v) = cloud
        .call(
            Method::GET,
            "/v1/admin/campaigns/tea/versions",
            None,
            Some(ANALYST_TOKEN),
        )
        .await?;
    assert_eq!(status, 200, "{v}");
    let items = v["items"].as_array().unwrap();
    let versions: Vec<u64> = items.iter().filter_map(|i| i["version"].as_u64()).collect();
    assert_eq!(versions, [5, 4, 3, 2, 1]);
    let changed = |i: usize| -> Vec<String> {
        items[i]["changes"]
            .as_array()
            .map(|c| {
                c.iter()
                    .filter_map(|c| c["field"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(changed(0), ["ended"]);
    assert_eq!(changed(1), ["paused"]);
    assert_eq!(changed(2), ["budget", "variants[0].template.text"]);
    assert_eq!(changed(3), ["draft"]);
    assert!(
        items[4]["changes"].is_null(),
        "the first version changed nothing before it"
    );
    assert_eq!(items[2]["changes"][0]["before"], 100);
    assert_eq!(items[2]["changes"][0]["after"], 250);
    cloud.stop()?;
    Ok(())
}
