//! A fake LINE Messaging API push endpoint (`POST /v2/bot/message/push`) on loopback, for the
//! delivery tests, the demo and the load generator. It checks requests as LINE does — bearer
//! channel access token, JSON shape, 1–5 messages, text of at most 5,000 characters, a UUID
//! `X-Line-Retry-Key` — records what it accepted, answers a repeated retry key with 409 (LINE's
//! "already accepted"), and injects faults on demand: 429 with `Retry-After`, 500, latency.
//!
//! Control and inspection over HTTP too: `GET /fake/deliveries[?since=N]`, `POST /fake/faults`
//! (`{"status":429,"count":10,"retry_after_s":1,"latency_ms":0}`); each accepted push records
//! when it arrived, so a rate limit can be checked against it.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub use crate::fault::Fault;
use crate::fault::{now_ms, Faults};
use crate::served::Served;

/// A push the fake accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accepted {
    pub to: String,
    pub texts: Vec<String>,
    pub retry_key: Option<String>,
    /// When it arrived, Unix milliseconds (wall time).
    pub received_ms: u64,
}

/// A push request as it came, and what the fake answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub retry_key: Option<String>,
    pub status: u16,
    pub received_ms: u64,
}

#[derive(Default)]
struct Inner {
    accepted: Vec<Accepted>,
    log: Vec<Request>,
    retry_keys: HashSet<String>,
    /// Link tokens issued: (token, LINE user).
    link_tokens: Vec<(String, String)>,
    faults: Faults,
    requests: u64,
}

#[derive(Clone)]
struct Shared {
    token: Arc<String>,
    inner: Arc<Mutex<Inner>>,
}

/// A running fake LINE server.
pub struct FakeLine {
    pub addr: SocketAddr,
    shared: Shared,
    served: Served,
}

fn line_error(status: StatusCode, message: &str, property: Option<&str>) -> Response {
    let details: Vec<Value> = property
        .map(|p| vec![json!({"message": message, "property": p})])
        .unwrap_or_default();
    (
        status,
        Json(json!({"message": message, "details": details})),
    )
        .into_response()
}

fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && [8, 4, 4, 4, 12]
            .iter()
            .zip(&parts)
            .all(|(n, p)| p.len() == *n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl FakeLine {
    /// Starts the fake on `addr` (port 0: any free port) accepting `token`.
    pub async fn start(addr: SocketAddr, token: &str) -> std::io::Result<FakeLine> {
        let shared = Shared {
            token: Arc::new(token.to_owned()),
            inner: Arc::new(Mutex::new(Inner::default())),
        };
        let app = Router::new()
            .route("/v2/bot/message/push", post(push))
            .route("/v2/bot/user/:user/linkToken", post(link_token))
            .route("/fake/deliveries", get(deliveries))
            .route("/fake/faults", post(add_fault))
            .with_state(shared.clone());
        let served = Served::start(
            tokio::net::TcpListener::bind(addr).await?,
            app,
            "fake LINE server",
        )?;
        Ok(FakeLine {
            addr: served.addr,
            shared,
            served,
        })
    }

    /// The base URL to configure as the LINE API base.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The account-link tokens issued, with the LINE user each was issued for.
    pub fn link_tokens(&self) -> Vec<(String, String)> {
        self.shared
            .inner
            .lock()
            .expect("fake LINE lock")
            .link_tokens
            .clone()
    }

    /// What it accepted so far.
    pub fn accepted(&self) -> Vec<Accepted> {
        self.shared
            .inner
            .lock()
            .expect("fake LINE lock")
            .accepted
            .clone()
    }

    /// Every push request, in order, with the status it got.
    pub fn request_log(&self) -> Vec<Request> {
        self.shared
            .inner
            .lock()
            .expect("fake LINE lock")
            .log
            .clone()
    }

    /// Push requests received (accepted or not).
    pub fn requests(&self) -> u64 {
        self.shared.inner.lock().expect("fake LINE lock").requests
    }

    /// Queues a fault for the next requests.
    pub fn inject(&self, fault: Fault) {
        self.shared
            .inner
            .lock()
            .expect("fake LINE lock")
            .faults
            .push(fault);
    }

    /// Runs until the task ends (for the `omo-sim fake-line` command).
    pub async fn serve_forever(self) {
        self.served.wait().await;
    }
}

#[derive(Deserialize)]
struct Since {
    #[serde(default)]
    since: usize,
}

/// What it accepted, from the `since`-th on (so a poller reads each once), and how many in all.
async fn deliveries(State(s): State<Shared>, Query(q): Query<Since>) -> Response {
    let inner = s.inner.lock().expect("fake LINE lock");
    let from = q.since.min(inner.accepted.len());
    Json(json!({"accepted": inner.accepted[from..], "total": inner.accepted.len()})).into_response()
}

async fn add_fault(State(s): State<Shared>, Json(fault): Json<Fault>) -> Response {
    s.inner.lock().expect("fake LINE lock").faults.push(fault);
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
struct PushBody {
    to: String,
    messages: Vec<Value>,
}

/// `POST /v2/bot/user/{userId}/linkToken`: a link token for the account-link flow.
async fn link_token(
    State(s): State<Shared>,
    axum::extract::Path(user): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&s, &headers) {
        return unauthorized();
    }
    if !user.starts_with('U') || user.len() != 33 {
        return line_error(StatusCode::BAD_REQUEST, "Invalid user ID", None);
    }
    let token: String = {
        use rand::Rng;
        let mut rng = rand::rng();
        (0..32)
            .map(|_| {
                char::from(
                    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                        [rng.random_range(0..62)],
                )
            })
            .collect()
    };
    s.inner
        .lock()
        .expect("fake LINE lock")
        .link_tokens
        .push((token.clone(), user));
    Json(json!({"linkToken": token})).into_response()
}

fn authorized(s: &Shared, headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == s.token.as_str())
}

