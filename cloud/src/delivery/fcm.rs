//! App push through FCM HTTP v1 (`POST {base}/v1/projects/{project}/messages:send`). The bearer
//! comes from the service account: an RS256-signed JWT grant exchanged at the token endpoint,
//! cached until shortly before it expires. Each message carries the delivery id in `data` and
//! as the collapse key (Android `collapse_key`, APNs `apns-collapse-id`), so the app drops a
//! repeat, and a TTL up to the delivery's expiry. `UNREGISTERED` (404) means the install's
//! token is dead: the caller forgets it.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use serde::Deserialize;
use serde_json::{json, Value};

use super::retry::Answer;
use super::{answer_of, Delivery};

/// The OAuth2 scope for sending FCM messages.
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// A cached bearer is renewed this long before it expires.
const RENEW_BEFORE: Duration = Duration::from_secs(60);

/// The fields of a Firebase service-account key file that matter here.
#[derive(Debug, Clone, Deserialize)]
pub struct ServiceAccount {
    pub project_id: String,
    pub client_email: String,
    /// PEM, PKCS#8 RSA.
    pub private_key: String,
    pub token_uri: String,
}

/// How one push attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushAnswer {
    pub answer: Answer,
    /// FCM says the token is no longer registered.
    pub unregistered: bool,
}

pub struct FcmSender {
    client: reqwest::Client,
    send_url: String,
    token_url: String,
    client_email: String,
    key: RsaKeyPair,
    rng: ring::rand::SystemRandom,
    bearer: tokio::sync::Mutex<Option<(String, Instant)>>,
}

/// FCM's error body: `{"error": {"status": …, "message": …, "details": [{"errorCode": …}]}}`.
fn fcm_message(v: &Value) -> Option<String> {
    let e = v.get("error")?;
    let code = e
        .get("details")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find_map(|d| d.get("errorCode").and_then(Value::as_str));
    Some(format!(
        "{}{}: {}",
        e.get("status").and_then(Value::as_str).unwrap_or("ERROR"),
        code.map(|c| format!("/{c}")).unwrap_or_default(),
        e.get("message").and_then(Value::as_str).unwrap_or("")
    ))
}

/// The message FCM is asked to send.
pub fn body(d: &Delivery, token: &str, ttl: Duration) -> Value {
    let ttl_s = ttl.as_secs().max(1);
    let expiry = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        + ttl_s;
    let mut message = json!({"message": {
        "token": token,
        "notification": {"body": d.text},
        "data": {"delivery_id": d.id, "campaign": d.campaign, "coupon": d.coupon},
        "android": {"collapse_key": d.id, "ttl": format!("{ttl_s}s")},
        "apns": {"headers": {"apns-collapse-id": d.id, "apns-expiration": expiry.to_string()}}
    }});
    // A test send says so to the app (FCM's data values are strings).
    if d.test {
        message["message"]["data"]["test"] = json!("true");
    }
    message
}

impl FcmSender {
    /// Reads the service-account key file; `token_url` overrides its `token_uri`.
    pub fn from_file(
        client: reqwest::Client,
        base: &str,
        key_file: &Path,
        token_url: Option<&str>,
    ) -> anyhow::Result<FcmSender> {
        let text = std::fs::read_to_string(key_file)
            .with_context(|| format!("app.fcm_service_account_file {}", key_file.display()))?;
        let account: ServiceAccount = serde_json::from_str(&text).with_context(|| {
            format!(
                "app.fcm_service_account_file {}: not a service-account key",
                key_file.display()
            )
        })?;
        FcmSender::new(client, base, &account, token_url)
    }

