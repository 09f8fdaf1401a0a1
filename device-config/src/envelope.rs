//! The signed envelope every MQTT payload travels in: `{"v":1,"sig":S,"msg":{…}}`, where S is
//! the unpadded base64url HMAC-SHA256, keyed with the gateway's signing key, over the topic,
//! one `\n` byte and the exact bytes of `msg` as they stand in the payload.
//!
//! The signature is checked before `msg` is parsed, so a forged payload costs a receiver one
//! HMAC and no parsing. This module knows nothing of what `msg` means; see `payload`.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::Sha256;

/// The envelope version this build writes.
pub const ENVELOPE_VERSION: u64 = 1;
/// The envelope versions this build reads (what a gateway lists as `accepts_v`).
pub const ACCEPTED_VERSIONS: [u64; 1] = [1];
/// The largest MQTT packet any omo binary or broker accepts.
pub const MAX_PACKET_BYTES: usize = 64 * 1024;

type HmacSha256 = Hmac<Sha256>;

/// A gateway's 32-byte signing key. Its `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey([u8; 32]);

/// Why a text is not a signing key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningKeyError {
    #[error("signing key must be 64 hex digits (32 bytes), found {0} characters")]
    Length(usize),
    #[error("signing key has a non-hex character at position {0}")]
    NotHex(usize),
}

impl SigningKey {
    pub fn from_bytes(bytes: [u8; 32]) -> SigningKey {
        SigningKey(bytes)
    }

    /// 32 bytes from the operating system's secure random source.
    pub fn generate() -> SigningKey {
        let mut bytes = [0u8; 32];
        rand::fill(&mut bytes);
        SigningKey(bytes)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(text: &str) -> Result<SigningKey, SigningKeyError> {
        let text = text.trim();
        if let Some(pos) = text.chars().position(|c| !c.is_ascii_hexdigit()) {
            return Err(SigningKeyError::NotHex(pos));
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes)
            .map_err(|_| SigningKeyError::Length(text.chars().count()))?;
        Ok(SigningKey(bytes))
    }

    /// The key as 64 lower-case hex digits (for config and registry files).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    fn mac(&self, topic: &str, msg: &[u8]) -> HmacSha256 {
        let mut mac =
            HmacSha256::new_from_slice(&self.0).expect("HMAC-SHA256 takes a key of any length");
        mac.update(topic.as_bytes());
        mac.update(b"\n");
        mac.update(msg);
        mac
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(…)")
    }
}

/// Why a payload was refused or could not be written.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("payload is {size} bytes; the limit is {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("payload is not a JSON envelope: {0}")]
    Malformed(serde_json::Error),
    #[error("envelope has no {0:?} field")]
    MissingField(&'static str),
    #[error("envelope version {0} is not one this build reads (it reads {ACCEPTED_VERSIONS:?})")]
    UnsupportedVersion(u64),
    #[error("envelope signature is not 43 characters of unpadded base64url")]
    SignatureEncoding,
    #[error("envelope signature does not match the topic and message")]
    BadSignature,
    #[error("message field {path}: {source}")]
    Message {
        path: String,
        source: serde_json::Error,
    },
    #[error("message could not be encoded: {0}")]
    Encode(serde_json::Error),
}

#[derive(Deserialize)]
struct Wire<'a> {
    v: Option<u64>,
    #[serde(borrow)]
    sig: Option<&'a str>,
    #[serde(borrow)]
    msg: Option<&'a RawValue>,
}

/// Encodes `msg` and seals it for `topic`.
pub fn seal<T: Serialize>(
    topic: &str,
    key: &SigningKey,
    msg: &T,
) -> Result<Vec<u8>, EnvelopeError> {
    let msg = serde_json::to_vec(msg).map_err(EnvelopeError::Encode)?;
    Ok(seal_raw(topic, key, &msg))
}

