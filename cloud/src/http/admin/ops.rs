//! The operator's read-outs and duties: the overview, a store's activity, ingest statistics,
//! visits, footfall and transitions, and the backup snapshot.

use super::*;
use crate::cluster::Partition;
use crate::store::scan_prefix_from;

/// The live overview (`crate::reports::overview`).
pub(super) async fn get_overview(
    _: Analyst,
    State(state): State<AppState>,
) -> Result<Response, ApiError> {
    Ok(Json(super::super::documents::overview_now(&state).await?).into_response())
}

/// A store's zones with their visitors now and its visits per hour for 7 days.
pub(super) async fn get_store_activity(
    _: Analyst,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(super::super::documents::store_activity(&state, &id).await?).into_response())
}

pub(super) async fn ingest_stats(
    _: Analyst,
    State(state): State<AppState>,
) -> Result<Response, ApiError> {
    let store = state.store.clone();
    let stats = tokio::task::spawn_blocking(move || crate::stats::load(store.as_ref()))
        .await
        .map_err(ApiError::internal)??;
    let log_end = crate::store::event_log::EventLog::open(state.store.as_ref())?.next_offset();
    let position = crate::store::event_log::position(state.store.as_ref(), crate::stats::CONSUMER)?;
    Ok(
        Json(json!({"stats": stats, "log_end": log_end, "stats_position": position}))
            .into_response(),
    )
}

/// A consistent snapshot of every space, as NDJSON: a header line, then one line per entry
/// with base64 key and value (`omo-cloud backup DIR` writes it to files).
pub(super) async fn backup(
    _: Operator,
    State(state): State<AppState>,
) -> Result<Response, ApiError> {
    let store = state.store.clone();
    let snapshot = tokio::task::spawn_blocking(move || store.snapshot())
        .await
        .map_err(ApiError::internal)??;
    let mut out = Vec::new();
    let counts: serde_json::Map<String, Value> = snapshot
        .iter()
        .map(|(space, entries)| (space.name().to_owned(), json!(entries.len())))
        .collect();
    let header_line =
        json!({"omo_backup": 1, "created": Timestamp::new(state.clock.now()), "counts": counts});
    out.extend_from_slice(header_line.to_string().as_bytes());
    out.push(b'\n');
    for (space, entries) in &snapshot {
        for (k, v) in entries {
            let line = json!({"space": space.name(), "key": STANDARD.encode(k), "value": STANDARD.encode(v)});
            out.extend_from_slice(line.to_string().as_bytes());
            out.push(b'\n');
        }
    }
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], out).into_response())
}

#[derive(Debug, Deserialize)]
pub(super) struct VisitQuery {
    customer: Option<String>,
    zone: Option<String>,
    store: Option<String>,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
    limit: Option<usize>,
}

impl VisitQuery {
    fn scope(&self) -> Result<Option<crate::visits::engine::Scope>, ApiError> {
        use crate::visits::engine::Scope;
        match (&self.zone, &self.store) {
            (Some(_), Some(_)) => Err(ApiError::field("zone", "give a zone or a store, not both")),
            (Some(z), None) => Ok(Some(Scope::Zone(z.clone()))),
            (None, Some(s)) => Ok(Some(Scope::Store(s.clone()))),
            (None, None) => Ok(None),
        }
    }

    fn range(&self) -> (i64, i64) {
        (
            self.from.map_or(0, Timestamp::millis),
            self.to.map_or(i64::MAX / 2, Timestamp::millis),
        )
    }
}

/// Visits by customer, or by zone or store entered within `[from, to)`.
pub(super) async fn list_visits(
    _: Operator,
    State(state): State<AppState>,
    Query(q): Query<VisitQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let (from, to) = q.range();
    let items = match (&q.customer, q.scope()?) {
        (Some(c), None) => crate::visits::visits_of_customer(state.store.as_ref(), c, limit)?,
        (None, Some(scope)) => {
            crate::visits::visits_in_scope(state.store.as_ref(), &scope, from, to, limit)?
        }
        _ => {
            return Err(ApiError::field(
                "customer",
                "give one of customer, zone or store",
            ))
        }
    };
    Ok(Json(json!({"items": items})).into_response())
}

/// Anonymous footfall per hour of a zone or store within `[from, to)`.
pub(super) async fn get_footfall(
    _: Analyst,
    State(state): State<AppState>,
    Query(q): Query<VisitQuery>,
) -> Result<Response, ApiError> {
    let scope = q
        .scope()?
        .ok_or_else(|| ApiError::field("zone", "give a zone or a store"))?;
    let (from, to) = q.range();
    let hours: Vec<Value> = crate::visits::footfall(state.store.as_ref(), &scope, from, to)?
        .into_iter()
        .map(|(hour, f)| json!({"hour": hour, "device_minutes": f.device_minutes, "minutes": f.minutes, "peak": f.peak}))
        .collect();
    Ok(Json(json!({"items": hours})).into_response())
}

#[derive(Debug, Deserialize)]
pub(super) struct SeqPage {
    partition: Option<u16>,
    after: Option<u64>,
    limit: Option<usize>,
}

/// Visit transitions in the order the visit stage decided them, with their sequence numbers:
/// those of one partition (`partition`, 0 by default), after `after`. A store of several
/// partitions numbers each apart; every item names its partition.
pub(super) async fn list_transitions(
    _: Operator,
    State(state): State<AppState>,
    Query(page): Query<SeqPage>,
) -> Result<Response, ApiError> {
    let store = state.store.as_ref();
    let count = crate::cluster::count(store)?;
    let index = page.partition.unwrap_or(0);
    if index >= count {
        return Err(ApiError::field(
            "partition",
            format!("this store has partitions 0 to {}", count - 1),
        ));
    }
    let partition = Partition::new(index, count);
    let limit = page.limit.unwrap_or(100).clamp(1, 1000);
    let from = page.after.map_or(1, |a| a.saturating_add(1));
    let mut items = Vec::new();
    let prefix = partition.key_prefix();
    let start = crate::visits::keys::transition(partition, from);
    for (k, v) in scan_prefix_from(store, Space::Transitions, &prefix, &start, limit)? {
        let seq = crate::visits::keys::transition_seq(partition, &k)?;
        if v.is_empty() {
            // About an erased customer: its place only, so paging goes on past it.
            items.push(json!({"partition": index, "seq": seq, "erased": true}));
            continue;
        }
        let mut t: Value = serde_json::from_slice(&v).map_err(ApiError::internal)?;
        t["partition"] = json!(index);
        t["seq"] = json!(seq);
        items.push(t);
    }
    Ok(Json(json!({"items": items, "partitions": count})).into_response())
}
