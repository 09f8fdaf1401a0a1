//! A fake FCM HTTP v1 on loopback, for the delivery tests, the demo and the load generator.
//! It checks requests as Google does:
//!
//! - `POST /token` (the OAuth2 token endpoint): a JWT-bearer grant whose RS256 signature
//!   verifies with the service account's key, `iss` = its client email, the FCM scope, `aud` =
//!   this endpoint, and a current `iat`/`exp`; answers a bearer token that lives `token_ttl_s`.
//! - `POST /v1/projects/{project}/messages:send`: that bearer (401 `UNAUTHENTICATED` otherwise),
//!   the right project, a message with exactly one target (`token`), string-only `data`, an
//!   Android `ttl` such as `"3600s"`; a token marked unregistered gets 404 `UNREGISTERED`.
//!
//! It records what it accepted (`GET /fake/deliveries`), injects faults (`POST /fake/faults`,
//! as the fake LINE server) and marks tokens unregistered (`POST /fake/unregistered`,
//! `{"token": …}`).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{KeyPair, RsaKeyPair, UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub use crate::fault::Fault;
use crate::fault::{now_ms, Faults};
use crate::served::Served;

const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

/// A message the fake accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accepted {
    pub token: String,
    /// `data.delivery_id`, if the message carried one.
    pub delivery_id: Option<String>,
    pub collapse_key: Option<String>,
    /// `data.coupon`, if the message carried one.
    pub coupon: Option<String>,
    pub body: Option<String>,
    pub ttl: Option<String>,
    pub received_ms: u64,
}

/// The service account the fake trusts.
#[derive(Debug, Clone, Deserialize)]
struct Account {
    project_id: String,
    client_email: String,
    private_key: String,
}

#[derive(Default)]
struct Inner {
    accepted: Vec<Accepted>,
    bearers: HashMap<String, u64>,
    unregistered: HashSet<String>,
    faults: Faults,
    requests: u64,
    grants: u64,
}

#[derive(Clone)]
struct Shared {
    project: Arc<String>,
    client_email: Arc<String>,
    public_key: Arc<Vec<u8>>,
    token_url: Arc<String>,
    token_ttl_s: u64,
    inner: Arc<Mutex<Inner>>,
}

/// A running fake FCM server.
pub struct FakeFcm {
    pub addr: SocketAddr,
    shared: Shared,
    served: Served,
}

fn fcm_error(status: StatusCode, name: &str, message: &str, code: Option<&str>) -> Response {
    let details: Vec<Value> = code
        .map(|c| {
            vec![json!({"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": c})]
        })
        .unwrap_or_default();
    (
        status,
        Json(json!({"error": {"code": status.as_u16(), "message": message, "status": name, "details": details}})),
    )
        .into_response()
}

fn oauth_error(description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": "invalid_grant", "error_description": description})),
    )
        .into_response()
}

impl FakeFcm {
    /// Starts the fake on `addr` trusting the service-account key file `key_file`; bearers
    /// it issues live `token_ttl_s`.
    pub async fn start(
        addr: SocketAddr,
        key_file: &Path,
        token_ttl_s: u64,
    ) -> anyhow::Result<FakeFcm> {
        let account: Account = serde_json::from_str(&std::fs::read_to_string(key_file)?)?;
        let der = match rustls_pemfile::private_key(&mut account.private_key.as_bytes()) {
            Ok(Some(rustls::pki_types::PrivateKeyDer::Pkcs8(k))) => k.secret_pkcs8_der().to_vec(),
            _ => anyhow::bail!("{}: private_key is not PEM PKCS#8", key_file.display()),
        };
        let pair = RsaKeyPair::from_pkcs8(&der)
            .map_err(|e| anyhow::anyhow!("{}: private_key: {e}", key_file.display()))?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Shared {
            project: Arc::new(account.project_id),
            client_email: Arc::new(account.client_email),
            public_key: Arc::new(pair.public_key().as_ref().to_vec()),
            token_url: Arc::new(format!("http://{addr}/token")),
            token_ttl_s,
            inner: Arc::new(Mutex::new(Inner::default())),
        };
        let app = Router::new()
            .route("/token", post(token))
            // `messages:send` has a colon inside the segment: matched as a wildcard and checked.
            .route("/v1/projects/:project/*action", post(send))
            .route("/fake/deliveries", get(deliveries))
            .route("/fake/faults", post(add_fault))
            .route("/fake/unregistered", post(unregister))
            .with_state(shared.clone());
        let served = Served::start(listener, app, "fake FCM server")?;
        Ok(FakeFcm {
            addr,
            shared,
            served,
        })
    }

    /// The base URL to configure as the FCM base.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The token endpoint to configure (`app.fcm_token_url`).
    pub fn token_url(&self) -> String {
        self.shared.token_url.to_string()
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.shared.inner.lock().expect("fake FCM lock")
    }