    pub fn new(
        client: reqwest::Client,
        base: &str,
        account: &ServiceAccount,
        token_url: Option<&str>,
    ) -> anyhow::Result<FcmSender> {
        let der = match rustls_pemfile::private_key(&mut account.private_key.as_bytes()) {
            Ok(Some(rustls::pki_types::PrivateKeyDer::Pkcs8(k))) => k.secret_pkcs8_der().to_vec(),
            _ => anyhow::bail!("private_key: not a PEM PKCS#8 key"),
        };
        let key = RsaKeyPair::from_pkcs8(&der)
            .map_err(|e| anyhow::anyhow!("private_key: not an RSA key ring accepts: {e}"))?;
        Ok(FcmSender {
            client,
            send_url: format!(
                "{}/v1/projects/{}/messages:send",
                base.trim_end_matches('/'),
                account.project_id
            ),
            token_url: token_url.unwrap_or(&account.token_uri).to_owned(),
            client_email: account.client_email.clone(),
            key,
            rng: ring::rand::SystemRandom::new(),
            bearer: tokio::sync::Mutex::new(None),
        })
    }

    /// The signed JWT grant, issued at `now_s` (Unix seconds of real time: Google checks it
    /// against its own clock) for an hour.
    pub fn grant(&self, now_s: u64) -> anyhow::Result<String> {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let claims = URL_SAFE_NO_PAD.encode(
            json!({
                "iss": self.client_email,
                "scope": SCOPE,
                "aud": self.token_url,
                "iat": now_s,
                "exp": now_s + 3600,
            })
            .to_string(),
        );
        let signed = format!("{header}.{claims}");
        let mut sig = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(&RSA_PKCS1_SHA256, &self.rng, signed.as_bytes(), &mut sig)
            .map_err(|_| anyhow::anyhow!("signing the JWT grant failed"))?;
        Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }

    /// A valid bearer token: the cached one, or a new one from the token endpoint.
    async fn bearer(&self) -> Result<String, Answer> {
        let mut cached = self.bearer.lock().await;
        if let Some((token, until)) = cached.as_ref() {
            if Instant::now() < *until {
                return Ok(token.clone());
            }
        }
        let now_s = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let grant = self
            .grant(now_s)
            .map_err(|e| Answer::NoAnswer(e.to_string()))?;
        let response = self
            .client
            .post(&self.token_url)
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", grant.as_str()),
            ])
            .send()
            .await
            .map_err(|e| Answer::NoAnswer(format!("token endpoint: {e}")))?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .map_err(|e| Answer::NoAnswer(format!("token endpoint: {e}")))?;
        let (Some(token), true) = (
            body.get("access_token").and_then(Value::as_str),
            status.is_success(),
        ) else {
            // A refused grant is a configuration problem that an operator fixes: keep retrying.
            return Err(Answer::NoAnswer(format!(
                "token endpoint answered {status}: {body}"
            )));
        };
        // Google issues hour-long bearers; a longer claim is not believed.
        let lifetime = Duration::from_secs(
            body.get("expires_in")
                .and_then(Value::as_u64)
                .unwrap_or(3600)
                .min(3600),
        );
        *cached = Some((
            token.to_owned(),
            Instant::now() + lifetime.saturating_sub(RENEW_BEFORE),
        ));
        Ok(token.to_owned())
    }

    /// One attempt to push `d` to the device `token`, to live `ttl` at most.
    pub async fn send(&self, d: &Delivery, token: &str, ttl: Duration) -> PushAnswer {
        let bearer = match self.bearer().await {
            Ok(b) => b,
            Err(answer) => {
                return PushAnswer {
                    answer,
                    unregistered: false,
                }
            }
        };
        let result = self
            .client
            .post(&self.send_url)
            .bearer_auth(bearer)
            .json(&body(d, token, ttl))
            .send()
            .await;
        let answer = answer_of(result, fcm_message).await;
        match &answer {
            Answer::Status { code: 401, .. } => {
                // The bearer was refused (revoked, expired early): fetch a new one next time.
                *self.bearer.lock().await = None;
                PushAnswer {
                    answer: Answer::NoAnswer("FCM refused the bearer token".into()),
                    unregistered: false,
                }
            }
            Answer::Status { code, message, .. } => PushAnswer {
                // Only FCM's own verdict: a 404 from a wrong base URL must not erase tokens.
                unregistered: *code == 404 && message.contains("UNREGISTERED"),
                answer,
            },
            Answer::NoAnswer(_) => PushAnswer {
                answer,
                unregistered: false,
            },
        }
    }
}
