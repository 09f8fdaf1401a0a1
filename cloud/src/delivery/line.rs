//! LINE Messaging API push (`POST {base}/v2/bot/message/push`): the channel access token as
//! bearer, the text (and a flex message when the template has one), and the delivery's
//! `X-Line-Retry-Key` on every attempt, so LINE accepts one request per key (a repeat gets 409).

use serde_json::{json, Value};

use super::retry::Answer;
use super::{answer_of, Delivery};

/// LINE's limit on a flex message's `altText`, characters.
const ALT_TEXT_MAX: usize = 400;

pub struct LineSender {
    client: reqwest::Client,
    url: String,
    token: String,
}

/// LINE's error body: `{"message": …, "details": [{"message": …, "property": …}]}`.
fn line_message(v: &Value) -> Option<String> {
    let mut m = v.get("message")?.as_str()?.to_owned();
    for d in v
        .get("details")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let (Some(p), Some(dm)) = (
            d.get("property").and_then(Value::as_str),
            d.get("message").and_then(Value::as_str),
        ) {
            m.push_str(&format!(" ({p}: {dm})"));
        }
    }
    Some(m)
}

/// The push request's body.
pub fn body(d: &Delivery, to: &str) -> Value {
    let mut messages = vec![json!({"type": "text", "text": d.text})];
    if let Some(flex) = &d.flex {
        let alt: String = d.text.chars().take(ALT_TEXT_MAX).collect();
        messages.push(json!({"type": "flex", "altText": alt, "contents": flex}));
    }
    json!({"to": to, "messages": messages})
}

impl LineSender {
    pub fn new(client: reqwest::Client, base: &str, token: &str) -> LineSender {
        LineSender {
            client,
            url: format!("{}/v2/bot/message/push", base.trim_end_matches('/')),
            token: token.to_owned(),
        }
    }

    /// One attempt to push `d` to the LINE user `to`.
    pub async fn send(&self, d: &Delivery, to: &str) -> Answer {
        let result = self
            .client
            .post(&self.url)
            .bearer_auth(&self.token)
            .header("X-Line-Retry-Key", &d.retry_key)
            .json(&body(d, to))
            .send()
            .await;
        answer_of(result, line_message).await
    }
}