    pub fn accepted(&self) -> Vec<Accepted> {
        self.inner().accepted.clone()
    }

    /// Send requests received (accepted or not).
    pub fn requests(&self) -> u64 {
        self.inner().requests
    }

    /// Grants exchanged for bearers.
    pub fn grants(&self) -> u64 {
        self.inner().grants
    }

    pub fn inject(&self, fault: Fault) {
        self.inner().faults.push(fault);
    }

    /// Answers `UNREGISTERED` for `token` from now on.
    pub fn unregister(&self, token: &str) {
        self.inner().unregistered.insert(token.to_owned());
    }

    /// Runs until the task ends (for `omo-sim fake-fcm`).
    pub async fn serve_forever(self) {
        self.served.wait().await;
    }
}

/// Checks a JWT-bearer grant as Google's token endpoint does; the problem otherwise.
fn check_grant(s: &Shared, jwt: &str, now_s: u64) -> Result<(), String> {
    let parts: Vec<&str> = jwt.split('.').collect();
    let [header, claims, sig] = parts.as_slice() else {
        return Err("the assertion is not a JWS in compact form".into());
    };
    let decode = |p: &str, what: &str| -> Result<Vec<u8>, String> {
        URL_SAFE_NO_PAD
            .decode(p)
            .map_err(|e| format!("{what}: not base64url: {e}"))
    };
    let header: Value =
        serde_json::from_slice(&decode(header, "header")?).map_err(|e| format!("header: {e}"))?;
    if header.get("alg").and_then(Value::as_str) != Some("RS256") {
        return Err("alg must be RS256".into());
    }
    let signed = &jwt[..jwt.rfind('.').unwrap_or(0)];
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, s.public_key.as_slice())
        .verify(signed.as_bytes(), &decode(sig, "signature")?)
        .map_err(|_| "Invalid JWT Signature.".to_owned())?;
    let claims: Value =
        serde_json::from_slice(&decode(claims, "claims")?).map_err(|e| format!("claims: {e}"))?;
    let text = |k: &str| claims.get(k).and_then(Value::as_str).unwrap_or_default();
    let num = |k: &str| claims.get(k).and_then(Value::as_u64).unwrap_or(0);
    if text("iss") != s.client_email.as_str() {
        return Err("iss is not the service account".into());
    }
    if !text("scope").split(' ').any(|x| x == SCOPE) {
        return Err("scope lacks firebase.messaging".into());
    }
    if text("aud") != s.token_url.as_str() {
        return Err(format!("aud must be {}", s.token_url));
    }
    let (iat, exp) = (num("iat"), num("exp"));
    if iat > now_s + 300 || exp <= now_s || exp > iat + 3600 {
        return Err("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.".into());
    }
    Ok(())
}

#[derive(Deserialize)]
struct Grant {
    grant_type: String,
    assertion: String,
}

async fn token(State(s): State<Shared>, body: Bytes) -> Response {
    let Ok(grant) = serde_urlencoded::from_bytes::<Grant>(&body) else {
        return oauth_error("expected a form with grant_type and assertion");
    };
    if grant.grant_type != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
        return oauth_error("unsupported grant_type");
    }
    let now_ms = now_ms();
    if let Err(e) = check_grant(&s, &grant.assertion, now_ms / 1000) {
        return oauth_error(&e);
    }
    let mut bytes = [0u8; 24];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    let bearer = format!("ya29.fake-{}", URL_SAFE_NO_PAD.encode(bytes));
    let mut inner = s.inner.lock().expect("fake FCM lock");
    inner.grants += 1;
    inner
        .bearers
        .insert(bearer.clone(), now_ms + s.token_ttl_s * 1000);
    Json(json!({"access_token": bearer, "expires_in": s.token_ttl_s, "token_type": "Bearer"}))
        .into_response()
}

async fn deliveries(State(s): State<Shared>) -> Response {
    Json(json!({"accepted": s.inner.lock().expect("fake FCM lock").accepted})).into_response()
}

