//! Security headers on every answer: no content sniffing, no referrer sent to other sites (a
//! tracked link's token stays here), and for pages a content security policy — scripts, styles,
//! fetches and fonts from this cloud only, no inline script, images from here and the
//! basemap's tile server, never framed by another site.

use axum::extract::Request;
use axum::http::header::{
    CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// The content security policy of the dashboard's pages, with the basemap's tile server
/// (`[dashboard] tile_url`) allowed to serve images.
pub fn content_security_policy(tile_url: Option<&str>) -> String {
    let login_style = base64::engine::general_purpose::STANDARD
        .encode(Sha256::digest(crate::http::dashboard::LOGIN_CSS.as_bytes()));
    let tiles = tile_url.map(tile_source).unwrap_or_default();
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self' 'sha256-{login_style}'; \
         img-src 'self' data:{tiles}; connect-src 'self'; font-src 'self'; object-src 'none'; \
         base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
}

/// The CSP source of a tile URL's server: its scheme and host, a `{s}` subdomain as `*`
/// (`https://{s}.tile.example.com/{z}/{x}/{y}.png` → `https://*.tile.example.com`); any other
/// placeholder in the host allows any https server.
fn tile_source(url: &str) -> String {
    let Some(rest) = url.strip_prefix("https://") else {
        return String::new();
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = host.replace("{s}", "*");
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '*' | ':'))
    {
        return " https:".into();
    }
    format!(" https://{host}")
}

/// Adds the headers to `request`'s answer (the policy to HTML pages).
pub async fn headers(csp: HeaderValue, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    let page = h
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/html"));
    if page {
        h.insert(CONTENT_SECURITY_POLICY, csp);
        h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tile_server_is_allowed_and_nothing_inline_but_the_login_style() {
        assert_eq!(
            tile_source("https://{s}.tile.example.com/{z}/{x}/{y}.png"),
            " https://*.tile.example.com"
        );
        assert_eq!(
            tile_source("https://tiles.example.jp:8443/a/{z}/{x}/{y}.png?key=k"),
            " https://tiles.example.jp:8443"
        );
        assert_eq!(
            tile_source("https://{r}x.example.com/{z}/{x}/{y}"),
            " https:"
        );
        let csp = content_security_policy(None);
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert!(csp.contains("img-src 'self' data:;"), "{csp}");
        assert!(HeaderValue::from_str(&csp).is_ok());
        let with = content_security_policy(Some("https://{s}.tile.example.com/{z}/{x}/{y}.png"));
        assert!(
            with.contains("img-src 'self' data: https://*.tile.example.com;"),
            "{with}"
        );
    }
}
