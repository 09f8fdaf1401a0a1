//! `/v1/admin/campaigns`: campaign definitions, validated by field against the registry and
//! the cloud's dwell milestones, stored as versions (`…/versions` lists them with what each
//! changed); a campaign saved with `"draft": true` decides nothing until launched; launch,
//! pause, resume and end are new versions too. `POST /v1/admin/campaigns/reach` counts whom a
//! definition would reach, per channel.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use omo_device_config::Timestamp;
use serde_json::{json, Value};

use super::{parse_json, Analyst, ApiError, AppState, Marketer, Operator};
use crate::campaigns::definition::Campaign;
use crate::campaigns::stored;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/campaigns", get(list))
        .route("/v1/admin/campaigns/:id", get(get_one).put(put))
        .route("/v1/admin/campaigns/:id/pause", post(pause))
        .route("/v1/admin/campaigns/:id/resume", post(resume))
        .route("/v1/admin/campaigns/:id/launch", post(launch))
        .route("/v1/admin/campaigns/:id/end", post(end))
        .route("/v1/admin/campaigns/:id/versions", get(versions))
        // `reach` is this endpoint, so no campaign has that id.
        .route(
            "/v1/admin/campaigns/reach",
            post(reach)
                .put(|_: Marketer| async { Err::<Response, _>(reach_is_taken()) })
                .get(|_: Analyst| async {
                    Err::<Response, _>(ApiError::not_found("campaign reach"))
                }),
        )
        .route("/v1/admin/decisions", get(decisions))
        .route("/v1/admin/deliveries", get(deliveries))
        .route("/v1/admin/reports/campaigns/:id", get(report))
}

/// Field problems of a campaign, including places the registry does not have.
fn check(state: &AppState, c: &Campaign) -> Result<(), ApiError> {
    // (field, what is wrong), as the validation names them.
    let mut problems: Vec<(String, String)> =
        match c.validate(&state.config.visits.dwell_milestones_min) {
            Ok(()) => Vec::new(),
            Err(p) => p.into_iter().map(|p| (p.field, p.message)).collect(),
        };
    let registry = state.registry.read().expect("registry lock");
    let zones: Vec<String> = registry.zones().iter().map(|z| z.id().to_owned()).collect();
    for z in &c.places.zones {
        if !zones.contains(z) {
            problems.push((
                "places.zones".into(),
                format!("{z:?} is not a registered zone"),
            ));
        }
    }
    for s in &c.places.stores {
        if !registry.site().stores.iter().any(|r| r.id.as_str() == s) {
            problems.push((
                "places.stores".into(),
                format!("{s:?} is not a registered store"),
            ));
        }
    }
    let tiers = state.config.profiles.tier_names();
    for t in &c.audience.tiers {
        if !tiers.contains(&t.as_str()) {
            problems.push((
                "audience.tiers".into(),
                format!("{t:?} is not a tier of [profiles] in cloud.toml ({tiers:?})"),
            ));
        }
    }
    if state.config.delivery.link_base.is_none() {
        for (i, v) in c.variants.iter().enumerate() {
            if v.template.link.is_some() {
                problems.push((format!("variants[{i}].template.link"), "tracked links need delivery.link_base in cloud.toml (this service's public URL)".into()));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ApiError::fields(problems))
    }
}

/// The current version of campaign `id`, or 404.
pub(crate) fn current_campaign(state: &AppState, id: &str) -> Result<stored::Versioned, ApiError> {
    stored::current(state.store.as_ref(), id)?
        .map(|(current, _)| current)
        .ok_or_else(|| ApiError::not_found(format!("campaign {id}")))
}

async fn list(_: Analyst, State(state): State<AppState>) -> Result<Response, ApiError> {
    let items = stored::all(state.store.as_ref())?;
    Ok(Json(json!({"items": items})).into_response())
}

async fn get_one(
    _: Analyst,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(json!(current_campaign(&state, &id)?)).into_response())
}

async fn save(
    state: &AppState,
    id: &str,
    change: impl FnOnce(Option<Campaign>) -> Result<Campaign, ApiError>,
) -> Result<Response, ApiError> {
    let previous = stored::current(state.store.as_ref(), id)?;
    let campaign = change(previous.as_ref().map(|(p, _)| p.campaign.clone()))?;
    check(state, &campaign)?;
    let created = previous.is_none();
    let (commit, record) = stored::save(
        previous.as_ref().map(|(p, b)| (p, b.as_slice())),
        campaign,
        Timestamp::new(state.clock.now()),
    );
    super::commit_durably(state, commit).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!(record))).into_response())
}

