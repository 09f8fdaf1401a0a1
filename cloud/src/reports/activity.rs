//! A store's activity (`GET /v1/admin/stores/{id}/activity`, and the store page): its zones
//! with the visitors in each now, and the visits that began in each hour of the last 7 days,
//! hours in the store's own time zone. Counts only: no customer id leaves this module.

use chrono::{TimeZone, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::registry::{Registry, Zone};
use crate::store::{Space, Store, StoreError};
use crate::visits::engine::Scope;
use crate::visits::keys;

const HOUR_MS: i64 = 3_600_000;
/// Visits are looked for this far back for "in the zone now" (longer stays are rare and
/// would show as visits still open in the visit list).
const OPEN_LOOKBACK_MS: i64 = 12 * HOUR_MS;
/// Visits read per zone for "now" at most.
const OPEN_LIMIT: usize = 20_000;

#[derive(Debug, Clone, Serialize)]
pub struct ZoneNow {
    pub id: String,
    pub kind: &'static str,
    pub name: String,
    /// Visits entered in the last 12 hours and not exited.
    pub visitors_now: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct HourCount {
    /// The hour's start in the store's time zone (RFC 3339 with its offset).
    pub hour: String,
    pub visits: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Activity {
    pub store: String,
    pub time_zone: String,
    pub zones: Vec<ZoneNow>,
    /// Store visits entered per hour, the last 7 × 24 hours up to the current one.
    pub visits_per_hour: Vec<HourCount>,
}

fn zone_kind(z: &Zone) -> (&'static str, String) {
    match z {
        Zone::Beacon(b) => ("beacon", b.name.clone()),
        Zone::Gateway(g) => ("gateway", g.name.clone()),
        Zone::Wifi(w) => ("wifi", w.name.clone()),
        Zone::Geofence(g) => ("geofence", g.name.clone()),
    }
}

/// The activity of store `id` at `now_ms`; None when there is no such store.
pub fn activity(
    store: &dyn Store,
    registry: &Registry,
    id: &str,
    now_ms: i64,
) -> Result<Option<Activity>, StoreError> {
    if !registry.site().stores.iter().any(|s| s.id.as_str() == id) {
        return Ok(None);
    }
    // The site import checks every store's zone; UTC only if one were unreadable.
    let tz: Tz = registry.store_tz(id).unwrap_or(chrono_tz::UTC);
    let mut zones = Vec::new();
    for z in registry.zones().iter().filter(|z| z.store().as_str() == id) {
        let open = crate::visits::visits_in_scope(
            store,
            &Scope::Zone(z.id().to_owned()),
            now_ms - OPEN_LOOKBACK_MS,
            now_ms + 1,
            OPEN_LIMIT,
        )?
        .iter()
        .filter(|v| v.exited.is_none())
        .count() as u64;
        let (kind, name) = zone_kind(z);
        zones.push(ZoneNow {
            id: z.id().to_owned(),
            kind,
            name,
            visitors_now: open,
        });
    }
    // Hours by the store's clock: the current local hour and the 7 × 24 − 1 before it.
    let hour_start = |ms: i64| -> i64 {
        let t = Utc.timestamp_millis_opt(ms).single().unwrap_or_default();
        let local = t.with_timezone(&tz);
        ms - i64::from(chrono::Timelike::minute(&local)) * 60_000
            - i64::from(chrono::Timelike::second(&local)) * 1000
            - i64::from(local.timestamp_subsec_millis())
    };
    let last = hour_start(now_ms);
    let first = last - (7 * 24 - 1) * HOUR_MS;
    let mut counts = vec![0u64; 7 * 24];
    let prefix = keys::scope_prefix(&Scope::Store(id.to_owned()));
    let from = format!("{prefix}{:016x}", first.max(0));
    let to = format!("{prefix}{:016x}", (last + HOUR_MS).max(0));
    for (k, _) in store.scan_range(Space::Visits, from.as_bytes(), to.as_bytes(), usize::MAX)? {
        let Some(ms) = std::str::from_utf8(&k)
            .ok()
            .and_then(|k| k.strip_prefix(&prefix))
            .and_then(|rest| rest.split('/').next())
            .and_then(|ms| i64::from_str_radix(ms, 16).ok())
        else {
            continue;
        };
        let i = (ms - first).div_euclid(HOUR_MS);
        if let Some(c) = usize::try_from(i).ok().and_then(|i| counts.get_mut(i)) {
            *c += 1;
        }
    }
    let visits_per_hour = counts
        .into_iter()
        .enumerate()
        .map(|(i, visits)| HourCount {
            hour: Utc
                .timestamp_millis_opt(first + i as i64 * HOUR_MS)
                .single()
                .unwrap_or_default()
                .with_timezone(&tz)
                .to_rfc3339(),
            visits,
        })
        .collect();
    Ok(Some(Activity {
        store: id.to_owned(),
        time_zone: tz.name().to_owned(),
        zones,
        visits_per_hour,
    }))
}