fn unauthorized() -> Response {
    line_error(
        StatusCode::UNAUTHORIZED,
        "Authentication failed due to the following reason: invalid token.",
        None,
    )
}

async fn push(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let received_ms = now_ms();
    let retry_key = headers
        .get("x-line-retry-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    let response = answer_push(&s, &headers, body).await;
    s.inner.lock().expect("fake LINE lock").log.push(Request {
        retry_key,
        status: response.status().as_u16(),
        received_ms,
    });
    response
}

async fn answer_push(s: &Shared, headers: &HeaderMap, body: Bytes) -> Response {
    if let Some(r) = injected_fault(s).await {
        return r;
    }
    if !authorized(s, headers) {
        return unauthorized();
    }
    let retry_key = match retry_key_of(headers) {
        Ok(k) => k,
        Err(r) => return r.answer(),
    };
    let body: PushBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return line_error(
                StatusCode::BAD_REQUEST,
                &format!("The request body has 1 error(s): {e}"),
                None,
            )
        }
    };
    let texts = match push_texts(&body) {
        Ok(t) => t,
        Err(r) => return r.answer(),
    };
    let mut inner = s.inner.lock().expect("fake LINE lock");
    if let Some(k) = &retry_key {
        if !inner.retry_keys.insert(k.clone()) {
            let mut r = line_error(
                StatusCode::CONFLICT,
                "The retry key is already accepted",
                None,
            );
            r.headers_mut().insert(
                "x-line-accepted-request-id",
                axum::http::HeaderValue::from_str(k).expect("a UUID is a header value"),
            );
            return r;
        }
    }
    inner.accepted.push(Accepted {
        to: body.to,
        texts,
        retry_key,
        received_ms: now_ms(),
    });
    (StatusCode::OK, Json(json!({"sentMessages": []}))).into_response()
}

/// Counts the request and answers the fault injected for it, if any (after its latency).
async fn injected_fault(s: &Shared) -> Option<Response> {
    let fault = {
        let mut inner = s.inner.lock().expect("fake LINE lock");
        inner.requests += 1;
        inner.faults.take()
    };
    let f = crate::fault::delayed(fault).await?;
    if f.status == 429 {
        let r = line_error(
            StatusCode::TOO_MANY_REQUESTS,
            "The API rate limit has been exceeded. Try again later.",
            None,
        );
        return Some(crate::fault::with_retry_after(r, &f));
    }
    if f.status >= 500 {
        let status = StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Some(line_error(status, "Internal server error", None));
    }
    None
}

