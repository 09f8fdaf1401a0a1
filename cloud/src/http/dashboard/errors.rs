//! Errors as pages: a page that fails (an unknown campaign, store or gateway, a role that may
//! not see it, a fault) answers an HTML page in the dashboard's frame, in the reader's
//! language, with the API's error behind a fold for developers; a path nobody serves answers
//! the same page to a browser and the API's JSON error to anyone else. And the favicon.

use axum::body::Body;
use axum::extract::Request;

use super::*;

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    t: Words,
    nav: Nav,
    status: u16,
    headline: String,
    advice: String,
    detail: String,
}

/// The error page for `status` with the API's `detail`, framed for the request's reader.
pub fn error_page(
    state: &AppState,
    headers: &HeaderMap,
    path: &str,
    status: StatusCode,
    detail: String,
) -> Response {
    let t = words_of(state, headers);
    let key = match status.as_u16() {
        404 => "not_found",
        403 => "forbidden",
        400..=499 => "bad_request",
        _ => "fault",
    };
    let headline = t.s(&format!("error.{key}"));
    let nav = match session_of(state, headers) {
        Some(session) => Nav::new(
            state,
            &Viewer {
                session,
                t,
                path: path.to_owned(),
            },
            Section::None,
            headline.clone(),
        ),
        None => Nav::frame(
            &t,
            headline.clone(),
            String::new(),
            String::new(),
            Vec::new(),
            path,
        ),
    };
    let mut r = html(&ErrorPage {
        advice: t.s(&format!("error.{key}.advice")),
        headline,
        status: status.as_u16(),
        detail,
        nav,
        t,
    });
    *r.status_mut() = status;
    r
}

/// A layer over the pages: an error answered as the API's JSON becomes the error page.
pub async fn in_layout(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let headers = request.headers().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status();
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || !json {
        return response;
    }
    let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let detail = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_default();
    error_page(&state, &headers, &path, status, detail)
}

/// Whether a request asks for a page (a browser's navigation), not a document.
fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
}

/// A path nobody serves: the error page for a browser outside the API, else the API's 404.
pub async fn fallback(State(state): State<AppState>, request: Request<Body>) -> Response {
    let path = request.uri().path().to_owned();
    if wants_html(request.headers()) && !path.starts_with("/v1/") {
        return error_page(
            &state,
            request.headers(),
            &path,
            StatusCode::NOT_FOUND,
            format!("{path}: no such page"),
        );
    }
    ApiError::not_found("this path").into_response()
}

/// `GET /favicon.ico`: omo's mark (asked for by every browser, with or without a session).
pub async fn favicon() -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/x-icon"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        &include_bytes!("../../../assets/favicon.ico")[..],
    )
        .into_response()
}
