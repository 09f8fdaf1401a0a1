//! The app SDK's endpoints: `POST /v1/app/installs` registers an install and returns its id
//! and secret token (stored only as a hash); `POST /v1/app/locations` takes a GPS fix, a
//! Wi-Fi scan and/or beacon sightings, authenticated by the install's token, once per
//! idempotency key; `POST /v1/app/consent` records a consent the customer gave or withdrew in
//! the app after installing it.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use omo_device_config::site::parse_bssid;
use omo_device_config::{BeaconId, Timestamp};
use serde::Deserialize;
use serde_json::json;

use super::{append, bearer, identity_error, parse_json, ApiError, AppState};
use crate::identity::{self, IdentityError, InstallRequest};
use crate::ingest::record::{AppReport, BeaconSighting, GpsFix, Record, WifiSighting};
use crate::ingest::Appended;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/app/installs", post(register))
        .route("/v1/app/locations", post(locations))
        .route("/v1/app/consent", post(consent))
}

/// A consent given or withdrawn in the app.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentIn {
    pub channel: identity::ConsentChannel,
    pub granted: bool,
    /// When the customer gave or withdrew it (default: now); not in the future.
    #[serde(default)]
    pub at: Option<Timestamp>,
    /// The version of the text the customer agreed to (when granting), 1..=64 characters.
    #[serde(default)]
    pub text_version: Option<String>,
}

/// Reads and checks a consent body: the change, or the field at fault.
pub fn parse_consent(body: &[u8]) -> Result<ConsentIn, ApiError> {
    let c: ConsentIn = parse_json(body)?;
    if c.text_version
        .as_ref()
        .is_some_and(|v| v.is_empty() || v.chars().count() > 64)
    {
        return Err(ApiError::field("text_version", "must be 1..=64 characters"));
    }
    Ok(c)
}

/// Records the install's customer's consent change (source `app`), cancelling the waiting
/// offers of a channel withdrawn; answers the customer's consent now, and nothing else.
async fn consent(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let install = authenticated_install(&state, &headers).await?;
    let req = parse_consent(&body)?;
    let c = super::admin::record_consent_change(
        &state,
        &install.customer,
        (req.channel, req.granted, req.at),
        (identity::ConsentSource::App, req.text_version),
    )
    .await?;
    Ok(Json(json!({ "consent": c.consent })).into_response())
}