/// The request's `X-Line-Retry-Key`, lower-cased; one that is no UUID is a 400.
fn retry_key_of(headers: &HeaderMap) -> Result<Option<String>, Refusal> {
    match headers.get("x-line-retry-key").map(|v| v.to_str()) {
        None => Ok(None),
        Some(Ok(k)) if is_uuid(k) => Ok(Some(k.to_ascii_lowercase())),
        Some(_) => Err(refusal(
            StatusCode::BAD_REQUEST,
            "The retry key must be a UUID",
            Some("X-Line-Retry-Key".into()),
        )),
    }
}

/// The texts of a push's messages (a flex message's is empty), or LINE's 400 for a missing
/// recipient, a wrong number of messages, or a message LINE would refuse.
fn push_texts(body: &PushBody) -> Result<Vec<String>, Refusal> {
    if body.to.is_empty() {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            "The property, 'to', in the request body is invalid",
            Some("to".into()),
        ));
    }
    if body.messages.is_empty() || body.messages.len() > 5 {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            "Size must be between 1 and 5",
            Some("messages".into()),
        ));
    }
    let mut texts = Vec::new();
    for (i, m) in body.messages.iter().enumerate() {
        match (
            m.get("type").and_then(Value::as_str),
            m.get("text").and_then(Value::as_str),
        ) {
            (Some("text"), Some(t)) if !t.is_empty() && t.chars().count() <= 5000 => {
                texts.push(t.to_owned())
            }
            (Some("text"), _) => {
                return Err(refusal(
                    StatusCode::BAD_REQUEST,
                    "Length must be between 1 and 5000",
                    Some(format!("messages[{i}].text")),
                ))
            }
            (Some("flex"), _) => texts.push(String::new()),
            _ => {
                return Err(refusal(
                    StatusCode::BAD_REQUEST,
                    "Must be one of the following values: [text, flex, …]",
                    Some(format!("messages[{i}].type")),
                ))
            }
        }
    }
    Ok(texts)
}

/// Why LINE refuses a request: its status, message and the property at fault.
struct Refusal {
    status: StatusCode,
    message: &'static str,
    property: Option<String>,
}

fn refusal(status: StatusCode, message: &'static str, property: Option<String>) -> Refusal {
    Refusal {
        status,
        message,
        property,
    }
}

impl Refusal {
    fn answer(&self) -> Response {
        line_error(self.status, self.message, self.property.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn post(fake: &FakeLine, token: &str, key: Option<&str>, body: Value) -> (u16, Value) {
        let mut req = omo_cloud::tls::http_client_builder()
            .build()
            .unwrap()
            .post(format!("{}/v2/bot/message/push", fake.base_url()))
            .bearer_auth(token)
            .json(&body);
        if let Some(k) = key {
            req = req.header("X-Line-Retry-Key", k);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn checks_requests_as_line_does_and_keeps_one_per_retry_key() {
        let fake = FakeLine::start("127.0.0.1:0".parse().unwrap(), "tok")
            .await
            .unwrap();
        let msg = json!({"to": "U1", "messages": [{"type": "text", "text": "hi"}]});
        let key = "123e4567-e89b-42d3-a456-426614174000";
        assert_eq!(post(&fake, "bad", Some(key), msg.clone()).await.0, 401);
        assert_eq!(
            post(&fake, "tok", Some("not-a-uuid"), msg.clone()).await.0,
            400
        );
        let six = json!({"to": "U1", "messages": vec![json!({"type": "text", "text": "x"}); 6]});
        let (status, body) = post(&fake, "tok", None, six).await;
        assert_eq!(status, 400);
        assert_eq!(body["details"][0]["property"], "messages");
        let long = json!({"to": "U1", "messages": [{"type": "text", "text": "x".repeat(5001)}]});
        assert_eq!(post(&fake, "tok", None, long).await.0, 400);
        assert_eq!(post(&fake, "tok", Some(key), msg.clone()).await.0, 200);
        assert_eq!(
            post(&fake, "tok", Some(key), msg.clone()).await.0,
            409,
            "a repeated retry key"
        );
        fake.inject(Fault {
            status: 429,
            count: 2,
            retry_after_s: Some(1),
            latency_ms: 0,
        });
        assert_eq!(post(&fake, "tok", None, msg.clone()).await.0, 429);
        assert_eq!(post(&fake, "tok", None, msg.clone()).await.0, 429);
        assert_eq!(post(&fake, "tok", None, msg.clone()).await.0, 200);
        assert_eq!(fake.accepted().len(), 2);
        assert_eq!(fake.accepted()[0].texts, ["hi"]);
    }
}