/// Seals already-encoded JSON `msg` bytes for `topic`.
pub fn seal_raw(topic: &str, key: &SigningKey, msg: &[u8]) -> Vec<u8> {
    let sig = URL_SAFE_NO_PAD.encode(key.mac(topic, msg).finalize().into_bytes());
    let mut out = Vec::with_capacity(msg.len() + sig.len() + 24);
    out.extend_from_slice(b"{\"v\":");
    out.extend_from_slice(ENVELOPE_VERSION.to_string().as_bytes());
    out.extend_from_slice(b",\"sig\":\"");
    out.extend_from_slice(sig.as_bytes());
    out.extend_from_slice(b"\",\"msg\":");
    out.extend_from_slice(msg);
    out.push(b'}');
    out
}

/// The bytes a sealed envelope adds around its message.
pub fn sealed_overhead() -> usize {
    seal_raw("", &SigningKey([0; 32]), b"").len()
}

/// Checks the envelope and its signature and returns the raw `msg` JSON, unparsed.
pub fn open_raw<'a>(
    topic: &str,
    key: &SigningKey,
    payload: &'a [u8],
) -> Result<&'a RawValue, EnvelopeError> {
    if payload.len() > MAX_PACKET_BYTES {
        return Err(EnvelopeError::TooLarge {
            size: payload.len(),
            limit: MAX_PACKET_BYTES,
        });
    }
    let wire: Wire<'a> = serde_json::from_slice(payload).map_err(EnvelopeError::Malformed)?;
    let v = wire.v.ok_or(EnvelopeError::MissingField("v"))?;
    if !ACCEPTED_VERSIONS.contains(&v) {
        return Err(EnvelopeError::UnsupportedVersion(v));
    }
    let sig = wire.sig.ok_or(EnvelopeError::MissingField("sig"))?;
    let msg = wire.msg.ok_or(EnvelopeError::MissingField("msg"))?;
    let mut sig_bytes = [0u8; 32];
    match URL_SAFE_NO_PAD.decode_slice(sig, &mut sig_bytes) {
        Ok(32) => {}
        _ => return Err(EnvelopeError::SignatureEncoding),
    }
    key.mac(topic, msg.get().as_bytes())
        .verify_slice(&sig_bytes)
        .map_err(|_| EnvelopeError::BadSignature)?;
    Ok(msg)
}

/// Checks the envelope and its signature, then parses `msg` as `T`.
pub fn open<T: DeserializeOwned>(
    topic: &str,
    key: &SigningKey,
    payload: &[u8],
) -> Result<T, EnvelopeError> {
    let msg = open_raw(topic, key, payload)?;
    parse_message(msg.get())
}

