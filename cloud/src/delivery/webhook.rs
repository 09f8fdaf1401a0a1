//! The generic webhook channel: the offer POSTed as JSON to the brand's endpoint, with
//! `Idempotency-Key` = the delivery id (the same on every attempt) and
//! `X-Omo-Signature: sha256=<hex HMAC-SHA256(secret, body)>` so the receiver can check it.

use serde_json::{json, Value};

use super::retry::Answer;
use super::{answer_of, Delivery};

pub const SIGNATURE_HEADER: &str = "X-Omo-Signature";

pub struct WebhookSender {
    client: reqwest::Client,
    url: String,
    secret: String,
}

fn message(v: &Value) -> Option<String> {
    v.get("error")
        .and_then(|e| e.get("message").or(Some(e)))
        .or_else(|| v.get("message"))
        .map(|m| {
            m.as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| m.to_string())
        })
}

/// The signature header's value for `body`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    format!(
        "sha256={}",
        crate::secrets::hmac_hex(secret.as_bytes(), body)
    )
}

impl WebhookSender {
    pub fn new(client: reqwest::Client, url: &str, secret: &str) -> WebhookSender {
        WebhookSender {
            client,
            url: url.to_owned(),
            secret: secret.to_owned(),
        }
    }

    /// One attempt to post `d` for the brand's member `member_id`.
    pub async fn send(&self, d: &Delivery, member_id: &str, expires: &str) -> Answer {
        let mut body = json!({
            "delivery_id": d.id,
            "campaign": d.campaign,
            "variant": d.variant,
            "store": d.store,
            "member_id": member_id,
            "text": d.text,
            "coupon": d.coupon,
            "expires": expires,
        });
        // A test send says so: the brand's system must not count it or honour its coupon.
        if d.test {
            body["test"] = json!(true);
        }
        let body = body.to_string();
        let result = self
            .client
            .post(&self.url)
            .header("Idempotency-Key", &d.id)
            .header(SIGNATURE_HEADER, signature(&self.secret, body.as_bytes()))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        answer_of(result, message).await
    }
}
