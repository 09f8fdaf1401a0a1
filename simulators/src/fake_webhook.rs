//! A fake brand webhook receiver on loopback (`POST /hook`): checks the
//! `X-Omo-Signature: sha256=<hex HMAC-SHA256(secret, body)>` header and the `Idempotency-Key`,
//! keeps the first body per key (a repeat is answered 200 again and counted), and injects
//! faults as the other fakes do. `GET /fake/deliveries` lists what it kept.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

pub use crate::fault::Fault;
use crate::fault::Faults;
use crate::served::Served;

#[derive(Default)]
struct Inner {
    kept: BTreeMap<String, Value>,
    repeats: u64,
    faults: Faults,
}

#[derive(Clone)]
struct Shared {
    secret: Arc<String>,
    inner: Arc<Mutex<Inner>>,
}

/// A running fake webhook receiver.
pub struct FakeWebhook {
    pub addr: SocketAddr,
    shared: Shared,
    served: Served,
}

impl FakeWebhook {
    pub async fn start(addr: SocketAddr, secret: &str) -> std::io::Result<FakeWebhook> {
        let shared = Shared {
            secret: Arc::new(secret.to_owned()),
            inner: Arc::new(Mutex::new(Inner::default())),
        };
        let app = Router::new()
            .route("/hook", post(hook))
            .route("/fake/deliveries", get(deliveries))
            .with_state(shared.clone());
        let served = Served::start(
            tokio::net::TcpListener::bind(addr).await?,
            app,
            "fake webhook",
        )?;
        Ok(FakeWebhook {
            addr: served.addr,
            shared,
            served,
        })
    }

    /// The URL to configure as `webhook.url`.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// The first body kept per idempotency key.
    pub fn kept(&self) -> BTreeMap<String, Value> {
        self.shared
            .inner
            .lock()
            .expect("fake webhook lock")
            .kept
            .clone()
    }

    /// Runs until the server stops (for `omo-sim fake-webhook`).
    pub async fn serve_forever(self) {
        self.served.wait().await;
    }

    /// Requests that repeated a key already kept.
    pub fn repeats(&self) -> u64 {
        self.shared.inner.lock().expect("fake webhook lock").repeats
    }

    pub fn inject(&self, fault: Fault) {
        self.shared
            .inner
            .lock()
            .expect("fake webhook lock")
            .faults
            .push(fault);
    }
}

async fn deliveries(State(s): State<Shared>) -> Response {
    let inner = s.inner.lock().expect("fake webhook lock");
    Json(json!({"kept": inner.kept, "repeats": inner.repeats})).into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": {"message": message}}))).into_response()
}

async fn hook(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let fault = s.inner.lock().expect("fake webhook lock").faults.take();
    if let Some(f) = crate::fault::delayed(fault).await {
        if f.status >= 400 {
            let r = error(
                StatusCode::from_u16(f.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                "injected fault",
            );
            return crate::fault::with_retry_after(r, &f);
        }
    }
    let signature = headers
        .get("x-omo-signature")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("sha256="))
        .and_then(|h| hex::decode(h).ok());
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(s.secret.as_bytes()).expect("HMAC takes any key");
    mac.update(&body);
    if signature.is_none_or(|sig| mac.verify_slice(&sig).is_err()) {
        return error(StatusCode::UNAUTHORIZED, "bad X-Omo-Signature");
    }
    let Some(key) = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty())
    else {
        return error(StatusCode::BAD_REQUEST, "Idempotency-Key is required");
    };
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "the body is not JSON");
    };
    let mut inner = s.inner.lock().expect("fake webhook lock");
    if inner.kept.contains_key(key) {
        inner.repeats += 1;
    } else {
        inner.kept.insert(key.to_owned(), value);
    }
    StatusCode::OK.into_response()
}
