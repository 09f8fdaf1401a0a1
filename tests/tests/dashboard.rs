//! The operator dashboard served by the real `omo-cloud`, over HTTP: the login form exchanges
//! a token for an HttpOnly, SameSite=Strict session cookie; nothing but the login form is
//! reachable without it; pages show what the admin API answers; an unsafe API call made with
//! the cookie needs the session's CSRF token and the session's role; a config pushed from the
//! gateway page reaches the gateway and its ack shows on the page; alerts appear on the
//! overview when a gateway's outbox drops events and when it goes offline; every answer has
//! its security headers (a content security policy on pages).

use std::time::Duration;

use omo_device_config::envelope::{open, seal};
use omo_device_config::payload::{ConfigAck, GatewayState, RemoteConfig, Status};
use omo_device_config::{Channel, Timestamp};
use omo_tests::cloud::{CloudUnderTest, Creds, MqttGateway, ADMIN_TOKEN, ANALYST_TOKEN};
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(15);

struct Browser {
    http: reqwest::Client,
    base: String,
    cookie: Option<String>,
}

impl Browser {
    fn new(cloud: &CloudUnderTest) -> anyhow::Result<Browser> {
        Ok(Browser {
            http: omo_cloud::tls::http_client_builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()?,
            base: format!("http://127.0.0.1:{}", cloud.http_port),
            cookie: None,
        })
    }

    fn with_cookie(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.cookie {
            Some(c) => r.header(COOKIE, c),
            None => r,
        }
    }

    async fn get(&self, path: &str) -> anyhow::Result<(u16, String, Option<String>)> {
        self.get_with(path, &[]).await
    }

