//! Online meets offline through the real binaries.
//!
//! Purchases: a store purchase paying with an offer's coupon is attributed to that send; the
//! same order again is recognised and another order under its id refused; POS keys, e-commerce
//! keys and the operator token each send only their own kind; online purchases find the
//! customer by LINE id or member id; a history import lands its valid lines and names the
//! others by line number; an erasure leaves the purchases without the customer.
//!
//! Tracked links: one click counted per delivery, a guessed token 404. QR check-in: a store's
//! and a zone's posters, and an app's scan opening a visit at once.

use std::time::Duration;

use omo_tests::cloud::ADMIN_TOKEN;
use omo_tests::scenario::Visit;
use omo_tests::system::{carried_beacon, Layout, System};
use reqwest::Method;
use serde_json::{json, Value};

const USER: &str = "U00000000000000000000000000000c01";

fn purchase(order: &str, channel: &str, store: Option<&str>, customer: Value, at: &str) -> Value {
    let mut p = json!({"order_id": order, "channel": channel, "customer": customer, "at": at,
        "currency": "JPY", "lines": [
            {"sku": "latte-m", "category": "coffee", "quantity": 2, "amount": 960.0},
            {"sku": "scone", "category": "bakery", "quantity": 1, "amount": 380.0}]});
    if let Some(s) = store {
        p["store"] = json!(s);
    }
    p
}