async fn put(
    _: Marketer,
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    // `If-None-Match: *`: create only (a composer's new campaign never replaces another).
    let create_only = headers
        .get(axum::http::header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == b"*");
    let mut v: Value = parse_json(&body)?;
    match v.get("id") {
        None => {
            if let Some(o) = v.as_object_mut() {
                o.insert("id".into(), Value::String(id.clone()));
            }
        }
        Some(Value::String(s)) if *s == id => {}
        Some(_) => return Err(ApiError::field("id", "must match the id in the path")),
    }
    let campaign: Campaign = parse_json(v.to_string().as_bytes())?;
    save(&state, &id, |previous| {
        lifecycle_kept(previous.as_ref(), &campaign, create_only)?;
        Ok(campaign)
    })
    .await
}

fn reach_is_taken() -> ApiError {
    ApiError::field(
        "id",
        "\"reach\" names the reach endpoint (POST /v1/admin/campaigns/reach): choose another id",
    )
}

/// What a PUT may not change: the lifecycle moves only by its own steps (launch, end), so a
/// launch is always asked for on its own; a new campaign is not born ended.
fn lifecycle_kept(
    previous: Option<&Campaign>,
    campaign: &Campaign,
    create_only: bool,
) -> Result<(), ApiError> {
    let Some(p) = previous else {
        return if campaign.ended {
            Err(ApiError::field("ended", "a new campaign cannot be ended"))
        } else {
            Ok(())
        };
    };
    if create_only {
        return Err(ApiError::conflict(format!(
            "a campaign {} exists already: choose another id",
            p.id
        )));
    }
    if p.ended != campaign.ended {
        return Err(ApiError::field(
            "ended",
            if p.ended {
                "an ended campaign stays ended: copy it into a new campaign"
            } else {
                "end a campaign with POST …/end"
            },
        ));
    }
    if p.draft != campaign.draft {
        return Err(ApiError::field(
            "draft",
            if p.draft {
                "launch a draft with POST …/launch"
            } else {
                "a launched campaign cannot become a draft again: pause it instead"
            },
        ));
    }
    Ok(())
}

/// A lifecycle step: `change` edits the current version, or says why it cannot (409).
async fn step(
    state: &AppState,
    id: &str,
    change: impl FnOnce(&mut Campaign) -> Result<(), &'static str>,
) -> Result<Response, ApiError> {
    save(state, id, |previous| {
        let mut c = previous.ok_or_else(|| ApiError::not_found(format!("campaign {id}")))?;
        change(&mut c).map_err(ApiError::conflict)?;
        Ok(c)
    })
    .await
}

async fn set_paused(state: &AppState, id: &str, paused: bool) -> Result<Response, ApiError> {
    step(state, id, |c| {
        if c.ended {
            return Err("the campaign has ended");
        }
        if c.draft {
            return Err("a draft is not running: launch it first");
        }
        if c.paused == paused {
            return Err(if paused {
                "the campaign is paused already"
            } else {
                "the campaign is not paused"
            });
        }
        c.paused = paused;
        Ok(())
    })
    .await
}

async fn launch(
    _: Marketer,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    step(&state, &id, |c| {
        if !c.draft {
            return Err("the campaign was launched already");
        }
        c.draft = false;
        Ok(())
    })
    .await
}

async fn end(
    _: Marketer,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    step(&state, &id, |c| {
        if c.draft {
            return Err("a draft was never launched: there is nothing to end");
        }
        if c.ended {
            return Err("the campaign has ended already");
        }
        c.ended = true;
        Ok(())
    })
    .await
}

/// The versions of a campaign kept at most in `…/versions`.
const VERSIONS_SHOWN: usize = 100;

/// `GET …/versions`: newest first, each with the fields it changed from the one before.
async fn versions(
    _: Analyst,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let kept = stored::versions(state.store.as_ref(), &id, VERSIONS_SHOWN + 1)?;
    if kept.is_empty() {
        return Err(ApiError::not_found(format!("campaign {id}")));
    }
    let mut items: Vec<Value> = kept
        .windows(2)
        .map(|w| (Some(&w[0]), &w[1]))
        .chain(kept.first().filter(|f| f.version == 1).map(|f| (None, f)))
        .map(|(before, v)| {
            json!({
                "version": v.version,
                "updated": v.updated,
                "changes": before.map(|b| stored::changes(&b.campaign, &v.campaign)),
            })
        })
        .collect();
    items.sort_by_key(|v| std::cmp::Reverse(v["version"].as_u64()));
    items.truncate(VERSIONS_SHOWN);
    Ok(Json(json!({"items": items})).into_response())
}