    /// A GET with more headers (a browser's `Accept`, `Accept-Language`).
    async fn get_with(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<(u16, String, Option<String>)> {
        let mut r = self.with_cookie(self.http.get(format!("{}{path}", self.base)));
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let r = r.send().await?;
        let location = r
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok((r.status().as_u16(), r.text().await?, location))
    }

    /// Logs in; the status and the `Set-Cookie` header.
    async fn login(&mut self, token: &str) -> anyhow::Result<(u16, String)> {
        let r = self
            .http
            .post(format!("{}/login", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={token}"))
            .send()
            .await?;
        let set = r
            .headers()
            .get(SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        if let Some(pair) = set
            .split(';')
            .next()
            .filter(|p| p.len() > "omo_session=".len())
        {
            self.cookie = Some(pair.to_owned());
        }
        Ok((r.status().as_u16(), set))
    }

    /// The CSRF token a page carries.
    async fn csrf(&self) -> anyhow::Result<String> {
        let (_, page, _) = self.get("/").await?;
        let start = page
            .find(r#"<meta name="csrf" content=""#)
            .ok_or_else(|| anyhow::anyhow!("no csrf meta in {page}"))?
            + r#"<meta name="csrf" content=""#.len();
        Ok(page[start..].split('"').next().unwrap_or("").to_owned())
    }

    /// PUTs a config for g1 through the admin API with the session (and `csrf`, if given).
    async fn push_config(
        &self,
        config: &Value,
        csrf: Option<&str>,
    ) -> anyhow::Result<(u16, Value)> {
        self.api(
            reqwest::Method::PUT,
            "/v1/admin/gateways/g1/config",
            Some(config.clone()),
            csrf,
        )
        .await
    }

    async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        csrf: Option<&str>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut r = self.with_cookie(self.http.request(method, format!("{}{path}", self.base)));
        if let Some(t) = csrf {
            r = r.header("x-csrf-token", t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }
}

fn status(state: GatewayState, dropped: u64, config_version: u64) -> Status {
    Status {
        state,
        ts: Timestamp::new(chrono::Utc::now()),
        uptime_s: 5,
        outbox_depth: 12,
        adverts_per_s: 3.5,
        config_version,
        dropped,
        sw_version: "test".into(),
        accepts_v: vec![1],
        clock_synced: true,
        epoch: None,
        last_seq: None,
    }
}

async fn until<F, Fut>(what: &str, mut f: F) -> anyhow::Result<Value>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<Value>>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "no {what} in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_needs_a_session_shows_the_api_and_pushes_a_config() -> anyhow::Result<()> {
    let g1 = Creds::new("s1", "g1")?;
    let mut cloud = CloudUnderTest::new(vec![g1.clone()], None)?;
    cloud.start()?;
    let mut b = Browser::new(&cloud)?;

    // Without a session: pages lead to the login form; assets and the API refuse.
    for page in ["/", "/gateways", "/gateways/g1"] {
        let (code, _, location) = b.get(page).await?;
        assert_eq!((code, location.as_deref()), (303, Some("/login")), "{page}");
    }
    for asset in ["/assets/app.js", "/assets/app.css", "/v1/admin/overview"] {
        assert_eq!(b.get(asset).await?.0, 401, "{asset}");
    }
    let (code, form, _) = b.get("/login").await?;
    assert!(code == 200 && form.contains(r#"name="token""#), "{form}");
    let (code, _, _) = b.get("/favicon.ico").await?;
    assert_eq!(code, 200, "the favicon, without a session too");
    assert!(!form.contains("/assets/"), "the login form needs no asset");
    // Every answer with its security headers; pages with a policy allowing no inline script.
    let login = b.http.get(format!("{}/login", b.base)).send().await?;
    let h = login.headers();
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "same-origin");
    assert_eq!(h["x-frame-options"], "DENY");
    let csp = h["content-security-policy"].to_str()?;
    assert!(
        csp.contains("script-src 'self';") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    let api = b
        .http
        .get(format!("{}/v1/admin/overview", b.base))
        .send()
        .await?;
    assert_eq!(api.headers()["x-content-type-options"], "nosniff");

    // A wrong token gets the form again with the reason, and no cookie.
    let (code, set) = b.login("not-a-token").await?;
    assert_eq!((code, set.as_str()), (401, ""));
    assert!(b.cookie.is_none());
    // A forged cookie is no session.
    b.cookie = Some("omo_session=operator.9999999999.0123456789abcdef.AAAA".into());
    assert_eq!(b.get("/").await?.0, 303);
    assert_eq!(b.get("/assets/app.js").await?.0, 401);

    // An analyst logs in: the cookie is HttpOnly and SameSite=Strict.
    let (code, set) = b.login(ANALYST_TOKEN).await?;
    assert_eq!(code, 303);
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{attr} missing in {set}");
    }
    assert!(!set.contains(ANALYST_TOKEN), "the cookie holds no token");
    let (code, page, _) = b.get("/").await?;
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("GET /v1/admin/overview"), "{page}");
    assert_eq!(b.get("/assets/app.js").await?.0, 200);
    let (code, o) = b
        .api(reqwest::Method::GET, "/v1/admin/overview", None, None)
        .await?;
    assert_eq!(code, 200, "{o}");
    assert_eq!(
        o["gateways"],
        json!({"total": 1, "online": 0, "offline": 1})
    );
    // The page shows what the API answers.
    assert!(page.contains(r#"data-field="gateways.total">1<"#), "{page}");
    // An analyst may not push a config, with or without the CSRF token.
    let csrf = b.csrf().await?;
    let config = json!({"version": 2, "presence": {"stay_interval_s": 45}});
    let (code, body) = b.push_config(&config, Some(&csrf)).await?;
    assert_eq!(code, 403, "{body}");
    assert!(!b
        .get("/gateways/g1")
        .await?
        .1
        .contains("Send to the gateway"));

    // Pages in the browser's language, or the one chosen; errors are pages in the frame.
    let ja = [("accept-language", "ja-JP,ja;q=0.9,en;q=0.5")];
    let (code, page, _) = b.get_with("/", &ja).await?;
    assert!(code == 200 && page.contains(r#"<html lang="ja">"#) && page.contains("今日の状況"));
    assert!(
        !page.contains('⟦'),
        "a word missing from the catalog: {page}"
    );
    let (code, _, back) = b.get("/lang/ja?back=/gateways").await?;
    assert_eq!((code, back.as_deref()), (303, Some("/gateways")));
    for evil in [
        "//evil.example",
        "/%09/evil.example",
        "/%5Cevil.example",
        "https://evil.example",
    ] {
        let (code, _, back) = b.get(&format!("/lang/en?back={evil}")).await?;
        assert_eq!(
            (code, back.as_deref()),
            (303, Some("/")),
            "only a path of this site: {evil}"
        );
    }
    let html = [("accept", "text/html,application/xhtml+xml")];
    for path in [
        "/campaigns/none",
        "/stores/none",
        "/gateways/none",
        "/no/such/page",
    ] {
        let (code, page, _) = b.get_with(path, &html).await?;
        assert_eq!(code, 404, "{path}");
        assert!(
            page.contains("This page does not exist") && page.contains("<nav"),
            "{page}"
        );
    }
    let (code, body, _) = b.get("/no/such/page").await?;
    assert!(
        code == 404 && body.starts_with('{'),
        "the API's 404 without Accept: {body}"
    );

    // The gateway comes online; its outbox reports dropped events: an alert.
    let mut gw = MqttGateway::connect(cloud.mqtt_port, &g1, &g1.password).await?;
    let topic = g1.topic(Channel::Status);
    gw.publish_raw(
        &topic,
        seal(&topic, &g1.key, &status(GatewayState::Online, 7, 1))?,
    )
    .await?;
    let alerted = |o: &Value, kind: &str| {
        o["alerts"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["kind"] == kind && a["subject"] == "g1"))
    };
    until("the gateway online, its dropped events alerted", || async {
        let (_, o) = b
            .api(reqwest::Method::GET, "/v1/admin/overview", None, None)
            .await?;
        Ok((o["gateways"]["online"] == 1 && alerted(&o, "outbox_dropping")).then_some(o))
    })
    .await?;
    let (_, page, _) = b.get("/gateways").await?;
    assert!(
        page.contains(">Online<") && page.contains(">3.5<") && page.contains(">12<"),
        "{page}"
    );

    // An operator pushes a config from the gateway page: without the CSRF token it is
    // refused, with it the gateway gets it, and its ack shows on the page.
    let (code, _) = b.login(ADMIN_TOKEN).await?;
    assert_eq!(code, 303);
    let (_, page, _) = b.get("/gateways/g1").await?;
    assert!(page.contains("Send to the gateway"), "{page}");
    let (code, body) = b.push_config(&config, None).await?;
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (403, Some("csrf")),
        "{body}"
    );
    let (code, body) = b.push_config(&config, Some("0000")).await?;
    assert_eq!(code, 403, "{body}");
    let csrf = b.csrf().await?;
    let (code, body) = b.push_config(&config, Some(&csrf)).await?;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["version"], 2);
    let payload = gw
        .next_on(Channel::Config, WAIT)
        .await
        .ok_or_else(|| anyhow::anyhow!("no config\n{}", cloud.log()))?;
    let doc: RemoteConfig = open(&g1.topic(Channel::Config), &g1.key, &payload)?;
    assert_eq!(doc.version, 2);
    let ack_topic = g1.topic(Channel::ConfigAck);
    let ack = ConfigAck {
        version: 2,
        ok: true,
        error: None,
        warnings: vec![],
    };
    gw.publish_raw(&ack_topic, seal(&ack_topic, &g1.key, &ack)?)
        .await?;
    until("the ack on the page", || async {
        let (_, page, _) = b.get("/gateways/g1").await?;
        Ok(page.contains("Version 2 applied").then_some(Value::Null))
    })
    .await?;
    // The textarea offers the config in force for the next push.
    assert!(b.get("/gateways/g1").await?.1.contains("stay_interval_s"));

    // The gateway stops cleanly: offline, alerted.
    gw.publish_raw(
        &topic,
        seal(&topic, &g1.key, &status(GatewayState::Offline, 7, 2))?,
    )
    .await?;
    let o = until("the gateway offline", || async {
        let (_, o) = b
            .api(reqwest::Method::GET, "/v1/admin/overview", None, None)
            .await?;
        Ok((o["gateways"]["offline"] == 1).then_some(o))
    })
    .await?;
    // Offline and alerted are one change (the alert is pushed under the gateways' lock).
    assert!(alerted(&o, "gateway_offline"), "{o}");
    let (_, page, _) = b.get("/").await?;
    assert!(page.contains("Gateway g1 went offline."), "{page}");
    assert!(page.contains("gateway g1 has not been heard for"), "{page}");

    // Logging out needs the CSRF token too, and ends the session in the browser.
    let r = b
        .with_cookie(b.http.post(format!("{}/logout", b.base)))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}"))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 303);
    let set = r
        .headers()
        .get(SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(set.contains("Max-Age=0"), "{set}");
    // A bearer token still works for scripts, alongside.
    let (code, _) = cloud
        .call(
            reqwest::Method::GET,
            "/v1/admin/overview",
            None,
            Some(ADMIN_TOKEN),
        )
        .await?;
    assert_eq!(code, 200);
    cloud.stop()?;
    Ok(())
}
