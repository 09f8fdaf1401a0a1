//! Secrets the cloud hands out or checks: tokens are random, stored only as SHA-256, and
//! compared in constant time; HMAC signatures (LINE webhooks) are checked in constant time.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

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