async fn post(sys: &System, path: &str, body: Value, key: &str) -> anyhow::Result<(u16, Value)> {
    sys.cloud
        .call(Method::POST, path, Some(body), Some(key))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purchases_are_attributed_idempotent_authorised_imported_and_erased() -> anyhow::Result<()>
{
    let layout = Layout {
        gateways: vec![
            (
                "s1",
                "g1",
                0,
                vec![Visit {
                    beacon: 1,
                    from_s: 0,
                    to_s: 300,
                }],
            ),
            ("s2", "g2", 0, Vec::new()),
        ],
        site: String::new(),
        mosquitto: false,
        speed: 60,
    };
    let mut sys = System::build(layout).await?;
    sys.welcome_campaign(&["s1"], &["line"]).await?;
    let c1 = sys.line_customer(Some(&carried_beacon(1)), USER).await?;
    sys.admin_call(
        Method::PATCH,
        &format!("/v1/admin/customers/{c1}"),
        json!({"member_id": "m-buyer"}),
        200,
    )
    .await?;
    sys.gateway("g1").start()?;
    let deliveries = sys.settled_deliveries(1, Duration::from_secs(60)).await?;
    let offer = &deliveries[0];
    assert_eq!(offer["status"], "delivered", "{offer}");
    let coupon = offer["coupon"].as_str().unwrap_or_default().to_owned();
    let key = |v: Value| v["key"].as_str().unwrap_or_default().to_owned();
    let pos1 = key(sys
        .admin_call(Method::POST, "/v1/admin/stores/s1/pos-keys", json!({}), 201)
        .await?);
    let pos2 = key(sys
        .admin_call(Method::POST, "/v1/admin/stores/s2/pos-keys", json!({}), 201)
        .await?);
    let shop = key(sys
        .admin_call(Method::POST, "/v1/admin/ecommerce-keys", json!({}), 201)
        .await?);
    let now = sys.cloud.clock_now().to_string();

    // A store purchase paid with the offer's coupon: attributed to that send.
    let paid = purchase(
        "pos-1001",
        "store",
        Some("s1"),
        json!({"coupon": coupon}),
        &now,
    );
    let (status, body) = post(&sys, "/v1/purchases", paid.clone(), &pos1).await?;
    assert_eq!(status, 201, "{body}");
    let p = &body["purchase"];
    assert_eq!(
        (&p["customer_id"], &p["resolved_by"], &p["total"]),
        (&json!(c1), &json!("coupon"), &json!(1340.0)),
        "{body}"
    );
    assert_eq!(
        p["attributed"],
        json!({"coupon": coupon, "delivery": offer["id"], "campaign": "welcome", "variant": "a"}),
        "{body}"
    );
    // Again: recognised; another order under the same id: refused.
    let (status, body) = post(&sys, "/v1/purchases", paid.clone(), &pos1).await?;
    assert_eq!((status, &body["duplicate"]), (200, &json!(true)), "{body}");
    let mut other = paid.clone();
    other["lines"][0]["quantity"] = json!(3);
    let (status, body) = post(&sys, "/v1/purchases", other, &pos1).await?;
    assert_eq!(status, 409, "{body}");

    // Who may send what.
    for (body, key, want) in [
        (paid.clone(), pos2.as_str(), 403),
        (paid.clone(), shop.as_str(), 403),
        (paid.clone(), "pk_nosuch.secret", 401),
        (
            purchase("web-1", "online", None, json!({"line_user": USER}), &now),
            pos1.as_str(),
            403,
        ),
        (
            purchase("web-1", "online", None, json!({"line_user": USER}), &now),
            omo_tests::cloud::ANALYST_TOKEN,
            403,
        ),
    ] {
        let (status, answer) = post(&sys, "/v1/purchases", body, key).await?;
        assert_eq!(status, want, "{answer}");
    }
    let (status, _) = sys
        .cloud
        .call(Method::POST, "/v1/purchases", Some(paid.clone()), None)
        .await?;
    assert_eq!(status, 401);

    // Online purchases by LINE id and by member id; bad fields named.
    for (order, who) in [
        ("web-1", json!({"line_user": USER})),
        ("web-2", json!({"member_id": "m-buyer"})),
    ] {
        let (status, body) = post(
            &sys,
            "/v1/purchases",
            purchase(order, "online", None, who, &now),
            &shop,
        )
        .await?;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["purchase"]["customer_id"], json!(c1), "{body}");
    }
    let mut bad = purchase("web-3", "online", None, json!({}), &now);
    bad["lines"][1]["amount"] = json!(-5.0);
    let (status, body) = post(&sys, "/v1/purchases", bad, &shop).await?;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("lines[1].amount"), "{body}");
    let mut bad = purchase("web-3", "online", None, json!({}), &now);
    bad["currency"] = json!("yen");
    let (status, body) = post(&sys, "/v1/purchases", bad, &shop).await?;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("currency"), "{body}");

    // A history import: valid lines land, the others are named by line number.
    let mut bad_quantity = purchase("hist-3", "online", None, json!({}), &now);
    bad_quantity["lines"][0]["quantity"] = json!(0);
    let ndjson = [
        purchase(
            "hist-1",
            "online",
            None,
            json!({"member_id": "m-buyer"}),
            &now,
        )
        .to_string(),
        "{not json".to_owned(),
        purchase(
            "hist-2",
            "online",
            None,
            json!({"member_id": "m-unknown"}),
            &now,
        )
        .to_string(),
        String::new(),
        bad_quantity.to_string(),
        purchase("hist-4", "store", Some("s1"), json!({}), &now).to_string(),
        purchase("web-1", "online", None, json!({"line_user": USER}), &now).to_string(),
    ]
    .join("\n");
    let resp = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/v1/purchases/import",
            sys.cloud.http_port
        ))
        .bearer_auth(&shop)
        .body(ndjson)
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 200);
    let answer: Value = resp.json().await?;
    assert_eq!(
        (
            &answer["lines"],
            &answer["stored"],
            &answer["duplicates"],
            &answer["refused"]
        ),
        (&json!(6), &json!(2), &json!(1), &json!(3)),
        "{answer:#}"
    );
    let rejected: Vec<(u64, u64)> = answer["rejected"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r["line"].as_u64().unwrap_or_default(),
                r["status"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(rejected, [(2, 400), (5, 422), (6, 403)], "{answer:#}");
    assert!(answer["rejected"][1]["error"]
        .as_str()
        .is_some_and(|e| e.contains("lines[0].quantity")));

    // Without a key, an import is refused before its body is read.
    let resp = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/v1/purchases/import",
            sys.cloud.http_port
        ))
        .body("{}\n")
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 401);

    // A history file larger than other requests may be (256 KiB): 1,500 orders.
    let big: String = (0..1500)
        .map(|i| purchase(&format!("bulk-{i}"), "online", None, json!({}), &now).to_string() + "\n")
        .collect();
    assert!(big.len() > 256 * 1024, "{}", big.len());
    let answer: Value = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/v1/purchases/import",
            sys.cloud.http_port
        ))
        .bearer_auth(&shop)
        .body(big)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(answer["stored"], 1500, "{answer:#}");

    // A revoked key records nothing more; an unknown one cannot be revoked.
    let id_of = |k: &str| k.split('.').next().unwrap_or_default().to_owned();
    let keys = sys.cloud.admin("/v1/admin/ecommerce-keys").await?;
    assert_eq!(keys["items"], json!([id_of(&shop)]), "{keys}");
    let revoke_shop = format!("/v1/admin/ecommerce-keys/{}", id_of(&shop));
    sys.admin_call(Method::DELETE, &revoke_shop, json!(null), 204)
        .await?;
    sys.admin_call(Method::DELETE, &revoke_shop, json!(null), 404)
        .await?;
    let keys = sys.cloud.admin("/v1/admin/ecommerce-keys").await?;
    assert_eq!(keys["items"], json!([]), "{keys}");
    let online = purchase("web-9", "online", None, json!({}), &now);
    let (status, body) = post(&sys, "/v1/purchases", online, &shop).await?;
    assert_eq!(status, 401, "{body}");
    let revoke_pos2 = format!("/v1/admin/stores/s2/pos-keys/{}", id_of(&pos2));
    sys.admin_call(Method::DELETE, &revoke_pos2, json!(null), 204)
        .await?;
    sys.admin_call(Method::DELETE, &revoke_pos2, json!(null), 404)
        .await?;
    let s2 = sys.cloud.admin("/v1/admin/stores/s2").await?;
    assert_eq!(s2["pos_keys"], json!([]), "{s2}");
    let at_s2 = purchase("pos-2001", "store", Some("s2"), json!({}), &now);
    let (status, body) = post(&sys, "/v1/purchases", at_s2, &pos2).await?;
    assert_eq!(status, 401, "{body}");
    // The other store's key still works (the same order again: recognised).
    let (status, body) = post(&sys, "/v1/purchases", paid.clone(), &pos1).await?;
    assert_eq!(status, 200, "{body}");
    let (status, _) = sys
        .cloud
        .call(
            Method::DELETE,
            "/v1/admin/ecommerce-keys/ek_nosuch",
            None,
            Some(omo_tests::cloud::ANALYST_TOKEN),
        )
        .await?;
    assert_eq!(status, 403, "an analyst revokes nothing");

    // The customer's purchases: the coupon one, two online, one imported.
    let theirs = sys
        .cloud
        .admin(&format!("/v1/admin/purchases?customer={c1}"))
        .await?;
    let orders: Vec<&str> = theirs["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["order_id"].as_str())
        .collect();
    let mut sorted = orders.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        ["hist-1", "pos-1001", "web-1", "web-2"],
        "{theirs:#}"
    );
    let export = sys
        .cloud
        .admin(&format!("/v1/admin/customers/{c1}/export"))
        .await?;
    assert_eq!(export["purchases"].as_array().map(Vec::len), Some(4));

    // Erased: the purchases stay for the store's figures, without the customer.
    let receipt = sys
        .admin_call(
            Method::DELETE,
            &format!("/v1/admin/customers/{c1}"),
            json!(null),
            200,
        )
        .await?;
    assert_eq!(receipt["removed"]["purchases_unlinked"], 4, "{receipt:#}");
    let theirs = sys
        .cloud
        .admin(&format!("/v1/admin/purchases?customer={c1}"))
        .await?;
    assert_eq!(theirs["items"], json!([]), "{theirs:#}");
    let at_s1 = sys.cloud.admin("/v1/admin/purchases?store=s1").await?;
    let kept = &at_s1["items"][0];
    assert_eq!(
        (&kept["order_id"], &kept["customer_id"], &kept["customer"]),
        (&json!("pos-1001"), &Value::Null, &json!({})),
        "{at_s1:#}"
    );
    // 1,504 online purchases; a page holds 1,000 at most.
    let online = sys
        .cloud
        .admin("/v1/admin/purchases?online=true&limit=5000")
        .await?;
    assert_eq!(
        online["items"].as_array().map(Vec::len),
        Some(1000),
        "{online:#}"
    );
    assert!(online["items"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|p| p["customer_id"].is_null()
            && !p.to_string().contains("m-buyer")
            && !p.to_string().contains(USER)));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_link_counts_one_click_per_delivery_and_a_guessed_one_is_404() -> anyhow::Result<()>
{
    let layout = Layout {
        gateways: vec![(
            "s1",
            "g1",
            0,
            vec![Visit {
                beacon: 1,
                from_s: 0,
                to_s: 300,
            }],
        )],
        site: String::new(),
        mosquitto: false,
        speed: 60,
    };
    let mut sys = System::build(layout).await?;
    let day = omo_tests::scenario::START[..10].parse::<chrono::NaiveDate>()?;
    let campaign = json!({
        "name": "Autumn", "trigger": {"kind": "enter"}, "places": {"stores": ["s1"]},
        "schedule": {"from": (day - chrono::Days::new(1)).to_string(), "to": (day + chrono::Days::new(1)).to_string(), "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]},
        "caps": {"per_customer": 1, "period_days": 1}, "budget": 100, "offer_ttl_minutes": 600,
        "channels": ["line"],
        "variants": [{"id": "a", "weight": 1, "template": {"text": "Autumn menu: {link}", "link": "https://brand.example.com/autumn"}}]
    });
    sys.admin_call(Method::PUT, "/v1/admin/campaigns/autumn", campaign, 201)
        .await?;
    sys.line_customer(Some(&carried_beacon(1)), USER).await?;
    sys.gateway("g1").start()?;
    let deliveries = sys.settled_deliveries(1, Duration::from_secs(60)).await?;
    assert_eq!(deliveries[0]["status"], "delivered", "{deliveries:#?}");
    let sent = sys.line.accepted();
    let link = sent[0].texts[0]
        .strip_prefix("Autumn menu: ")
        .unwrap_or_default()
        .to_owned();
    let base = format!("http://127.0.0.1:{}/r/", sys.cloud.http_port);
    assert!(link.starts_with(&base), "{link}");
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    for _ in 0..3 {
        let resp = no_redirects.get(&link).send().await?;
        assert_eq!(resp.status().as_u16(), 302);
        assert_eq!(
            resp.headers().get("location").and_then(|l| l.to_str().ok()),
            Some("https://brand.example.com/autumn")
        );
    }
    for guess in [
        format!("{base}{}", "0123456789abcdef0123456789abcdef"),
        format!("{base}short"),
        format!("{base}{}", &link[base.len()..].to_uppercase()),
    ] {
        let resp = no_redirects.get(&guess).send().await?;
        assert_eq!(resp.status().as_u16(), 404, "{guess}");
    }
    // Clicked once, between delivered and redeemed in the funnel.
    let report = sys
        .cloud
        .admin("/v1/admin/reports/campaigns/autumn")
        .await?;
    let group = report["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|g| g["group"] == "a")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (&group["funnel"]["delivered"], &group["funnel"]["clicked"]),
        (&json!(1), &json!(1)),
        "{report:#}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qr_check_in_opens_a_visit_at_once() -> anyhow::Result<()> {
    let layout = Layout {
        gateways: vec![("s1", "g1", 0, Vec::new())],
        site: "[[gateway_zones]]\nid = \"floor\"\nstore = \"s1\"\nname = \"Floor\"\ngateways = [\"g1\"]\nmax_distance_m = 15.0\n".into(),
        mosquitto: false,
        speed: 60,
    };
    let sys = System::build(layout).await?;
    let (customer, token) = sys.app_customer("m-qr", None, "fcm-token-qr").await?;
    let store_qr = sys.cloud.admin("/v1/admin/stores/s1/qr").await?;
    let zone_qr = sys.cloud.admin("/v1/admin/stores/s1/qr?zone=floor").await?;
    let code = store_qr["code"].as_str().unwrap_or_default().to_owned();
    let zone_code = zone_qr["code"].as_str().unwrap_or_default().to_owned();
    assert_ne!(code, zone_code);
    assert_eq!(
        store_qr["url"],
        json!(format!("http://127.0.0.1:{}/q/{code}", sys.cloud.http_port))
    );
    let (status, svg) = sys
        .cloud
        .get_text(
            "/v1/admin/stores/s1/qr.svg",
            Some(omo_tests::cloud::ADMIN_TOKEN),
        )
        .await?;
    assert_eq!(status, 200);
    assert!(svg.contains("<svg") && svg.contains("<path"), "{svg}");
    let png = reqwest::Client::new()
        .get(format!(
            "http://127.0.0.1:{}/v1/admin/stores/s1/qr.png?zone=floor",
            sys.cloud.http_port
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?;
    assert_eq!(png.status(), 200);
    assert_eq!(png.headers()["content-type"], "image/png");
    let png = png.bytes().await?;
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 500,
        "{} bytes",
        png.len()
    );
    // A phone's camera: a page asking to scan in the app; an unknown code is 404.
    let (status, page) = sys.cloud.get_text(&format!("/q/{code}"), None).await?;
    assert_eq!(status, 200);
    assert!(page.contains("check in"), "{page}");
    let (status, _) = sys.cloud.get_text("/q/0000000000000000", None).await?;
    assert_eq!(status, 404);

    // The app's scans: the store's, then (later) the floor zone's.
    let scan = |code: &str, key: &str| json!({"code": code, "idempotency_key": key});
    let (status, body) = post(&sys, "/v1/app/checkins", scan(&code, "scan-1"), &token).await?;
    assert_eq!(status, 202, "{body}");
    let (status, body) = post(&sys, "/v1/app/checkins", scan(&code, "scan-1"), &token).await?;
    assert_eq!((status, &body["duplicate"]), (200, &json!(true)), "{body}");
    let (status, body) = post(
        &sys,
        "/v1/app/checkins",
        scan("ffffffffffffffff", "scan-2"),
        &token,
    )
    .await?;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("code"), "{body}");
    let (status, body) = post(&sys, "/v1/app/checkins", scan(&zone_code, "scan-3"), &token).await?;
    assert_eq!(status, 202, "{body}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let v = sys
            .cloud
            .admin(&format!("/v1/admin/visits?customer={customer}"))
            .await?;
        let scopes: Vec<String> = v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| v["sources"] == json!(["qr"]))
            .map(|v| {
                format!(
                    "{}:{}",
                    v["scope"]["kind"].as_str().unwrap_or(""),
                    v["scope"]["id"].as_str().unwrap_or("")
                )
            })
            .collect();
        if scopes.contains(&"store:s1".to_owned()) && scopes.contains(&"zone:floor".to_owned()) {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no QR visits: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_account_link_joins_the_member_and_a_replayed_nonce_is_refused() -> anyhow::Result<()>
{
    let layout = Layout {
        gateways: vec![("s1", "g1", 0, Vec::new())],
        site: String::new(),
        mosquitto: false,
        speed: 60,
    };
    let sys = System::build(layout).await?;
    let member = sys
        .admin_call(
            Method::POST,
            "/v1/admin/customers",
            json!({"member_id": "m-link", "consent": {"location": true}}),
            201,
        )
        .await?["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let event = |id: &str, kind: &str, extra: Value| {
        let mut e = json!({"type": kind, "mode": "active", "timestamp": sys.cloud.clock_now().millis(),
            "webhookEventId": id, "deliveryContext": {"isRedelivery": false},
            "source": {"type": "user", "userId": USER}, "replyToken": "r"});
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            e[k] = v;
        }
        e
    };
    // The LINE user follows the account first: a customer of their own, with LINE consent.
    sys.line_webhook(vec![event("follow-1", "follow", json!({}))])
        .await?;
    let apart = sys.cloud.admin("/v1/admin/customers?limit=1000").await?["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["line_user"] == json!(USER))
        .and_then(|c| c["id"].as_str().map(str::to_owned))
        .unwrap_or_default();
    assert!(!apart.is_empty() && apart != member);

    // The bot gets a link token; the member logs in on the brand's site and gets a nonce.
    let token = sys
        .admin_call(
            Method::POST,
            "/v1/admin/line-links/token",
            json!({"line_user": USER}),
            200,
        )
        .await?["link_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(sys.line.link_tokens(), [(token.clone(), USER.to_owned())]);
    let link = sys
        .admin_call(
            Method::POST,
            "/v1/admin/line-links",
            json!({"member_id": "m-link", "link_token": token}),
            201,
        )
        .await?;
    let nonce = link["nonce"].as_str().unwrap_or_default().to_owned();
    assert_eq!(
        link["url"],
        json!(format!(
            "https://access.line.me/dialog/bot/accountLink?linkToken={token}&nonce={nonce}"
        ))
    );

    // LINE reports the link: the member's customer now has the LINE user and their consent.
    let linked = |id: &str, nonce: &str| {
        event(
            id,
            "accountLink",
            json!({"link": {"result": "ok", "nonce": nonce}}),
        )
    };
    sys.line_webhook(vec![linked("link-1", &nonce)]).await?;
    let m = sys
        .cloud
        .admin(&format!("/v1/admin/customers/{member}"))
        .await?;
    assert_eq!(
        (&m["line_user"], &m["member_id"], &m["consent"]["line"]),
        (&json!(USER), &json!("m-link"), &json!(true)),
        "{m:#}"
    );
    let a = sys
        .cloud
        .admin(&format!("/v1/admin/customers/{apart}"))
        .await?;
    assert_eq!(a["line_user"], Value::Null, "{a:#}");

    // The same event redelivered changes nothing; the nonce again, or one never issued, is
    // refused and logged.
    sys.line_webhook(vec![linked("link-1", &nonce)]).await?;
    sys.line_webhook(vec![linked("link-2", &nonce)]).await?;
    sys.line_webhook(vec![linked("link-3", "never-issued-nonce")])
        .await?;
    let metrics = sys.cloud.metrics().await?;
    let links = |result: &str| {
        omo_tests::cloud::metric(
            &metrics,
            "omo_line_account_links_total",
            &[&format!("result=\"{result}\"")],
        )
    };
    assert_eq!(
        (links("joined"), links("redelivered"), links("refused")),
        (1.0, 1.0, 2.0),
        "{metrics}"
    );
    assert_eq!(
        sys.cloud.log().matches("LINE account link refused").count(),
        2
    );
    let m2 = sys
        .cloud
        .admin(&format!("/v1/admin/customers/{member}"))
        .await?;
    assert_eq!(m2, m, "unchanged by the refused links");
    // A bad link token or user id is refused by field.
    let (status, body) = sys
        .cloud
        .call(
            Method::POST,
            "/v1/admin/line-links",
            Some(json!({"member_id": "m-link", "link_token": "a b"})),
            Some(omo_tests::cloud::ADMIN_TOKEN),
        )
        .await?;
    assert_eq!(status, 422, "{body}");
    Ok(())
}

/// Waits until the decisions of `campaign` number `n`; they, in no particular order.
async fn decisions_of(sys: &System, campaign: &str, n: usize) -> anyhow::Result<Vec<Value>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let d: Vec<Value> = sys.cloud.admin("/v1/admin/decisions?limit=1000").await?["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["campaign"] == json!(campaign))
            .cloned()
            .collect();
        if d.len() >= n || tokio::time::Instant::now() > deadline {
            return Ok(d);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_triggers_a_follow_up_once_and_a_tier_crossing_enters_the_audience(
) -> anyhow::Result<()> {
    let layout = Layout {
        gateways: vec![("s1", "g1", 0, Vec::new())],
        site: String::new(),
        mosquitto: false,
        speed: 1,
    };
    let sys = System::build(layout).await?;
    let c1 = sys.line_customer(None, USER).await?;
    sys.admin_call(
        Method::PATCH,
        &format!("/v1/admin/customers/{c1}"),
        json!({"member_id": "m-fan"}),
        200,
    )
    .await?;
    let day = sys.cloud.clock_now().to_string()[..10].parse::<chrono::NaiveDate>()?;
    let schedule = json!({"from": (day - chrono::Days::new(1)).to_string(), "to": (day + chrono::Days::new(1)).to_string(),
        "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "time_zone": "Asia/Tokyo"});
    let campaign = |trigger: Value, places: Value, audience: Value, text: &str| {
        json!({"name": text, "trigger": trigger, "places": places, "audience": audience,
            "schedule": schedule, "caps": {"per_customer": 5, "period_days": 1}, "budget": 100,
            "offer_ttl_minutes": 60, "channels": ["line"],
            "variants": [{"id": "a", "weight": 1, "template": {"text": text}}]})
    };
    // A rule-based tag, and a follow-up for coffee buyers after a store purchase.
    sys.admin_call(
        Method::PUT,
        "/v1/admin/tag-rules/coffee-fan",
        json!({"kind": "bought_category", "category": "coffee", "within_days": 30}),
        200,
    )
    .await?;
    let (status, body) = sys
        .cloud
        .call(
            Method::PUT,
            "/v1/admin/tag-rules/bad",
            Some(json!({"kind": "bought_category", "category": "coffee", "within_days": 0})),
            Some(ADMIN_TOKEN),
        )
        .await?;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("within_days"), "{body}");
    sys.admin_call(
        Method::PUT,
        "/v1/admin/campaigns/thanks",
        campaign(
            json!({"kind": "purchase", "channel": "store"}),
            json!({"stores": ["s1"]}),
            json!({"include_tags": ["coffee-fan"]}),
            "Thanks! 10% off online with {coupon}",
        ),
        201,
    )
    .await?;
    // A reward for loyal fans' online orders.
    sys.admin_call(
        Method::PUT,
        "/v1/admin/campaigns/vip",
        campaign(
            json!({"kind": "purchase", "channel": "online"}),
            json!({"online": true}),
            json!({"tiers": ["loyal", "champion"]}),
            "A gift for our loyal fans: {coupon}",
        ),
        201,
    )
    .await?;
    // Tiers are checked against the config; online needs a purchase trigger.
    for (body, field) in [
        (
            campaign(
                json!({"kind": "enter"}),
                json!({"stores": ["s1"]}),
                json!({"tiers": ["gold"]}),
                "x",
            ),
            "audience.tiers",
        ),
        (
            campaign(
                json!({"kind": "enter"}),
                json!({"online": true}),
                json!({}),
                "x",
            ),
            "places.online",
        ),
    ] {
        let (status, answer) = sys
            .cloud
            .call(
                Method::PUT,
                "/v1/admin/campaigns/bad",
                Some(body),
                Some(ADMIN_TOKEN),
            )
            .await?;
        assert_eq!(status, 422, "{answer}");
        assert!(answer.to_string().contains(field), "{field}: {answer}");
    }
    let key = |v: Value| v["key"].as_str().unwrap_or_default().to_owned();
    let pos = key(sys
        .admin_call(Method::POST, "/v1/admin/stores/s1/pos-keys", json!({}), 201)
        .await?);
    let shop = key(sys
        .admin_call(Method::POST, "/v1/admin/ecommerce-keys", json!({}), 201)
        .await?);
    let profile_path = format!("/v1/admin/customers/{c1}/profile");
    let profile = || sys.cloud.admin(&profile_path);
    assert_eq!(profile().await?["tier"], "new");

    // A store purchase with coffee: the follow-up goes out once, even when the POS sends the
    // order again.
    let now = sys.cloud.clock_now().to_string();
    let bought = purchase(
        "pos-7",
        "store",
        Some("s1"),
        json!({"member_id": "m-fan"}),
        &now,
    );
    for want in [201, 200] {
        let (status, body) = post(&sys, "/v1/purchases", bought.clone(), &pos).await?;
        assert_eq!(status, want, "{body}");
    }
    let sent = sys.settled_deliveries(1, Duration::from_secs(30)).await?;
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert_eq!(
        (&sent[0]["campaign"], &sent[0]["status"], &sent[0]["store"]),
        (&json!("thanks"), &json!("delivered"), &json!("s1")),
        "{sent:#?}"
    );
    let p = profile().await?;
    assert_eq!(
        (
            &p["purchases"],
            &p["store_purchases"],
            &p["tier"],
            &p["tags"]
        ),
        (
            &json!(1),
            &json!(1),
            &json!("regular"),
            &json!(["coffee-fan"])
        ),
        "{p}"
    );

    // A small online order: the customer is still "regular", outside the vip audience.
    let small = json!({"order_id": "web-1", "channel": "online", "customer": {"line_user": USER},
        "at": sys.cloud.clock_now().to_string(), "currency": "JPY",
        "lines": [{"sku": "mug", "category": "goods", "quantity": 1, "amount": 1500.0}]});
    let (status, body) = post(&sys, "/v1/purchases", small, &shop).await?;
    assert_eq!(status, 201, "{body}");
    let vip = decisions_of(&sys, "vip", 1).await?;
    assert_eq!(vip.len(), 1, "{vip:#?}");
    assert_eq!(
        (&vip[0]["outcome"], &vip[0]["reason"]),
        (&json!("suppressed"), &json!("audience")),
        "{vip:#?}"
    );
    // A big one crosses the thresholds (recency 5, frequency 2, monetary 4 = 11): "loyal",
    // and the reward goes out.
    let big = json!({"order_id": "web-2", "channel": "online", "customer": {"member_id": "m-fan"},
        "at": sys.cloud.clock_now().to_string(), "currency": "JPY",
        "lines": [{"sku": "espresso-machine", "category": "machines", "quantity": 1, "amount": 60000.0}]});
    let (status, body) = post(&sys, "/v1/purchases", big, &shop).await?;
    assert_eq!(status, 201, "{body}");
    let sent = sys.settled_deliveries(2, Duration::from_secs(30)).await?;
    let reward: Vec<&Value> = sent
        .iter()
        .filter(|d| d["campaign"] == json!("vip"))
        .collect();
    assert_eq!(reward.len(), 1, "{sent:#?}");
    assert_eq!(
        (&reward[0]["status"], &reward[0]["store"]),
        (&json!("delivered"), &json!("online")),
        "{sent:#?}"
    );
    let p = profile().await?;
    assert_eq!(
        (
            &p["tier"],
            &p["purchases"],
            &p["online_purchases"],
            &p["online_share"]
        ),
        (&json!("loyal"), &json!(3), &json!(2), &json!(2.0 / 3.0)),
        "{p}"
    );
    assert_eq!(
        p["scores"],
        json!({"recency": 5, "frequency": 2, "monetary": 4}),
        "{p}"
    );
    assert_eq!(
        p["spend"]["JPY"],
        json!({"store": 1340.0, "online": 61500.0}),
        "{p}"
    );
    // Exactly one offer per campaign reached LINE.
    assert_eq!(sys.line.accepted().len(), 2);
    // The profile is in the customer's export.
    let export = sys
        .cloud
        .admin(&format!("/v1/admin/customers/{c1}/export"))
        .await?;
    assert_eq!(export["profile"]["customer"], json!(c1), "{export}");

    // The store report of the day in s1's time zone: the purchase, and the follow-up offer
    // (decided at s1) with no click or redemption yet.
    let today = sys.cloud.clock_now().to_string()[..10].to_owned();
    let s1 = sys
        .cloud
        .admin(&format!(
            "/v1/admin/reports/stores/s1?from={today}&to={today}"
        ))
        .await?;
    assert_eq!(
        (
            &s1["purchases"]["count"],
            &s1["purchases"]["identified"],
            &s1["purchases"]["revenue"]
        ),
        (&json!(1), &json!(1), &json!({"JPY": 1340.0})),
        "{s1}"
    );
    assert_eq!(
        s1["offers"],
        json!({"decided": 1, "delivered": 1, "clicked": 0, "redeemed": 0}),
        "{s1}"
    );
    let online = sys
        .cloud
        .admin(&format!(
            "/v1/admin/reports/stores/online?from={today}&to={today}"
        ))
        .await?;
    assert_eq!(
        (&online["purchases"]["count"], &online["offers"]["decided"]),
        (&json!(2), &json!(1)),
        "{online}"
    );
    // The tallies the reports read agree with the stored rows they count.
    for (place, report) in [("s1", &s1), ("online", &online)] {
        let rows = sys
            .cloud
            .admin(&format!(
                "/v1/admin/reports/stores/{place}?from={today}&to={today}&source=rows"
            ))
            .await?;
        assert_eq!(&rows, report, "{place}");
    }
    // As CSV too, and refused for a reversed range or an unknown store.
    let csv = reqwest::Client::new()
        .get(format!(
            "http://127.0.0.1:{}/v1/admin/reports/stores/s1?from={today}&to={today}&format=csv",
            sys.cloud.http_port
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?
        .text()
        .await?;
    assert!(csv.starts_with("section,campaign,metric,value\n"), "{csv}");
    assert!(csv.contains("purchases,,revenue JPY,1340.00\n"), "{csv}");
    for (path, want) in [
        (
            format!("/v1/admin/reports/stores/s1?from={today}&to=2020-01-01"),
            422,
        ),
        ("/v1/admin/reports/stores/nowhere".to_owned(), 404),
        (
            format!("/v1/admin/reports/stores/s1?from={today}&source=guess"),
            422,
        ),
        ("/v1/admin/reports/tiers?format=xml".to_owned(), 422),
        (
            "/v1/admin/reports/stores/s1?to=%2B262142-12-31".to_owned(),
            422,
        ),
        ("/v1/admin/reports/tiers?from=-262143-01-01".to_owned(), 422),
    ] {
        let (status, body) = sys
            .cloud
            .call(Method::GET, &path, None, Some(ADMIN_TOKEN))
            .await?;
        assert_eq!(status, want, "{path}: {body}");
    }
    // Tiers at the day's end: the one customer is "loyal", with their spend to date.
    let tiers = sys
        .cloud
        .admin(&format!("/v1/admin/reports/tiers?from={today}&to={today}"))
        .await?;
    let loyal = tiers["tiers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["tier"] == "loyal")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (&loyal["customers"], &loyal["spend_to_date"]),
        (&json!(1), &json!(62840.0)),
        "{tiers}"
    );
    Ok(())
}
