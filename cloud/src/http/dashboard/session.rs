//! Dashboard sessions: the login form exchanges an admin token for a signed cookie, so the
//! browser never keeps the token itself.
//!
//! The cookie `omo_session` is `{role}.{expires_unix_s}.{token}.{mac}`: `token` is the first
//! 16 hex digits of the configured SHA-256 of the admin token it was made from (which token,
//! not the token), `mac` the HMAC-SHA256 of the rest under the server secret, base64url. It
//! holds while it is unexpired (wall time, not the service's clock, which a demo speeds up)
//! and its token is still configured with the same role, so removing a token from
//! `cloud.toml` ends its sessions. `HttpOnly; SameSite=Strict; Path=/`.
//!
//! Every unsafe request made with the cookie carries the session's CSRF token, an HMAC of the
//! cookie under the server secret: as the `csrf` form field or the `X-CSRF-Token` header.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::{AdminToken, Role};

pub const COOKIE: &str = "omo_session";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A valid session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub role: Role,
    pub expires_s: i64,
    /// The cookie's value (the CSRF token is derived from it).
    pub value: String,
}

/// A role as cookies and pages name it.
pub fn role_name(r: Role) -> &'static str {
    match r {
        Role::Operator => "operator",
        Role::Marketer => "marketer",
        Role::Analyst => "analyst",
    }
}

fn mac(secret: &[u8; 32], domain: &str, text: &str) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes 32-byte keys");
    m.update(domain.as_bytes());
    m.update(&[0]);
    m.update(text.as_bytes());
    m
}

fn fingerprint(t: &AdminToken) -> &str {
    t.sha256.get(..16).unwrap_or(&t.sha256)
}

/// The configured token `token` is, if any (every entry is compared, in constant time).
pub fn token_entry<'a>(tokens: &'a [AdminToken], token: &str) -> Option<&'a AdminToken> {
    let mut found = None;
    for t in tokens {
        if crate::secrets::token_matches(token, &t.sha256) && found.is_none() {
            found = Some(t);
        }
    }
    found
}

/// A new session's cookie value for the configured token `t`.
pub fn issue(secret: &[u8; 32], t: &AdminToken, now_s: i64, hours: u32) -> String {
    let text = format!(
        "{}.{}.{}",
        role_name(t.role),
        now_s + i64::from(hours) * 3600,
        fingerprint(t)
    );
    let tag = URL_SAFE_NO_PAD.encode(mac(secret, "omo-session", &text).finalize().into_bytes());
    format!("{text}.{tag}")
}

/// The session a cookie value stands for, if it is genuine, unexpired and its token is still
/// configured with the same role.
pub fn verify(
    secret: &[u8; 32],
    tokens: &[AdminToken],
    value: &str,
    now_s: i64,
) -> Option<Session> {
    let (text, tag) = value.rsplit_once('.')?;
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    mac(secret, "omo-session", text).verify_slice(&tag).ok()?;
    let mut parts = text.split('.');
    let (role, expires, fp) = (parts.next()?, parts.next()?, parts.next()?);
    let expires_s: i64 = expires.parse().ok()?;
    if parts.next().is_some() || expires_s <= now_s {
        return None;
    }
    let t = tokens
        .iter()
        .find(|t| fingerprint(t) == fp && role_name(t.role) == role)?;
    Some(Session {
        role: t.role,
        expires_s,
        value: value.to_owned(),
    })
}

/// The CSRF token of a session.
pub fn csrf(secret: &[u8; 32], session: &Session) -> String {
    hex::encode(
        &mac(secret, "omo-csrf", &session.value)
            .finalize()
            .into_bytes()[..16],
    )
}

/// Whether `given` is the session's CSRF token (constant time).
pub fn csrf_ok(secret: &[u8; 32], session: &Session, given: &str) -> bool {
    use subtle::ConstantTimeEq;
    csrf(secret, session)
        .as_bytes()
        .ct_eq(given.as_bytes())
        .into()
}

/// The session cookie of a request's `Cookie` headers, if any.
pub fn cookie_value(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// `Set-Cookie` for a new session.
pub fn set_cookie(value: &str, hours: u32) -> String {
    format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        u64::from(hours) * 3600
    )
}

/// `Set-Cookie` that ends the session in the browser.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// Wall-clock seconds.
pub fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Vec<AdminToken> {
        vec![
            AdminToken {
                name: "ops".into(),
                role: Role::Operator,
                sha256: crate::secrets::sha256_hex(b"op-token"),
            },
            AdminToken {
                name: "bi".into(),
                role: Role::Analyst,
                sha256: crate::secrets::sha256_hex(b"an-token"),
            },
        ]
    }

    #[test]
    fn a_session_holds_until_it_expires_or_its_token_goes() {
        let secret = [7u8; 32];
        let ts = tokens();
        let t = token_entry(&ts, "an-token").unwrap();
        let v = issue(&secret, t, 1_000, 12);
        let s = verify(&secret, &ts, &v, 1_000).unwrap();
        assert_eq!(s.role, Role::Analyst);
        assert!(
            verify(&secret, &ts, &v, 1_000 + 12 * 3600).is_none(),
            "expired"
        );
        assert!(
            verify(&[8u8; 32], &ts, &v, 1_000).is_none(),
            "another secret"
        );
        assert!(
            verify(&secret, &ts[..1], &v, 1_000).is_none(),
            "token removed"
        );
        assert!(token_entry(&ts, "wrong").is_none());
    }

    #[test]
    fn a_changed_cookie_is_refused() {
        let secret = [7u8; 32];
        let ts = tokens();
        let v = issue(&secret, &ts[1], 1_000, 12);
        // Claiming the operator role, or a later expiry, breaks the MAC.
        let forged = v.replacen("analyst", "operator", 1);
        assert!(verify(&secret, &ts, &forged, 1_000).is_none());
        let (text, tag) = v.rsplit_once('.').unwrap();
        let later = text.replacen(".4", ".9", 1);
        assert!(verify(&secret, &ts, &format!("{later}.{tag}"), 1_000).is_none());
        for bad in ["", ".", "a.b.c.d", "operator.1.x.y.z", &format!("{v}x")] {
            assert!(verify(&secret, &ts, bad, 1_000).is_none(), "{bad}");
        }
    }

    #[test]
    fn csrf_tokens_are_per_session() {
        let secret = [7u8; 32];
        let ts = tokens();
        let a = verify(&secret, &ts, &issue(&secret, &ts[0], 1_000, 12), 1_000).unwrap();
        let b = verify(&secret, &ts, &issue(&secret, &ts[0], 1_001, 12), 1_000).unwrap();
        assert!(csrf_ok(&secret, &a, &csrf(&secret, &a)));
        assert!(!csrf_ok(&secret, &a, &csrf(&secret, &b)));
        assert!(!csrf_ok(&secret, &a, ""));
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut h = axum::http::HeaderMap::new();
        h.append("cookie", "a=1; omo_session=x.y.z; b=2".parse().unwrap());
        assert_eq!(cookie_value(&h), Some("x.y.z"));
        let mut h = axum::http::HeaderMap::new();
        h.append("cookie", "omo_sessionx=1".parse().unwrap());
        assert_eq!(cookie_value(&h), None);
    }
}
