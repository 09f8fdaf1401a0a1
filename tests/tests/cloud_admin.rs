//! The admin API of the real `omo-cloud`: roles, registry CRUD with the field at fault,
//! gateways registered and disabled through it (and what the broker then lets in), zones in
//! and out as GeoJSON, customers, pagination, and the body size limit.

use omo_device_config::broker_auth::PasswordHash;
use omo_tests::cloud::{CloudUnderTest, Creds, MqttGateway, ADMIN_TOKEN, ANALYST_TOKEN};
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_and_customers_through_the_admin_api() -> anyhow::Result<()> {
    let g1 = Creds::new("s1", "g1")?;
    let mut cloud = CloudUnderTest::new(vec![g1.clone()], None)?;
    cloud.start()?;
    let admin = Some(ADMIN_TOKEN);

    // No token, a wrong token.
    assert_eq!(
        cloud
            .call(Method::GET, "/v1/admin/stores", None, None)
            .await?
            .0,
        401
    );
    assert_eq!(
        cloud
            .call(Method::GET, "/v1/admin/stores", None, Some("nope"))
            .await?
            .0,
        401
    );
    // An analyst reads the registry, but neither customers nor writes.
    let analyst = Some(ANALYST_TOKEN);
    assert_eq!(
        cloud
            .call(Method::GET, "/v1/admin/stores", None, analyst)
            .await?
            .0,
        200
    );
    assert_eq!(
        cloud
            .call(Method::GET, "/v1/admin/customers", None, analyst)
            .await?
            .0,
        403
    );
    assert_eq!(
        cloud
            .call(Method::POST, "/v1/admin/backup", None, analyst)
            .await?
            .0,
        403
    );
    let site = cloud.admin("/v1/admin/site").await?;
    assert!(
        site["gateways"][0].get("signing_key").is_none()
            && site["gateways"][0].get("password_hash").is_none()
    );

    // Stores: create, read, refuse a bad time zone... by field.
    let store = json!({"name": "Umeda", "time_zone": "Asia/Tokyo", "location": {"lat": 34.70, "lon": 135.49}});
    let (status, body) = cloud
        .call(
            Method::PUT,
            "/v1/admin/stores/s2",
            Some(store.clone()),
            admin,
        )
        .await?;
    assert_eq!(status, 201, "{body}");
    let mut bad = store.clone();
    bad["time_zone"] = json!("Mars/Olympus");
    let (status, body) = cloud
        .call(Method::PUT, "/v1/admin/stores/s3", Some(bad), admin)
        .await?;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("time_zone"),
        "{body}"
    );
    let (status, body) = cloud
        .call(
            Method::PUT,
            "/v1/admin/stores/s3",
            Some(json!({"id": "other"})),
            admin,
        )
        .await?;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().starts_with("id"),
        "{body}"
    );
    assert_eq!(
        cloud
            .call(Method::GET, "/v1/admin/stores/nowhere", None, admin)
            .await?
            .0,
        404
    );
    let (status, key) = cloud
        .call(Method::POST, "/v1/admin/stores/s2/pos-keys", None, admin)
        .await?;
    assert_eq!(status, 201, "{key}");
    let s2 = cloud.admin("/v1/admin/stores/s2").await?;
    assert_eq!(s2["pos_keys"][0], key["id"]);

    // Pagination.
    let page = cloud.admin("/v1/admin/stores?limit=1").await?;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["next"], "s1");
    let rest = cloud.admin("/v1/admin/stores?limit=1&after=s1").await?;
    assert_eq!(rest["items"][0]["id"], "s2");
    assert!(rest["next"].is_null());

    // A provisioned gateway registered through the API can log in; disabled, it cannot.
    let g2 = Creds::new("s2", "g2")?;
    let record = json!({"store": "s2", "password_hash": PasswordHash::new(&g2.password).to_string(), "signing_key": g2.key.to_hex()});
    let (status, body) = cloud
        .call(Method::PUT, "/v1/admin/gateways/g2", Some(record), admin)
        .await?;
    assert_eq!(status, 201, "{body}");
    assert!(body.get("signing_key").is_none());
    MqttGateway::connect(cloud.mqtt_port, &g2, &g2.password).await?;
    let (status, _) = cloud
        .call(Method::POST, "/v1/admin/gateways/g2/disable", None, admin)
        .await?;
    assert_eq!(status, 200);
    assert!(MqttGateway::connect(cloud.mqtt_port, &g2, &g2.password)
        .await
        .is_err());
    // A store with gateways cannot be deleted: 409 naming what still points at it.
    let (status, body) = cloud
        .call(Method::DELETE, "/v1/admin/stores/s2", None, admin)
        .await?;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("gateways"),
        "{body}"
    );

    // Zones: a GeoJSON circle in, a FeatureCollection out; a beacon zone by record.
    let circle = json!({"type": "Feature", "properties": {"store": "s1", "name": "Station", "radius_m": 150.0}, "geometry": {"type": "Point", "coordinates": [139.70, 35.66]}});
    let (status, body) = cloud
        .call(Method::PUT, "/v1/admin/zones/station", Some(circle), admin)
        .await?;
    assert_eq!(status, 201, "{body}");
    let polygon = json!({"type": "Feature", "properties": {"store": "s1"}, "geometry": {"type": "Polygon", "coordinates": [[[139.0, 35.0], [139.1, 35.0], [139.1, 35.1], [139.0, 35.0]]]}});
    assert_eq!(
        cloud
            .call(Method::PUT, "/v1/admin/zones/plaza", Some(polygon), admin)
            .await?
            .0,
        201
    );
    // A clockwise polygon in: out counter-clockwise (RFC 7946), as application/geo+json.
    let clockwise = json!({"type": "Feature", "properties": {"store": "s1"}, "geometry": {"type": "Polygon", "coordinates": [[[139.0, 35.0], [139.0, 35.1], [139.1, 35.1], [139.1, 35.0], [139.0, 35.0]]]}});
    assert_eq!(
        cloud
            .call(
                Method::PUT,
                "/v1/admin/zones/arcade",
                Some(clockwise),
                admin
            )
            .await?
            .0,
        201
    );
    let r = omo_cloud::tls::http_client_builder()
        .build()?
        .get(format!(
            "http://127.0.0.1:{}/v1/admin/geofences.geojson",
            cloud.http_port
        ))
        .bearer_auth(omo_tests::cloud::ADMIN_TOKEN)
        .send()
        .await?;
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/geo+json")
    );
    let fc: serde_json::Value = r.json().await?;
    assert_eq!(fc["type"], "FeatureCollection");
    let arcade = fc["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "arcade")
        .unwrap();
    assert_eq!(
        arcade["geometry"]["coordinates"][0],
        json!([
            [139.0, 35.0],
            [139.1, 35.0],
            [139.1, 35.1],
            [139.0, 35.1],
            [139.0, 35.0]
        ]),
        "the exterior ring counter-clockwise"
    );
    assert_eq!(
        cloud
            .call(Method::DELETE, "/v1/admin/zones/arcade", None, admin)
            .await?
            .0,
        204
    );
    let station = fc["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "station")
        .unwrap();
    assert_eq!(station["properties"]["radius_m"], 150.0);
    assert_eq!(station["geometry"]["coordinates"], json!([139.70, 35.66]));
    let beacon = json!({"id": "line:016a4b2c3d", "store": "s1", "name": "door"});
    assert_eq!(
        cloud
            .call(
                Method::PUT,
                "/v1/admin/beacons/line:016a4b2c3d",
                Some(beacon),
                admin
            )
            .await?
            .0,
        201
    );
    let zone =
        json!({"kind": "beacon", "store": "s1", "name": "Door", "beacons": ["line:016a4b2c3d"]});
    assert_eq!(
        cloud
            .call(Method::PUT, "/v1/admin/zones/door", Some(zone), admin)
            .await?
            .0,
        201
    );
    let zone_to_nowhere =
        json!({"kind": "beacon", "store": "s1", "name": "x", "beacons": ["line:00000000ff"]});
    let (status, body) = cloud
        .call(
            Method::PUT,
            "/v1/admin/zones/x",
            Some(zone_to_nowhere),
            admin,
        )
        .await?;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        cloud.admin("/v1/admin/zones").await?["items"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        cloud
            .call(Method::DELETE, "/v1/admin/zones/plaza", None, admin)
            .await?
            .0,
        204
    );
    assert_eq!(
        cloud
            .call(Method::DELETE, "/v1/admin/zones/plaza", None, admin)
            .await?
            .0,
        404
    );

    // The whole site, replaced at once.
    let site = cloud.site_toml();
    let resp = reqwest::Client::new()
        .put(format!(
            "http://127.0.0.1:{}/v1/admin/site",
            cloud.http_port
        ))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/toml")
        .body(site)
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        cloud.admin("/v1/admin/stores").await?["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        cloud.admin("/v1/admin/zones").await?["items"]
            .as_array()
            .unwrap()
            .len(),
        0
    );

    // Customers: created with consent and tags; an index key cannot be shared; field errors.
    let (status, c) = cloud
        .call(
            Method::POST,
            "/v1/admin/customers",
            Some(json!({"line_user": "U9", "consent": {"line": true}, "tags": ["vip"]})),
            admin,
        )
        .await?;
    assert_eq!(status, 201, "{c}");
    let id = c["id"].as_str().unwrap().to_owned();
    let (status, body) = cloud
        .call(
            Method::POST,
            "/v1/admin/customers",
            Some(json!({"line_user": "U9"})),
            admin,
        )
        .await?;
    assert_eq!(status, 409, "{body}");
    let (status, body) = cloud
        .call(
            Method::PATCH,
            &format!("/v1/admin/customers/{id}"),
            Some(json!({"eid_keys": [{"identity_key": "00", "exponent": 10}]})),
            admin,
        )
        .await?;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("eid_keys[0]"),
        "{body}"
    );
    let (status, body) = cloud
        .call(
            Method::PATCH,
            &format!("/v1/admin/customers/{id}"),
            Some(json!({"tags": ["vip", "fan"], "colour": 1})),
            admin,
        )
        .await?;
    assert_eq!(status, 422, "{body}");
    let (status, body) = cloud
        .call(
            Method::PATCH,
            &format!("/v1/admin/customers/{id}"),
            Some(json!({"tags": ["vip", "fan"]})),
            admin,
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tags"], json!(["fan", "vip"]));
    assert_eq!(
        cloud
            .call(Method::GET, "/v1/admin/customers/c_none", None, admin)
            .await?
            .0,
        404
    );

    // A gateway config whose stay interval the visit exit timeout would cut is refused.
    let (status, body) = cloud
        .call(
            Method::PUT,
            "/v1/admin/gateways/g1/config",
            Some(json!({"version": 1, "presence": {"stay_interval_s": 600}})),
            admin,
        )
        .await?;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("presence.stay_interval_s"),
        "{body}"
    );

    // Bodies over http.max_body_bytes are refused before they are read.
    let huge = vec![b' '; 300 * 1024];
    let (status, _) = cloud
        .post_raw(
            "/v1/app/installs",
            huge,
            &[("content-type", "application/json".into())],
        )
        .await?;
    assert_eq!(status, 413);
    assert_eq!(
        cloud.call(Method::GET, "/healthz", None, None).await?.0,
        200
    );
    cloud.stop()?;
    Ok(())
}