async fn register(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let req: InstallRequest = parse_json(&body)?;
    let eid_key = req.eid.clone();
    if let Some(member) = &req.member_id {
        let Some(secret) = &state.config.app.member_link_secret else {
            return Err(ApiError::field(
                "member_id",
                "this cloud links no member ids (app.member_link_secret is not set)",
            ));
        };
        let proven = req.member_sig.as_deref().is_some_and(|sig| {
            crate::secrets::hmac_hex_valid(secret.as_bytes(), member.as_bytes(), sig)
        });
        if !proven {
            return Err(ApiError::field(
                "member_sig",
                "does not prove member_id (hex HMAC-SHA256 of it with the member link secret)",
            ));
        }
    }
    let now = Timestamp::new(state.clock.now());
    let store = state.store.clone();
    let (install, token) = tokio::task::spawn_blocking(move || {
        let (install, token, commit) = identity::register_install(store.as_ref(), &req, now)?;
        crate::store::Store::commit(store.as_ref(), commit)?;
        crate::store::Store::flush(store.as_ref())?;
        Ok::<_, IdentityError>((install, token))
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(identity_error)?;
    if let Some(identity) = eid_key.and_then(|k| k.identity().ok()) {
        // Added to the tables already built, off the executor (the visit stage may hold the
        // resolver while it builds one).
        let (eids, customer) = (state.eids.clone(), install.customer.clone());
        tokio::task::spawn_blocking(move || {
            eids.lock()
                .expect("eid resolver lock")
                .add_key(customer, identity)
        })
        .await
        .map_err(ApiError::internal)?;
    }
    let body = json!({"install_id": install.id, "token": token, "customer_id": install.customer});
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// An app's report, as sent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LocationReport {
    ts: Timestamp,
    #[serde(default)]
    idempotency_key: Option<String>,
    #[serde(default)]
    gps: Option<GpsIn>,
    #[serde(default)]
    wifi: Vec<WifiIn>,
    #[serde(default)]
    beacons: Vec<BeaconIn>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GpsIn {
    lat: f64,
    lon: f64,
    accuracy_m: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WifiIn {
    bssid: String,
    rssi: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BeaconIn {
    id: BeaconId,
    rssi: f64,
}

fn check_rssi(field: String, rssi: f64) -> Result<(), ApiError> {
    if rssi.is_finite() && (-127.0..=20.0).contains(&rssi) {
        Ok(())
    } else {
        Err(ApiError::field(&field, "must be within -127..=20 dBm"))
    }
}

/// A report's observation as the log stores it.
#[derive(Debug)]
pub struct Observation {
    pub gps: Option<GpsFix>,
    pub wifi: Vec<WifiSighting>,
    pub beacons: Vec<BeaconSighting>,
    pub ts: Timestamp,
    /// From the body; an `Idempotency-Key` header takes precedence.
    pub idempotency_key: Option<String>,
}

/// Reads and checks a report body: the observation, or the field at fault.
pub fn parse_report(
    body: &[u8],
    now: Timestamp,
    limits: &crate::config::Ingest,
) -> Result<Observation, ApiError> {
    validate(parse_json(body)?, now, limits)
}

/// Checks every field.
fn validate(
    r: LocationReport,
    now: Timestamp,
    limits: &crate::config::Ingest,
) -> Result<Observation, ApiError> {
    check_ts(r.ts, now, limits)?;
    let gps = r.gps.map(gps_fix).transpose()?;
    if r.wifi.len() > 256 || r.beacons.len() > 256 {
        return Err(ApiError::field(
            if r.wifi.len() > 256 {
                "wifi"
            } else {
                "beacons"
            },
            "at most 256 entries",
        ));
    }
    let wifi = wifi_sightings(r.wifi)?;
    let mut beacons = Vec::with_capacity(r.beacons.len());
    for (i, b) in r.beacons.into_iter().enumerate() {
        check_rssi(format!("beacons[{i}].rssi"), b.rssi)?;
        beacons.push(BeaconSighting {
            id: b.id,
            rssi: b.rssi,
        });
    }
    if gps.is_none() && wifi.is_empty() && beacons.is_empty() {
        return Err(ApiError::field("", "a report needs gps, wifi or beacons"));
    }
    Ok(Observation {
        gps,
        wifi,
        beacons,
        ts: r.ts,
        idempotency_key: r.idempotency_key,
    })
}

/// A report's time must be within `ingest.max_future_s` ahead and `ingest.max_age_s` behind.
fn check_ts(ts: Timestamp, now: Timestamp, limits: &crate::config::Ingest) -> Result<(), ApiError> {
    let ahead = ts.millis() - now.millis();
    if ahead > (limits.max_future_s as i64) * 1000 {
        return Err(ApiError::field(
            "ts",
            format!("is {} s in the future", ahead / 1000),
        ));
    }
    if -ahead > (limits.max_age_s as i64) * 1000 {
        return Err(ApiError::field(
            "ts",
            format!(
                "is {} s old; the limit is {} s",
                -ahead / 1000,
                limits.max_age_s
            ),
        ));
    }
    Ok(())
}

/// A GPS fix within the globe's bounds with an accuracy of 0..=100 km.
fn gps_fix(g: GpsIn) -> Result<GpsFix, ApiError> {
    if !(g.lat.is_finite() && (-90.0..=90.0).contains(&g.lat)) {
        return Err(ApiError::field("gps.lat", "must be within -90..=90"));
    }
    if !(g.lon.is_finite() && (-180.0..=180.0).contains(&g.lon)) {
        return Err(ApiError::field("gps.lon", "must be within -180..=180"));
    }
    if !(g.accuracy_m.is_finite() && g.accuracy_m > 0.0 && g.accuracy_m <= 100_000.0) {
        return Err(ApiError::field(
            "gps.accuracy_m",
            "must be within 0 < accuracy_m <= 100000",
        ));
    }
    Ok(GpsFix {
        lat: g.lat,
        lon: g.lon,
        accuracy_m: g.accuracy_m,
    })
}

/// The Wi-Fi scan's access points, each BSSID written as lower-case `aa:bb:cc:dd:ee:ff`.
fn wifi_sightings(wifi: Vec<WifiIn>) -> Result<Vec<WifiSighting>, ApiError> {
    let mut out = Vec::with_capacity(wifi.len());
    for (i, w) in wifi.into_iter().enumerate() {
        let bytes = parse_bssid(&w.bssid).ok_or_else(|| {
            ApiError::field(
                &format!("wifi[{i}].bssid"),
                "must be six hex bytes like aa:bb:cc:dd:ee:ff",
            )
        })?;
        check_rssi(format!("wifi[{i}].rssi"), w.rssi)?;
        let bssid = bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        out.push(WifiSighting {
            bssid,
            rssi: w.rssi,
        });
    }
    Ok(out)
}

/// The install a request's bearer token authenticates.
pub(super) async fn authenticated_install(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<identity::Install, ApiError> {
    let token =
        bearer(headers).ok_or_else(|| ApiError::unauthorized("an install token is required"))?;
    let token = token.to_owned();
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || identity::authenticate_install(store.as_ref(), &token))
        .await
        .map_err(ApiError::internal)??
        .ok_or_else(|| ApiError::unauthorized("unknown or wrong install token"))
}

/// A report's idempotency key: the `Idempotency-Key` header, or the body's.
pub(super) fn idempotency_key(
    headers: &HeaderMap,
    in_body: Option<String>,
) -> Result<String, ApiError> {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(in_body)
        .ok_or_else(|| {
            ApiError::field("idempotency_key", "required (or an Idempotency-Key header)")
        })?;
    if key.is_empty() || key.len() > 128 {
        return Err(ApiError::field(
            "idempotency_key",
            "must be 1..=128 characters",
        ));
    }
    Ok(key)
}

/// Appends an app's record once per (install, idempotency key): 202, or 200 for a repeat.
pub(super) async fn append_once(
    state: &AppState,
    install: &identity::Install,
    key: &str,
    record: Record,
    now: Timestamp,
) -> Result<Response, ApiError> {
    let dedup_key = crate::ingest::keys::app_request(&install.id, key);
    let answer = crate::ingest::keys::processed_id_value(json!({"accepted": true}), now.millis());
    match append(state, vec![record], Some((dedup_key, answer))).await? {
        Appended::Stored { .. } => Ok((
            StatusCode::ACCEPTED,
            Json(json!({"accepted": true, "duplicate": false})),
        )
            .into_response()),
        Appended::Duplicate(_) => Ok((
            StatusCode::OK,
            Json(json!({"accepted": true, "duplicate": true})),
        )
            .into_response()),
    }
}

async fn locations(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let install = authenticated_install(&state, &headers).await?;
    let now = Timestamp::new(state.clock.now());
    let o = parse_report(&body, now, &state.config.ingest)?;
    let key = idempotency_key(&headers, o.idempotency_key.clone())?;
    let record = Record::App(AppReport {
        install: install.id.clone(),
        customer: install.customer.clone(),
        event_ts: o.ts,
        received: now,
        gps: o.gps,
        wifi: o.wifi,
        beacons: o.beacons,
    });
    append_once(&state, &install, &key, record, now).await
}
