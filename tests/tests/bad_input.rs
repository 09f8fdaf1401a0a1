//! The bad-input battery: named cases of malformed, oversized, unsigned, misaddressed and
//! forged input on every way into the real `omo-cloud` (MQTT on its embedded broker, the app
//! API, the LINE webhook, POS redemptions, the admin API), with a real `omo-gateway` and
//! well-behaved clients sending valid traffic between the cases. Each case must get its own
//! clear error — the HTTP status with the field at fault, or an MQTT refusal counted under its
//! reason and logged with its topic, or a per-event rejection in the signed ack — and at the
//! end every valid message sent around them must have been processed in full.

use std::time::Duration;

use omo_device_config::envelope::{seal_raw, SigningKey};
use omo_device_config::payload::{Epoch, PresenceEvent, Sighting};
use omo_device_config::{SeqRanges, Timestamp};
use omo_tests::cloud::{metric, Creds, MqttGateway, ADMIN_TOKEN, ANALYST_TOKEN, LINE_SECRET};
use omo_tests::scenario::Visit;
use omo_tests::system::{carried_beacon, Layout, System};
use reqwest::Method;
use serde_json::{json, Value};

/// Where a case goes in.
enum Input {
    /// Published by the test's MQTT client (logged in as g2, store s1) on `topic`.
    Mqtt { topic: String, payload: Vec<u8> },
    /// An HTTP request; `auth` is a bearer token.
    Http {
        method: Method,
        path: String,
        body: Vec<u8>,
        auth: Option<String>,
        headers: Vec<(&'static str, String)>,
    },
}

/// What must come back.
enum Expect {
    /// This HTTP status, with an error message containing this text (the field at fault).
    Http(u16, &'static str),
    /// Counted under `omo_ingest_rejected_total{reason}` and logged with the topic.
    Refused(&'static str),
    /// Acked to g2 with the event's seq rejected for a reason containing this text.
    RejectedInAck(u64, &'static str),
    /// Refused by the real gateway g1 (its log says so with the topic).
    GatewayRefused,
}

struct Case {
    name: &'static str,
    input: Input,
    expect: Expect,
}

fn http(method: Method, path: &str, body: Value, auth: Option<&str>) -> Input {
    Input::Http {
        method,
        path: path.to_owned(),
        body: body.to_string().into_bytes(),
        auth: auth.map(str::to_owned),
        headers: Vec::new(),
    }
}

fn raw_http(path: &str, body: &[u8], auth: Option<&str>) -> Input {
    Input::Http {
        method: Method::POST,
        path: path.to_owned(),
        body: body.to_vec(),
        auth: auth.map(str::to_owned),
        headers: vec![("content-type", "application/json".to_owned())],
    }
}

fn webhook(body: &[u8], sig: Option<String>) -> Input {
    Input::Http {
        method: Method::POST,
        path: "/v1/line/webhook".into(),
        body: body.to_vec(),
        auth: None,
        headers: sig.map(|s| ("x-line-signature", s)).into_iter().collect(),
    }
}

fn signed_webhook(body: Value) -> Input {
    let body = body.to_string().into_bytes();
    let sig = omo_cloud::secrets::line_signature(LINE_SECRET.as_bytes(), &body);
    webhook(&body, Some(sig))
}

fn sighting(seq: u64, ts: Timestamp) -> PresenceEvent {
    PresenceEvent::Stay(Sighting {
        seq,
        ts,
        beacon: "line:00000000ee".parse().expect("a beacon id"),
        rssi: -60.0,
        distance_m: 2.0,
        seen_s: 60.0,
    })
}

/// A presence `msg` of gateway `gw` at `store` with `events` (JSON values), as text.
fn batch_msg(gw: &str, store: &str, epoch: &str, events: Value) -> String {
    json!({"gateway": gw, "store": store, "epoch": epoch, "events": events, "dropped": []})
        .to_string()
}

fn topic(store: &str, gw: &str, channel: &str) -> String {
    format!("omo/v1/stores/{store}/gateways/{gw}/{channel}")
}

/// The site: g1 (the real gateway) and g2 (the test's client) in s1; g3 and g4 in s2.
const SITE: &str = r#"
[[gateway_zones]]
id = "s1-floor"
store = "s1"
name = "Floor"
gateways = ["g1"]
max_distance_m = 15.0
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_its_clear_error_and_the_valid_traffic_around_it_lands(
) -> anyhow::Result<()> {
    let layout = Layout {
        gateways: vec![(
            "s1",
            "g1",
            0,
            (1..=4)
                .map(|beacon| Visit {
                    beacon,
                    from_s: 0,
                    to_s: 900,
                })
                .collect(),
        )],
        site: SITE.into(),
        mosquitto: false,
        speed: 60,
    };
    // g2-g4 are registered in the site but are the test's own MQTT clients.
    let mut sys = System::build_with_extra_gateways(
        layout,
        vec![
            Creds::new("s1", "g2")?,
            Creds::new("s2", "g3")?,
            Creds::new("s2", "g4")?,
        ],
    )
    .await?;
    let (g2, g3, g4) = (
        sys.extra[0].clone(),
        sys.extra[1].clone(),
        sys.extra[2].clone(),
    );
    sys.welcome_campaign(&["s1"], &["line"]).await?;
    for n in 1..=4u8 {
        sys.line_customer(Some(&carried_beacon(n)), &format!("U{n:032x}"))
            .await?;
    }
    let (_, token) = sys.app_customer("m-good", None, "fcm-token-good").await?;
    let (_, revoked_token) = sys.app_customer("m-lost", None, "fcm-token-lost").await?;
    let revoked_install = revoked_token
        .split('.')
        .next()
        .unwrap_or_default()
        .to_owned();
    sys.admin_call(
        Method::POST,
        &format!("/v1/admin/installs/{revoked_install}/revoke"),
        json!({}),
        200,
    )
    .await?;
    sys.admin_call(
        Method::POST,
        "/v1/admin/gateways/g4/disable",
        json!({}),
        200,
    )
    .await?;
    let s1_pos = sys
        .admin_call(Method::POST, "/v1/admin/stores/s1/pos-keys", json!({}), 201)
        .await?["key"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let s2_pos = sys
        .admin_call(Method::POST, "/v1/admin/stores/s2/pos-keys", json!({}), 201)
        .await?["key"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    sys.start_gateways()?;
    // The four carriers' offers give the coupons the redemption cases use.
    let deliveries = sys.settled_deliveries(4, Duration::from_secs(30)).await?;
    let coupons: Vec<String> = deliveries
        .iter()
        .map(|d| d["coupon"].as_str().unwrap_or_default().to_owned())
        .collect();
    let redeem = |code: &str, store: &str| json!({"store": store, "code": code, "amount": 12.5});
    let (status, body) = sys
        .cloud
        .call(
            Method::POST,
            "/v1/redemptions",
            Some(redeem(&coupons[0], "s1")),
            Some(&s1_pos),
        )
        .await?;
    assert_eq!(status, 201, "a valid redemption: {body}");

    let mut client = MqttGateway::connect(sys.cloud.mqtt_port, &g2, &g2.password).await?;
    // The valid presence between the cases comes from g3, so g2's bad epoch and g3's good
    // one never alternate on one gateway (a new epoch would end the other).
    let mut good = MqttGateway::connect(sys.cloud.mqtt_port, &g3, &g3.password).await?;
    let now = sys.cloud.clock_now();
    let g2_presence = topic("s1", "g2", "presence");
    let good_sig = |t: &str, msg: &str| seal_raw(t, &g2.key, msg.as_bytes());
    let epoch = "0000bad0";
    let event = |seq: u64| serde_json::to_value(sighting(seq, now)).expect("an event");
    let valid_msg = batch_msg("g2", "s1", epoch, json!([event(1000)]));
    let envelope = String::from_utf8(good_sig(&g2_presence, &valid_msg))?;
    let big_events: Vec<Value> = (0..120).map(|i| event(2000 + i)).collect();
    let stranger = SigningKey::generate();
    let future = Timestamp::from_millis(now.millis() + 3_600_000).expect("a time");
    let old = Timestamp::from_millis(now.millis() - 30 * 86_400_000).expect("a time");
    let line_event = |hwid: &str| {
        json!({"events": [{"type": "beacon", "mode": "active", "webhookEventId": format!("bad-{hwid}"), "timestamp": now.millis(),
            "source": {"type": "user", "userId": "U0000000000000000000000000000beef"}, "replyToken": "r",
            "deliveryContext": {"isRedelivery": false}, "beacon": {"hwid": hwid, "type": "enter"}}]})
    };
    let report = |extra: Value| {
        let mut r = json!({"ts": now, "idempotency_key": "bad"});
        for (k, v) in extra.as_object().expect("an object") {
            r[k] = v.clone();
        }
        r
    };
    let geofence = |coords: Value, store: &str| json!({"type": "Feature", "properties": {"store": store, "name": "x"}, "geometry": {"type": "Polygon", "coordinates": coords}});
    let day = now.to_string()[..10].to_owned();
    let campaign = |patch: Value| {
        let mut c = json!({
            "name": "Bad", "trigger": {"kind": "enter"}, "places": {"stores": ["s1"]},
            "schedule": {"from": day, "to": day, "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]},
            "caps": {"per_customer": 1, "period_days": 1}, "budget": 10, "offer_ttl_minutes": 60,
            "channels": ["line"], "variants": [{"id": "a", "weight": 1, "template": {"text": "{coupon}"}}]
        });
        for (k, v) in patch.as_object().expect("an object") {
            c[k] = v.clone();
        }
        c
    };
    let admin = Some(ADMIN_TOKEN);
    let mqtt = |topic: &str, payload: Vec<u8>| Input::Mqtt {
        topic: topic.to_owned(),
        payload,
    };
    use Expect::*;
    let cases = vec![
        // MQTT presence: envelope and signature.
        Case {
            name: "presence that is not JSON",
            input: mqtt(&g2_presence, b"hello".to_vec()),
            expect: Refused("malformed"),
        },
        Case {
            name: "presence cut off halfway",
            input: mqtt(
                &g2_presence,
                envelope.as_bytes()[..envelope.len() / 2].to_vec(),
            ),
            expect: Refused("malformed"),
        },
        Case {
            name: "empty presence payload",
            input: mqtt(&g2_presence, Vec::new()),
            expect: Refused("malformed"),
        },
        Case {
            name: "presence over 8 KiB",
            input: mqtt(
                &g2_presence,
                good_sig(
                    &g2_presence,
                    &batch_msg("g2", "s1", epoch, json!(big_events)),
                ),
            ),
            expect: Refused("oversized"),
        },
        Case {
            name: "presence without a signature",
            input: mqtt(
                &g2_presence,
                format!(r#"{{"v":1,"msg":{valid_msg}}}"#).into_bytes(),
            ),
            expect: Refused("bad_signature"),
        },
        Case {
            name: "presence signed with another key",
            input: mqtt(
                &g2_presence,
                seal_raw(&g2_presence, &stranger, valid_msg.as_bytes()),
            ),
            expect: Refused("bad_signature"),
        },
        Case {
            name: "presence signature not base64url",
            input: mqtt(
                &g2_presence,
                format!(r#"{{"v":1,"sig":"!!not-base64!!","msg":{valid_msg}}}"#).into_bytes(),
            ),
            expect: Refused("bad_signature"),
        },
        Case {
            name: "presence signed for another topic",
            input: mqtt(
                &g2_presence,
                good_sig(&topic("s1", "g2", "status"), &valid_msg),
            ),
            expect: Refused("bad_signature"),
        },
        Case {
            name: "presence in envelope version 2",
            input: mqtt(
                &g2_presence,
                envelope.replacen("\"v\":1", "\"v\":2", 1).into_bytes(),
            ),
            expect: Refused("malformed"),
        },
        Case {
            name: "presence on another store's topic",
            input: mqtt(
                &topic("s2", "g2", "presence"),
                good_sig(
                    &topic("s2", "g2", "presence"),
                    &batch_msg("g2", "s2", epoch, json!([event(1001)])),
                ),
            ),
            expect: Refused("wrong_store"),
        },
        Case {
            name: "presence for another gateway with one's own key",
            input: mqtt(
                &topic("s2", "g3", "presence"),
                good_sig(
                    &topic("s2", "g3", "presence"),
                    &batch_msg("g3", "s2", epoch, json!([event(1002)])),
                ),
            ),
            expect: Refused("bad_signature"),
        },
        Case {
            name: "presence from an unknown gateway",
            input: mqtt(
                &topic("s1", "ghost", "presence"),
                good_sig(
                    &topic("s1", "ghost", "presence"),
                    &batch_msg("ghost", "s1", epoch, json!([event(1003)])),
                ),
            ),
            expect: Refused("unknown_gateway"),
        },
        Case {
            name: "presence from a disabled gateway (its key stolen)",
            input: mqtt(
                &topic("s2", "g4", "presence"),
                seal_raw(
                    &topic("s2", "g4", "presence"),
                    &g4.key,
                    batch_msg("g4", "s2", epoch, json!([event(1004)])).as_bytes(),
                ),
            ),
            expect: Refused("disabled_gateway"),
        },
        Case {
            name: "presence naming another gateway than its topic",
            input: mqtt(
                &g2_presence,
                good_sig(
                    &g2_presence,
                    &batch_msg("g3", "s1", epoch, json!([event(1005)])),
                ),
            ),
            expect: Refused("payload_mismatch"),
        },
        Case {
            name: "presence naming another store than its topic",
            input: mqtt(
                &g2_presence,
                good_sig(
                    &g2_presence,
                    &batch_msg("g2", "s2", epoch, json!([event(1006)])),
                ),
            ),
            expect: Refused("payload_mismatch"),
        },
        Case {
            name: "presence with an epoch that is not 8 hex digits",
            input: mqtt(
                &g2_presence,
                good_sig(
                    &g2_presence,
                    &batch_msg("g2", "s1", "epoch!", json!([event(1007)])),
                ),
            ),
            expect: Refused("malformed"),
        },
        Case {
            name: "presence event without a seq",
            input: mqtt(
                &g2_presence,
                good_sig(
                    &g2_presence,
                    &batch_msg("g2", "s1", epoch, json!([{"kind": "stay", "ts": now}])),
                ),
            ),
            expect: Refused("unreadable_event"),
        },
        // Per event: acked as rejected so the gateway stops resending, the rest stored.
        Case {
            name: "presence event an hour in the future",
            input: mqtt(
                &g2_presence,
                good_sig(
                    &g2_presence,
                    &batch_msg(
                        "g2",
                        "s1",
                        epoch,
                        json!([serde_json::to_value(sighting(1008, future))?]),
                    ),
                ),
            ),
            expect: RejectedInAck(1008, "ahead of the cloud's clock"),
        },
        Case {
            name: "presence event 30 days old",
            input: mqtt(
                &g2_presence,
                good_sig(
                    &g2_presence,
                    &batch_msg(
                        "g2",
                        "s1",
                        epoch,
                        json!([serde_json::to_value(sighting(1009, old))?]),
                    ),
                ),
            ),
            expect: RejectedInAck(1009, "old"),
        },
        Case {
            name: "presence event of an unknown kind",
            input: mqtt(
                &g2_presence,
                good_sig(
                    &g2_presence,
                    &batch_msg(
                        "g2",
                        "s1",
                        epoch,
                        json!([{"seq": 1010, "kind": "teleport", "ts": now}]),
                    ),
                ),
            ),
            expect: RejectedInAck(1010, "events[0]"),
        },
        Case {
            name: "presence event with an RSSI that is not a number",
            input: mqtt(
                &g2_presence,
                good_sig(
                    &g2_presence,
                    &batch_msg(
                        "g2",
                        "s1",
                        epoch,
                        json!([{"seq": 1011, "kind": "stay", "ts": now, "beacon": "line:00000000ee", "rssi": "loud", "distance_m": 1.0, "seen_s": 1.0}]),
                    ),
                ),
            ),
            expect: RejectedInAck(1011, "events[0]"),
        },
        // Other channels.
        Case {
            name: "presence on a topic with a malformed store id",
            input: mqtt(
                &topic("s 1!", "g2", "presence"),
                good_sig(&topic("s 1!", "g2", "presence"), &valid_msg),
            ),
            expect: Refused("topic"),
        },
        Case {
            name: "status with a bad signature",
            input: mqtt(
                &topic("s1", "g2", "status"),
                seal_raw(&topic("s1", "g2", "status"), &stranger, b"{}"),
            ),
            expect: Refused("bad_signature"),
        },
        Case {
            name: "signed status that is not a status",
            input: mqtt(
                &topic("s1", "g2", "status"),
                good_sig(&topic("s1", "g2", "status"), r#"{"state":"dancing"}"#),
            ),
            expect: Refused("malformed"),
        },
        Case {
            name: "config ack with a bad signature",
            input: mqtt(
                &topic("s1", "g2", "config/ack"),
                seal_raw(
                    &topic("s1", "g2", "config/ack"),
                    &stranger,
                    br#"{"version":1,"ok":true}"#,
                ),
            ),
            expect: Refused("bad_signature"),
        },
        // Forgeries aimed at the real gateway g1 with g2's credentials and key.
        Case {
            name: "forged presence/ack for g1",
            input: mqtt(
                &topic("s1", "g1", "presence/ack"),
                good_sig(
                    &topic("s1", "g1", "presence/ack"),
                    &json!({"epoch": "00000001", "seqs": [[1, 100000]], "rejected": []})
                        .to_string(),
                ),
            ),
            expect: GatewayRefused,
        },
        Case {
            name: "forged config for g1",
            input: mqtt(
                &topic("s1", "g1", "config"),
                good_sig(
                    &topic("s1", "g1", "config"),
                    &json!({"version": 99, "presence": {"stay_interval_s": 5}}).to_string(),
                ),
            ),
            expect: GatewayRefused,
        },
        // The app API.
        Case {
            name: "install body not JSON",
            input: raw_http("/v1/app/installs", b"{platform", None),
            expect: Http(400, "not JSON"),
        },
        Case {
            name: "install with an unknown platform",
            input: http(
                Method::POST,
                "/v1/app/installs",
                json!({"platform": "palm"}),
                None,
            ),
            expect: Http(422, "platform"),
        },
        Case {
            name: "install claiming a member id without proof",
            input: http(
                Method::POST,
                "/v1/app/installs",
                json!({"platform": "ios", "member_id": "m-good"}),
                None,
            ),
            expect: Http(422, "member_sig"),
        },
        Case {
            name: "report without an install token",
            input: http(
                Method::POST,
                "/v1/app/locations",
                report(json!({"gps": {"lat": 35.6, "lon": 139.7, "accuracy_m": 10.0}})),
                None,
            ),
            expect: Http(401, "install token"),
        },
        Case {
            name: "report with an unknown install token",
            input: http(
                Method::POST,
                "/v1/app/locations",
                report(json!({"gps": {"lat": 35.6, "lon": 139.7, "accuracy_m": 10.0}})),
                Some("i_0000.secret"),
            ),
            expect: Http(401, "install token"),
        },
        Case {
            name: "report with a revoked install token",
            input: http(
                Method::POST,
                "/v1/app/locations",
                report(json!({"gps": {"lat": 35.6, "lon": 139.7, "accuracy_m": 10.0}})),
                Some(&revoked_token),
            ),
            expect: Http(401, "install token"),
        },
        Case {
            name: "report with latitude 91",
            input: http(
                Method::POST,
                "/v1/app/locations",
                report(json!({"gps": {"lat": 91.0, "lon": 139.7, "accuracy_m": 10.0}})),
                Some(&token),
            ),
            expect: Http(422, "gps.lat"),
        },
        Case {
            name: "report with longitude -181",
            input: http(
                Method::POST,
                "/v1/app/locations",
                report(json!({"gps": {"lat": 35.6, "lon": -181.0, "accuracy_m": 10.0}})),
                Some(&token),
            ),
            expect: Http(422, "gps.lon"),
        },
        Case {
            name: "report with zero accuracy",
            input: http(
                Method::POST,
                "/v1/app/locations",
                report(json!({"gps": {"lat": 35.6, "lon": 139.7, "accuracy_m": 0.0}})),
                Some(&token),
            ),
            expect: Http(422, "gps.accuracy_m"),
        },
        Case {
            name: "report with a malformed BSSID",
            input: http(
                Method::POST,
                "/v1/app/locations",
                report(json!({"wifi": [{"bssid": "zz:zz", "rssi": -50}]})),
                Some(&token),
            ),
            expect: Http(422, "wifi[0].bssid"),
        },
        Case {
            name: "report with a beacon RSSI of +50 dBm",
            input: http(
                Method::POST,
                "/v1/app/locations",
                report(json!({"beacons": [{"id": "line:0a0b0c0d01", "rssi": 50}]})),
                Some(&token),
            ),
            expect: Http(422, "beacons[0].rssi"),
        },
        Case {
            name: "report with a malformed beacon id",
            input: http(
                Method::POST,
                "/v1/app/locations",
                report(json!({"beacons": [{"id": "bluetooth!", "rssi": -60}]})),
                Some(&token),
            ),
            expect: Http(422, "beacons[0].id"),
        },
        Case {
            name: "report a day in the future",
            input: http(
                Method::POST,
                "/v1/app/locations",
                json!({"ts": Timestamp::from_millis(now.millis() + 86_400_000), "gps": {"lat": 35.6, "lon": 139.7, "accuracy_m": 10.0}}),
                Some(&token),
            ),
            expect: Http(422, "ts"),
        },
        Case {
            name: "report with nothing observed",
            input: http(
                Method::POST,
                "/v1/app/locations",
                report(json!({})),
                Some(&token),
            ),
            expect: Http(422, "needs gps, wifi or beacons"),
        },
        Case {
            name: "report with an unknown field",
            input: http(
                Method::POST,
                "/v1/app/locations",
                report(json!({"altitude": 3})),
                Some(&token),
            ),
            expect: Http(422, "altitude"),
        },
        // The LINE webhook.
        Case {
            name: "LINE webhook without a signature",
            input: webhook(line_event("0a0b0c0d01").to_string().as_bytes(), None),
            expect: Http(401, "X-Line-Signature"),
        },
        Case {
            name: "LINE webhook with a wrong signature",
            input: webhook(
                line_event("0a0b0c0d01").to_string().as_bytes(),
                Some("AAAA".into()),
            ),
            expect: Http(401, "X-Line-Signature"),
        },
        Case {
            name: "LINE webhook signed over another body",
            input: webhook(
                line_event("0a0b0c0d01").to_string().as_bytes(),
                Some(omo_cloud::secrets::line_signature(
                    LINE_SECRET.as_bytes(),
                    b"{}",
                )),
            ),
            expect: Http(401, "X-Line-Signature"),
        },
        Case {
            name: "LINE webhook with a malformed hwid",
            input: signed_webhook(line_event("xyz")),
            expect: Http(422, "events[0].beacon.hwid"),
        },
        Case {
            name: "signed LINE webhook that is not JSON",
            input: webhook(
                b"{events",
                Some(omo_cloud::secrets::line_signature(
                    LINE_SECRET.as_bytes(),
                    b"{events",
                )),
            ),
            expect: Http(400, "not JSON"),
        },
        // POS redemptions.
        Case {
            name: "redemption without a POS key",
            input: http(
                Method::POST,
                "/v1/redemptions",
                redeem(&coupons[1], "s1"),
                None,
            ),
            expect: Http(401, "POS API key"),
        },
        Case {
            name: "redemption with another store's POS key",
            input: http(
                Method::POST,
                "/v1/redemptions",
                redeem(&coupons[1], "s1"),
                Some(&s2_pos),
            ),
            expect: Http(401, "POS API key"),
        },
        Case {
            name: "redemption of an unknown code",
            input: http(
                Method::POST,
                "/v1/redemptions",
                redeem("NOSUCHCODE", "s1"),
                Some(&s1_pos),
            ),
            expect: Http(404, "coupon code"),
        },
        Case {
            name: "redemption of a code used at another store",
            input: http(
                Method::POST,
                "/v1/redemptions",
                redeem(&coupons[0], "s2"),
                Some(&s2_pos),
            ),
            expect: Http(409, "already redeemed"),
        },
        Case {
            name: "redemption at a store the offer is not valid in",
            input: http(
                Method::POST,
                "/v1/redemptions",
                redeem(&coupons[1], "s2"),
                Some(&s2_pos),
            ),
            expect: Http(422, "store"),
        },
        Case {
            name: "redemption with a negative amount",
            input: http(
                Method::POST,
                "/v1/redemptions",
                json!({"store": "s1", "code": coupons[2], "amount": -5}),
                Some(&s1_pos),
            ),
            expect: Http(422, "amount"),
        },
        // Zones and campaigns through the admin API.
        Case {
            name: "geofence with an open ring",
            input: http(
                Method::PUT,
                "/v1/admin/zones/bad-ring",
                geofence(json!([[[139.0, 35.0], [139.1, 35.0], [139.1, 35.1]]]), "s1"),
                admin,
            ),
            expect: Http(422, "closed ring needs at least 4"),
        },
        Case {
            name: "geofence with latitude 200",
            input: http(
                Method::PUT,
                "/v1/admin/zones/bad-lat",
                geofence(
                    json!([[[139.0, 200.0], [139.1, 35.0], [139.1, 35.1], [139.0, 200.0]]]),
                    "s1",
                ),
                admin,
            ),
            expect: Http(422, "latitude 200 is not in -90..=90"),
        },
        Case {
            name: "geofence of an unknown store",
            input: http(
                Method::PUT,
                "/v1/admin/zones/bad-store",
                geofence(
                    json!([[[139.0, 35.0], [139.1, 35.0], [139.1, 35.1], [139.0, 35.0]]]),
                    "nowhere",
                ),
                admin,
            ),
            expect: Http(422, "nowhere"),
        },
        Case {
            name: "geofence that is a line",
            input: http(
                Method::PUT,
                "/v1/admin/zones/bad-line",
                json!({"type": "Feature", "properties": {"store": "s1"}, "geometry": {"type": "LineString", "coordinates": [[139.0, 35.0], [139.1, 35.0]]}}),
                admin,
            ),
            expect: Http(422, "geometry.type"),
        },
        Case {
            name: "campaign without channels",
            input: http(
                Method::PUT,
                "/v1/admin/campaigns/bad-1",
                campaign(json!({"channels": []})),
                admin,
            ),
            expect: Http(422, "channels"),
        },
        Case {
            name: "campaign whose schedule ends before it starts",
            input: http(
                Method::PUT,
                "/v1/admin/campaigns/bad-2",
                campaign(
                    json!({"schedule": {"from": "2026-12-31", "to": "2026-01-01", "days": ["mon"]}}),
                ),
                admin,
            ),
            expect: Http(422, "schedule"),
        },
        Case {
            name: "campaign with an unknown trigger",
            input: http(
                Method::PUT,
                "/v1/admin/campaigns/bad-3",
                campaign(json!({"trigger": {"kind": "sneeze"}})),
                admin,
            ),
            expect: Http(422, "trigger"),
        },
        Case {
            name: "campaign whose variants all weigh 0",
            input: http(
                Method::PUT,
                "/v1/admin/campaigns/bad-4",
                campaign(
                    json!({"variants": [{"id": "a", "weight": 0, "template": {"text": "x"}}]}),
                ),
                admin,
            ),
            expect: Http(422, "weight"),
        },
        Case {
            name: "campaign in an unknown store",
            input: http(
                Method::PUT,
                "/v1/admin/campaigns/bad-5",
                campaign(json!({"places": {"stores": ["nowhere"]}})),
                admin,
            ),
            expect: Http(422, "nowhere"),
        },
        // Admin tokens.
        Case {
            name: "admin call without a token",
            input: http(Method::GET, "/v1/admin/customers", Value::Null, None),
            expect: Http(401, "admin bearer token is required"),
        },
        Case {
            name: "admin call with a wrong token",
            input: http(
                Method::GET,
                "/v1/admin/customers",
                Value::Null,
                Some("not-the-token"),
            ),
            expect: Http(401, "unknown admin token"),
        },
        Case {
            name: "analyst token changing a campaign",
            input: http(
                Method::PUT,
                "/v1/admin/campaigns/bad-6",
                campaign(json!({})),
                Some(ANALYST_TOKEN),
            ),
            expect: Http(403, "needs a marketer's or an operator's token"),
        },
    ];
    assert!(cases.len() >= 40, "{} cases", cases.len());

    let http_client = reqwest::Client::new();
    let mut valid_seq = 0u64;
    let mut valid_reports = 0u64;
    let mut failures = Vec::new();
    for case in &cases {
        let before = sys.cloud.metrics().await?;
        let g1_log_before = sys.gateway("g1").log().len();
        let cloud_log_before = sys.cloud.log().len();
        let outcome: anyhow::Result<()> = async {
            match (&case.input, &case.expect) {
                (
                    Input::Http {
                        method,
                        path,
                        body,
                        auth,
                        headers,
                    },
                    Expect::Http(want, text),
                ) => {
                    let mut req = http_client
                        .request(
                            method.clone(),
                            format!("http://127.0.0.1:{}{path}", sys.cloud.http_port),
                        )
                        .header("content-type", "application/json");
                    if *method != Method::GET {
                        req = req.body(body.clone());
                    }
                    if let Some(a) = auth {
                        req = req.bearer_auth(a);
                    }
                    for (k, v) in headers {
                        req = req.header(*k, v);
                    }
                    let resp = req.send().await?;
                    let status = resp.status().as_u16();
                    let got: Value =
                        serde_json::from_slice(&resp.bytes().await?).unwrap_or(Value::Null);
                    let message = got["error"]["message"].as_str().unwrap_or_default();
                    anyhow::ensure!(
                        status == *want && message.contains(text),
                        "got {status} {got}, want {want} with {text:?}"
                    );
                    Ok(())
                }
                (Input::Mqtt { topic, payload }, expect) => {
                    client.publish_raw(topic, payload.clone()).await?;
                    match expect {
                        Refused(reason) => {
                            let label = format!("reason=\"{reason}\"");
                            let was = metric(&before, "omo_ingest_rejected_total", &[&label]);
                            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                            loop {
                                let now = metric(
                                    &sys.cloud.metrics().await?,
                                    "omo_ingest_rejected_total",
                                    &[&label],
                                );
                                if now == was + 1.0 {
                                    break;
                                }
                                anyhow::ensure!(
                                    tokio::time::Instant::now() < deadline && now <= was + 1.0,
                                    "{reason}: counted {was} -> {now}"
                                );
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                            let shown: String = topic.chars().take(200).collect();
                            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                            loop {
                                let log = sys.cloud.log();
                                let new = &log[cloud_log_before.min(log.len())..];
                                if new
                                    .lines()
                                    .any(|l| l.contains("WARN") && l.contains(&shown))
                                {
                                    break;
                                }
                                anyhow::ensure!(
                                    tokio::time::Instant::now() < deadline,
                                    "no warning naming the topic {shown}"
                                );
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                            Ok(())
                        }
                        RejectedInAck(seq, text) => {
                            // An earlier case's ack (an empty one) may still be queued.
                            for _ in 0..3 {
                                let ack = client
                                    .next_ack(Duration::from_secs(10))
                                    .await?
                                    .ok_or_else(|| anyhow::anyhow!("no ack"))?;
                                let hit = ack
                                    .rejected
                                    .iter()
                                    .any(|r| r.seqs.contains(*seq) && r.reason.contains(text));
                                if hit {
                                    anyhow::ensure!(!ack.seqs.contains(*seq), "ack {ack:?}");
                                    return Ok(());
                                }
                            }
                            anyhow::bail!("no ack rejected seq {seq} for {text:?}")
                        }
                        GatewayRefused => {
                            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                            loop {
                                let log = sys.gateway("g1").log();
                                if log[g1_log_before.min(log.len())..].lines().any(|l| {
                                    l.contains("refused a message") && l.contains(topic.as_str())
                                }) {
                                    return Ok(());
                                }
                                anyhow::ensure!(
                                    tokio::time::Instant::now() < deadline,
                                    "g1 did not refuse it"
                                );
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                        Http(..) => unreachable!("an MQTT case expects an MQTT outcome"),
                    }
                }
                (Input::Http { .. }, _) => unreachable!("an HTTP case expects an HTTP status"),
            }
        }
        .await;
        if let Err(e) = outcome {
            failures.push(format!("{}: {e:#}", case.name));
        }
        // Valid traffic between the cases: a presence batch from g3, an app report.
        valid_seq += 1;
        good.publish_presence(
            Epoch(0xe2e2),
            vec![sighting(valid_seq, sys.cloud.clock_now())],
            SeqRanges::new(),
        )
        .await?;
        let ack = good.next_ack(Duration::from_secs(10)).await?;
        anyhow::ensure!(
            ack.as_ref().is_some_and(|a| a.seqs.contains(valid_seq)),
            "{}: valid seq {valid_seq} not acked: {ack:?}",
            case.name
        );
        valid_reports += 1;
        let r = json!({"ts": sys.cloud.clock_now(), "idempotency_key": format!("good-{valid_reports}"), "gps": {"lat": 35.6, "lon": 139.7, "accuracy_m": 10.0}});
        let (status, body) = sys
            .cloud
            .call(Method::POST, "/v1/app/locations", Some(r), Some(&token))
            .await?;
        anyhow::ensure!(
            status == 202,
            "{}: a valid report got {status} {body}",
            case.name
        );
        eprintln!(
            "case ok? {:5} {}",
            failures.last().is_none_or(|f| !f.starts_with(case.name)),
            case.name
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    // Everything valid landed: g3's epoch is 1..=valid_seq, the app reports are counted,
    // g1's epoch is whole despite the forged ack, and g1 kept its config.
    sys.check_epoch_complete("g3", &Epoch(0xe2e2).to_string(), valid_seq)
        .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let stats = sys.cloud.admin("/v1/admin/stats").await?;
        if stats["stats"]["source/app"]["stay"].as_u64() == Some(valid_reports) {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "app reports: sent {valid_reports}, stats {stats}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let g1 = sys.cloud.admin("/v1/admin/gateways/g1").await?;
    assert_eq!(
        g1["runtime"]["last_status"]["config_version"],
        json!(0),
        "{g1}"
    );
    sys.wait_settled(Duration::from_secs(60)).await?;
    let (epoch, last) = sys.gateway("g1").stop()?;
    sys.check_epoch_complete("g1", &epoch, last).await?;
    Ok(())
}