/// `POST …/reach` with a campaign definition (an `id` is not needed): whom it would reach now.
/// For those who compose campaigns: its counts of exact attribute values would let a reader
/// of reports learn about one customer.
async fn reach(
    _: Marketer,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut v: Value = parse_json(&body)?;
    if let Some(o) = v.as_object_mut() {
        o.entry("id")
            .or_insert_with(|| Value::String("reach".into()));
    }
    let campaign: Campaign = parse_json(v.to_string().as_bytes())?;
    let now_ms = state.clock.now().timestamp_millis();
    let st = state.clone();
    let reach = tokio::task::spawn_blocking(move || {
        let registry = st.registry.read().expect("registry lock").clone();
        crate::campaigns::reach::reach(
            st.store.as_ref(),
            &registry,
            &st.config.profiles,
            &campaign,
            now_ms,
        )
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(Json(json!(reach)).into_response())
}

async fn pause(
    _: Marketer,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    set_paused(&state, &id, true).await
}

async fn resume(
    _: Marketer,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    set_paused(&state, &id, false).await
}

/// Every stored row under `prefix` in the campaigns space, up to `limit`; a row that does not
/// read is an error, not a gap in the list.
/// `?after=ID&limit=N` of the decision and delivery lists (1,000 rows by default and at most).
#[derive(Debug, Default, serde::Deserialize)]
struct RowPage {
    after: Option<String>,
    limit: Option<usize>,
}

/// The rows under `prefix` after `page.after`, and the id to ask after for the next page.
fn rows(state: &AppState, prefix: &str, page: &RowPage) -> Result<Value, ApiError> {
    let limit = page.limit.unwrap_or(1000).clamp(1, 1000);
    let from = match &page.after {
        Some(a) => format!("{prefix}{a}\u{0}"),
        None => prefix.to_owned(),
    };
    let entries = crate::store::scan_prefix_from(
        state.store.as_ref(),
        crate::store::Space::Campaigns,
        prefix.as_bytes(),
        from.as_bytes(),
        limit + 1,
    )?;
    let next = (entries.len() > limit)
        .then(|| String::from_utf8_lossy(&entries[limit - 1].0[prefix.len()..]).into_owned());
    let items = entries
        .iter()
        .take(limit)
        .map(|(k, v)| {
            serde_json::from_slice(v)
                .map_err(|e| ApiError::internal(format!("{}: {e}", String::from_utf8_lossy(k))))
        })
        .collect::<Result<Vec<Value>, ApiError>>()?;
    Ok(json!({"items": items, "next": next}))
}

/// Decisions (sent, would have sent, suppressed with the reason), for the funnel.
async fn decisions(
    _: Operator,
    State(state): State<AppState>,
    axum::extract::Query(page): axum::extract::Query<RowPage>,
) -> Result<Response, ApiError> {
    Ok(Json(rows(&state, crate::campaigns::keys::DECISIONS, &page)?).into_response())
}

/// Delivery rows written by decisions.
async fn deliveries(
    _: Operator,
    State(state): State<AppState>,
    axum::extract::Query(page): axum::extract::Query<RowPage>,
) -> Result<Response, ApiError> {
    Ok(Json(rows(&state, crate::delivery::keys::DELIVERIES, &page)?).into_response())
}

#[derive(Debug, Default, serde::Deserialize)]
struct ReportQuery {
    /// `json` (default) or `csv`.
    format: Option<String>,
}

/// A campaign's report: per variant and holdout, the funnel, returns and their rate, and the
/// lift over the holdout with 95 % intervals — from the analysis rows and funnel counters
/// only (no personal data: analysts may read it). JSON, or CSV with `?format=csv` or
/// `Accept: text/csv`.
async fn report(
    _: Analyst,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    axum::extract::Query(q): axum::extract::Query<ReportQuery>,
) -> Result<Response, ApiError> {
    let report = campaign_report(&state, &id).await?;
    if wants_csv(q.format.as_deref(), &headers)? {
        Ok(csv(crate::campaigns::report::to_csv(&report)))
    } else {
        Ok(Json(json!(report)).into_response())
    }
}

/// `GET /v1/admin/reports/campaigns/{id}`'s report.
pub(crate) async fn campaign_report(
    state: &AppState,
    id: &str,
) -> Result<crate::campaigns::report::Report, ApiError> {
    let (current, _) = stored::current(state.store.as_ref(), id)?
        .ok_or_else(|| ApiError::not_found(format!("campaign {id}")))?;
    let variants: Vec<String> = current
        .campaign
        .variants
        .iter()
        .map(|v| v.id.clone())
        .collect();
    let store = state.store.clone();
    let days = current.campaign.attribution_days;
    let now_ms = state.clock.now().timestamp_millis();
    let id = id.to_owned();
    Ok(tokio::task::spawn_blocking(move || {
        crate::campaigns::report::build(store.as_ref(), &id, &variants, days, now_ms)
    })
    .await
    .map_err(ApiError::internal)??)
}

/// Whether a report is asked for as CSV: `?format=csv`, or `Accept: text/csv` without a
/// format.
pub(super) fn wants_csv(format: Option<&str>, headers: &HeaderMap) -> Result<bool, ApiError> {
    match format {
        Some("csv") => Ok(true),
        Some("json") | None => Ok(headers
            .get(axum::http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/csv"))),
        Some(other) => Err(ApiError::field(
            "format",
            format!("{other:?}: must be json or csv"),
        )),
    }
}

/// A CSV answer.
pub(super) fn csv(body: String) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8")],
        body,
    )
        .into_response()
}