/// Parses a message, naming the field at fault on error (`events[3].seq`).
pub fn parse_message<T: DeserializeOwned>(json: &str) -> Result<T, EnvelopeError> {
    let de = &mut serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        EnvelopeError::Message {
            path,
            source: e.into_inner(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const TOPIC: &str = "omo/v1/stores/s1/gateways/g1/config/ack";

    fn key() -> SigningKey {
        SigningKey::from_bytes([7; 32])
    }

    #[test]
    fn seals_and_opens() {
        let msg = json!({"ok": true, "version": 3});
        let payload = seal(TOPIC, &key(), &msg).unwrap();
        let text = std::str::from_utf8(&payload).unwrap();
        assert!(text.starts_with("{\"v\":1,\"sig\":\""), "{text}");
        assert!(
            text.ends_with(",\"msg\":{\"ok\":true,\"version\":3}}"),
            "{text}"
        );
        let back: serde_json::Value = open(TOPIC, &key(), &payload).unwrap();
        assert_eq!(back, msg);
        assert_eq!(
            payload.len(),
            sealed_overhead() + br#"{"ok":true,"version":3}"#.len()
        );
    }

    #[test]
    fn refuses_wrong_topic_key_and_tampering() {
        let payload = seal(TOPIC, &key(), &json!({"ok": true, "version": 3})).unwrap();
        let other_topic = "omo/v1/stores/s1/gateways/g2/config/ack";
        assert!(matches!(
            open_raw(other_topic, &key(), &payload),
            Err(EnvelopeError::BadSignature)
        ));
        assert!(matches!(
            open_raw(TOPIC, &SigningKey::from_bytes([8; 32]), &payload),
            Err(EnvelopeError::BadSignature)
        ));
        let text = String::from_utf8(payload.clone()).unwrap();
        // Re-ordered keys mean the same JSON but other bytes: refused.
        let reordered = text.replace("{\"ok\":true,\"version\":3}", "{\"version\":3,\"ok\":true}");
        assert!(matches!(
            open_raw(TOPIC, &key(), reordered.as_bytes()),
            Err(EnvelopeError::BadSignature)
        ));
        let forged = text.replace("\"version\":3", "\"version\":4");
        assert!(matches!(
            open_raw(TOPIC, &key(), forged.as_bytes()),
            Err(EnvelopeError::BadSignature)
        ));
        let truncated = &payload[..payload.len() - 1];
        assert!(matches!(
            open_raw(TOPIC, &key(), truncated),
            Err(EnvelopeError::Malformed(_))
        ));
    }

    #[test]
    fn refuses_missing_parts_and_unknown_versions() {
        type Check = fn(&EnvelopeError) -> bool;
        let cases: [(&str, Check); 5] = [
            (r#"{"sig":"x","msg":{}}"#, |e| {
                matches!(e, EnvelopeError::MissingField("v"))
            }),
            (r#"{"v":1,"msg":{}}"#, |e| {
                matches!(e, EnvelopeError::MissingField("sig"))
            }),
            (r#"{"v":1,"sig":"x"}"#, |e| {
                matches!(e, EnvelopeError::MissingField("msg"))
            }),
            (r#"{"v":2,"sig":"x","msg":{}}"#, |e| {
                matches!(e, EnvelopeError::UnsupportedVersion(2))
            }),
            (r#"{"v":1,"sig":"not base64!","msg":{}}"#, |e| {
                matches!(e, EnvelopeError::SignatureEncoding)
            }),
        ];
        for (payload, check) in cases {
            let err = open_raw(TOPIC, &key(), payload.as_bytes()).unwrap_err();
            assert!(check(&err), "{payload}: {err:?}");
        }
    }

    #[test]
    fn ignores_unknown_envelope_fields() {
        let payload = seal(TOPIC, &key(), &json!({"a": 1})).unwrap();
        let mut text = String::from_utf8(payload).unwrap();
        text.insert_str(1, "\"future\":[1,2],");
        assert!(open_raw(TOPIC, &key(), text.as_bytes()).is_ok());
    }

    #[test]
    fn message_errors_name_the_field() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Inner {
            seq: u64,
        }
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Outer {
            events: Vec<Inner>,
        }
        let payload = seal(TOPIC, &key(), &json!({"events": [{"seq": 1}, {"sek": 2}]})).unwrap();
        let err = open::<Outer>(TOPIC, &key(), &payload).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("message field events[1]: missing field `seq`"),
            "{err}"
        );
    }

    #[test]
    fn signing_key_text() {
        let k = SigningKey::generate();
        assert_eq!(SigningKey::from_hex(&k.to_hex()).unwrap(), k);
        assert_ne!(SigningKey::generate(), k);
        assert_eq!(SigningKey::from_hex("abc"), Err(SigningKeyError::Length(3)));
        assert_eq!(
            SigningKey::from_hex(&"g".repeat(64)),
            Err(SigningKeyError::NotHex(0))
        );
        assert_eq!(format!("{k:?}"), "SigningKey(…)");
    }

    proptest! {
        #[test]
        fn never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = open::<serde_json::Value>(TOPIC, &key(), &bytes);
        }

        #[test]
        fn any_flipped_byte_is_refused(pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let payload = seal(TOPIC, &key(), &json!({"epoch": "0badf00d", "seqs": [[1, 9]]})).unwrap();
            let mut bad = payload.clone();
            let i = pos.index(bad.len());
            bad[i] ^= 1 << bit;
            // A sealed payload has no byte that is neither signed nor checked.
            let opened = open_raw(TOPIC, &key(), &bad).map(|m| m.get().to_owned());
            prop_assert!(opened.is_err(), "flip at {} accepted", i);
        }
    }
}
