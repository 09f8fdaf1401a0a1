//! Secrets the cloud hands out or checks: tokens are random, stored only as SHA-256, and
//! compared in constant time; HMAC signatures (LINE webhooks) are checked in constant time.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The server secret that keys derived ids (visit ids, later trigger and delivery ids): made
/// once, kept in the store (so a backup and restore keep every id stable), never shown.
pub fn server_secret(
    store: &dyn crate::store::Store,
) -> Result<[u8; 32], crate::store::StoreError> {
    use crate::store::{Commit, Space, StoreError};
    const KEY: &[u8] = b"server-secret";
    let read = |v: Vec<u8>| {
        <[u8; 32]>::try_from(v.as_slice())
            .map_err(|_| StoreError::Backend("meta server-secret is not 32 bytes".into()))
    };
    if let Some(v) = store.get(Space::Meta, KEY)? {
        return read(v);
    }
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let mut c = Commit::new();
    c.expect(Space::Meta, KEY.to_vec(), None);
    c.put(Space::Meta, KEY.to_vec(), secret.to_vec());
    match store.commit(c) {
        Ok(()) => {
            store.flush()?;
            Ok(secret)
        }
        // Another instance made it first: use theirs.
        Err(StoreError::Conflict { .. }) => read(store.get(Space::Meta, KEY)?.unwrap_or_default()),
        Err(e) => Err(e),
    }
}

/// HMAC-SHA256 under `secret` of `parts`, each ended by a zero byte (derived ids and keys:
/// the same parts always give the same bytes, and no one without the secret can).
pub fn keyed(secret: &[u8; 32], parts: &[&str]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    for p in parts {
        mac.update(p.as_bytes());
        mac.update(&[0]);
    }
    mac.finalize().into_bytes().into()
}

/// Hex HMAC-SHA256 of `message` under `key` (the member-link proof a brand's backend gives
/// its app: `member_sig` for `member_id`).
pub fn hmac_hex(key: &[u8], message: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `sig_hex` is [`hmac_hex`] of `message` under `key`, in constant time.
pub fn hmac_hex_valid(key: &[u8], message: &[u8], sig_hex: &str) -> bool {
    let Ok(sig) = hex::decode(sig_hex) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac.verify_slice(&sig).is_ok()
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A new random token: 32 bytes, URL-safe base64 without padding (43 characters).
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether `token` hashes to `sha256_hex`, compared in constant time.
pub fn token_matches(token: &str, sha256_hex_expected: &str) -> bool {
    let got = sha256_hex(token.as_bytes());
    got.as_bytes().ct_eq(sha256_hex_expected.as_bytes()).into()
}

/// Whether `signature_b64` is the base64 HMAC-SHA256 of `body` under `secret` (LINE's
/// `X-Line-Signature`); constant time.
pub fn line_signature_valid(secret: &[u8], body: &[u8], signature_b64: &str) -> bool {
    let Ok(sig) = STANDARD.decode(signature_b64.trim()) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// The LINE signature of `body` (what the LINE platform, or a test, sends).
pub fn line_signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_against_their_hash() {
        let t = new_token();
        assert_eq!(t.len(), 43);
        let h = sha256_hex(t.as_bytes());
        assert!(token_matches(&t, &h));
        assert!(!token_matches("other", &h));
        assert_ne!(new_token(), t);
    }

    #[test]
    fn line_signatures() {
        let body = br#"{"events":[]}"#;
        let sig = line_signature(b"secret", body);
        assert!(line_signature_valid(b"secret", body, &sig));
        assert!(!line_signature_valid(b"other", body, &sig));
        assert!(!line_signature_valid(b"secret", b"{}", &sig));
        assert!(!line_signature_valid(b"secret", body, "not base64!"));
    }
}
