//! `GET /r/{token}`: an offer's tracked link. The token is unique per delivery and
//! unguessable (128 keyed bits); the first visit counts a click for the delivery's campaign
//! and variant (`clicked` in the funnel, between delivered and redeemed), every visit
//! redirects to the template's link. An unknown token is 404 and counts nothing.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::{ApiError, AppState};

pub fn routes() -> Router<AppState> {
    Router::new().route("/r/:token", get(follow))
}

async fn follow(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    let well_formed = token.len() == 32
        && token
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !well_formed {
        return Err(ApiError::not_found("link"));
    }
    let store = state.store.clone();
    let now_ms = state.clock.now().timestamp_millis();
    let link =
        tokio::task::spawn_blocking(move || crate::delivery::click(store.as_ref(), &token, now_ms))
            .await
            .map_err(ApiError::internal)??
            .ok_or_else(|| ApiError::not_found("link"))?;
    Ok((
        StatusCode::FOUND,
        [
            (header::LOCATION, link),
            (header::CACHE_CONTROL, "no-store".to_owned()),
            // The destination does not learn the token.
            (header::REFERRER_POLICY, "no-referrer".to_owned()),
        ],
    )
        .into_response())
}