async fn add_fault(State(s): State<Shared>, Json(fault): Json<Fault>) -> Response {
    s.inner.lock().expect("fake FCM lock").faults.push(fault);
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
struct Unregister {
    token: String,
}

async fn unregister(State(s): State<Shared>, Json(u): Json<Unregister>) -> Response {
    s.inner
        .lock()
        .expect("fake FCM lock")
        .unregistered
        .insert(u.token);
    StatusCode::NO_CONTENT.into_response()
}

fn invalid(message: &str) -> String {
    message.to_owned()
}

/// The message's problem, if any (as FCM reports it), else what to record.
fn check_message(body: &[u8]) -> Result<(String, Accepted), String> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| invalid(&format!("Invalid JSON payload received. {e}")))?;
    let m = v
        .get("message")
        .filter(|m| m.is_object())
        .ok_or_else(|| invalid("message is required"))?;
    let targets = ["token", "topic", "condition"]
        .iter()
        .filter(|k| m.get(**k).is_some())
        .count();
    let token = m.get("token").and_then(Value::as_str).unwrap_or_default();
    if targets != 1 || token.is_empty() {
        return Err(invalid("message must have exactly one target: token"));
    }
    if let Some(data) = m.get("data") {
        let ok = data
            .as_object()
            .is_some_and(|o| o.values().all(Value::is_string));
        if !ok {
            return Err(invalid("data must map strings to strings"));
        }
    }
    let android = m.get("android");
    let ttl = android.and_then(|a| a.get("ttl"));
    if let Some(t) = ttl {
        let ok = t
            .as_str()
            .and_then(|t| t.strip_suffix('s'))
            .is_some_and(|n| n.parse::<f64>().is_ok_and(|n| n >= 0.0));
        if !ok {
            return Err(invalid("android.ttl must be a duration such as \"3.5s\""));
        }
    }
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    Ok((
        token.to_owned(),
        Accepted {
            token: token.to_owned(),
            delivery_id: text(m.get("data").and_then(|d| d.get("delivery_id"))),
            collapse_key: text(android.and_then(|a| a.get("collapse_key"))),
            coupon: text(m.get("data").and_then(|d| d.get("coupon"))),
            body: text(m.get("notification").and_then(|n| n.get("body"))),
            ttl: text(ttl),
            received_ms: now_ms(),
        },
    ))
}

/// Counts the request and answers the next injected fault as FCM does, if one is due.
async fn injected_fault(s: &Shared) -> Option<Response> {
    let fault = {
        let mut inner = s.inner.lock().expect("fake FCM lock");
        inner.requests += 1;
        inner.faults.take()
    };
    let f = crate::fault::delayed(fault).await?;
    if f.status == 429 {
        let r = fcm_error(
            StatusCode::TOO_MANY_REQUESTS,
            "RESOURCE_EXHAUSTED",
            "Quota exceeded",
            Some("QUOTA_EXCEEDED"),
        );
        return Some(crate::fault::with_retry_after(r, &f));
    }
    if f.status >= 500 {
        let status = StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Some(fcm_error(
            status,
            "UNAVAILABLE",
            "The service is unavailable",
            Some("UNAVAILABLE"),
        ));
    }
    None
}

/// Whether the request carries a bearer token this server issued and that has not expired.
fn authorised(s: &Shared, headers: &HeaderMap) -> bool {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    s.inner
        .lock()
        .expect("fake FCM lock")
        .bearers
        .get(bearer)
        .is_some_and(|until| *until > now_ms())
}

