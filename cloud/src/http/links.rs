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
use crate::delivery::{self, click_key, clicked_key};
use crate::store::{Commit, Space, Store, StoreError};
use crate::tallies::funnel::Counts;

pub fn routes() -> Router<AppState> {
    Router::new().route("/r/:token", get(follow))
}

/// Where the link with `token` leads, counting its first click; `None`: no such link.
pub fn click(store: &dyn Store, token: &str, now_ms: i64) -> Result<Option<String>, StoreError> {
    let Some(id) = store.get(Space::Campaigns, click_key(token).as_bytes())? else {
        return Ok(None);
    };
    let Some((d, _)) = delivery::read(store, &String::from_utf8_lossy(&id))? else {
        return Ok(None);
    };
    let Some(link) = d.link.clone() else {
        return Ok(None);
    };
    // Clicks at once on one variant's links: each counts its own delivery, re-reading the
    // variant's counter on a conflict.
    for _ in 0..50 {
        if store
            .get(Space::Campaigns, clicked_key(&d.id).as_bytes())?
            .is_some()
        {
            return Ok(Some(link));
        }
        let mut c = Commit::new();
        c.expect(Space::Campaigns, clicked_key(&d.id), None);
        c.put(
            Space::Campaigns,
            clicked_key(&d.id),
            now_ms.to_be_bytes().to_vec(),
        );
        let mut counts = Counts::default();
        counts.add(&d.campaign, &d.variant, "clicked");
        counts.add_key(d.store_counter("clicked"));
        counts.write(store, &mut c)?;
        match store.commit(c) {
            Ok(()) => {
                metrics::counter!("omo_offer_clicks_total").increment(1);
                return Ok(Some(link));
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    tracing::warn!("a click could not be counted: its counter kept changing");
    Ok(Some(link))
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
    let link = tokio::task::spawn_blocking(move || click(store.as_ref(), &token, now_ms))
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