async fn send(
    State(s): State<Shared>,
    UrlPath((project, action)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if action.trim_start_matches('/') != "messages:send" {
        return fcm_error(StatusCode::NOT_FOUND, "NOT_FOUND", "No such method", None);
    }
    if let Some(refusal) = injected_fault(&s).await {
        return refusal;
    }
    if !authorised(&s, &headers) {
        return fcm_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
            None,
        );
    }
    if project != *s.project {
        return fcm_error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "SenderId mismatch",
            Some("SENDER_ID_MISMATCH"),
        );
    }
    let (token, accepted) = match check_message(&body) {
        Ok(x) => x,
        Err(message) => {
            return fcm_error(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                &message,
                Some("INVALID_ARGUMENT"),
            )
        }
    };
    let mut inner = s.inner.lock().expect("fake FCM lock");
    if inner.unregistered.contains(&token) {
        return fcm_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "Requested entity was not found.",
            Some("UNREGISTERED"),
        );
    }
    inner.accepted.push(accepted);
    let n = inner.accepted.len();
    Json(json!({"name": format!("projects/{}/messages/{n}", s.project)})).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use omo_cloud::delivery::fcm::{FcmSender, ServiceAccount};
    use omo_cloud::delivery::retry::Answer;
    use omo_cloud::delivery::DeliveryChannel;
    use omo_cloud::delivery::{Delivery, Status};
    use std::time::Duration;

    const KEY: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/fcm-service-account.json"
    );

    fn delivery(id: &str) -> Delivery {
        Delivery {
            id: id.into(),
            trigger_key: "t".into(),
            retry_key: "r".into(),
            campaign: "c".into(),
            variant: "a".into(),
            channel: DeliveryChannel::Push,
            customer: "c_1".into(),
            store: "s1".into(),
            text: "A coffee on us".into(),
            flex: None,
            coupon: "ABC".into(),
            decided_ms: 0,
            expires_ms: 0,
            status: Status::Sending,
            attempts: 1,
            first_attempt_ms: None,
            last_attempt_ms: None,
            done_ms: None,
            reason: None,
            link: None,
            click: None,
            test: false,
        }
    }

    fn client() -> reqwest::Client {
        omo_cloud::tls::http_client_builder().build().unwrap()
    }

    #[tokio::test]
    async fn the_cloud_sender_gets_a_bearer_with_a_signed_grant_and_sends_collapsible_messages() {
        let fake = FakeFcm::start("127.0.0.1:0".parse().unwrap(), Path::new(KEY), 3600)
            .await
            .unwrap();
        let sender = FcmSender::from_file(
            client(),
            &fake.base_url(),
            Path::new(KEY),
            Some(&fake.token_url()),
        )
        .unwrap();
        let ttl = Duration::from_secs(600);
        let a = sender.send(&delivery("d1"), "tok-1", ttl).await;
        assert!(
            matches!(a.answer, Answer::Status { code: 200, .. }),
            "{a:?}"
        );
        let b = sender.send(&delivery("d2"), "tok-1", ttl).await;
        assert!(
            matches!(b.answer, Answer::Status { code: 200, .. }),
            "{b:?}"
        );
        assert_eq!(fake.grants(), 1, "the bearer is cached");
        let accepted = fake.accepted();
        assert_eq!(accepted[0].delivery_id.as_deref(), Some("d1"));
        assert_eq!(accepted[0].collapse_key.as_deref(), Some("d1"));
        assert_eq!(accepted[0].ttl.as_deref(), Some("600s"));
        fake.unregister("tok-1");
        let gone = sender.send(&delivery("d3"), "tok-1", ttl).await;
        assert!(gone.unregistered, "{gone:?}");
        // A 404 that is not FCM's UNREGISTERED (a wrong base URL) forgets no token.
        let misconfigured = FcmSender::from_file(
            client(),
            &format!("{}/v1", fake.base_url()),
            Path::new(KEY),
            Some(&fake.token_url()),
        )
        .unwrap();
        let lost = misconfigured.send(&delivery("d5"), "tok-2", ttl).await;
        assert!(
            matches!(lost.answer, Answer::Status { code: 404, .. }),
            "{lost:?}"
        );
        assert!(!lost.unregistered);
        assert!(matches!(gone.answer, Answer::Status { code: 404, .. }));
        fake.inject(Fault {
            status: 429,
            count: 1,
            retry_after_s: Some(7),
            latency_ms: 0,
        });
        let busy = sender.send(&delivery("d4"), "tok-2", ttl).await;
        assert!(matches!(
            busy.answer,
            Answer::Status {
                code: 429,
                retry_after_s: Some(7),
                ..
            }
        ));
    }

    #[tokio::test]
    async fn grants_signed_by_another_key_and_expired_bearers_are_refused() {
        let fake = FakeFcm::start("127.0.0.1:0".parse().unwrap(), Path::new(KEY), 0)
            .await
            .unwrap();
        // A bearer that lives 0 s is refused at once: the sender reports no delivery and
        // fetches a new bearer next time.
        let sender = FcmSender::from_file(
            client(),
            &fake.base_url(),
            Path::new(KEY),
            Some(&fake.token_url()),
        )
        .unwrap();
        let a = sender
            .send(&delivery("d1"), "tok", Duration::from_secs(60))
            .await;
        assert!(matches!(a.answer, Answer::NoAnswer(_)), "{a:?}");
        let _ = sender
            .send(&delivery("d1"), "tok", Duration::from_secs(60))
            .await;
        assert_eq!(fake.grants(), 2);
        assert!(fake.accepted().is_empty());
        // Another service account's key: its grant does not verify.
        let mut other: ServiceAccount =
            serde_json::from_str(&std::fs::read_to_string(KEY).unwrap()).unwrap();
        other.client_email = "intruder@evil.example".into();
        let intruder =
            FcmSender::new(client(), &fake.base_url(), &other, Some(&fake.token_url())).unwrap();
        let refused = intruder
            .send(&delivery("d9"), "tok", Duration::from_secs(60))
            .await;
        match refused.answer {
            Answer::NoAnswer(m) => assert!(m.contains("iss"), "{m}"),
            other => panic!("{other:?}"),
        }
        let jwt = intruder.grant(now_ms() / 1000).unwrap();
        let mut parts: Vec<String> = jwt.split('.').map(str::to_owned).collect();
        parts[2] = URL_SAFE_NO_PAD.encode([7u8; 256]);
        let forged = parts.join(".");
        assert_eq!(
            check_grant(&fake.shared, &forged, now_ms() / 1000).unwrap_err(),
            "Invalid JWT Signature."
        );
    }
}
