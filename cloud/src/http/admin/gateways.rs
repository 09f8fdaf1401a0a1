//! `/v1/admin/gateways`: a gateway's record, its run-time state, its epochs, its desired remote
//! config (pushed to it over MQTT) and enabling or disabling it.

use super::*;

pub(super) fn gateway_detail(
    state: &AppState,
    g: &registry::GatewayEntry,
    stats: Option<Value>,
) -> Value {
    let runtime = state
        .gateways
        .lock()
        .expect("gateway states lock")
        .get(&g.record.id)
        .map(|r| json!(r))
        .unwrap_or(Value::Null);
    let mut v = gateway_json(&g.record);
    v["desired_config_version"] = json!(g.desired.as_ref().map(|d| d.version));
    v["last_config_ack"] = json!(g.last_ack);
    v["runtime"] = runtime;
    v["ingest"] = stats.unwrap_or(Value::Null);
    v
}

pub(super) async fn list_gateways(
    _: Analyst,
    State(state): State<AppState>,
    Query(page): Query<Page>,
) -> Result<Response, ApiError> {
    let store = state.store.clone();
    let stats = tokio::task::spawn_blocking(move || crate::stats::load(store.as_ref()))
        .await
        .map_err(ApiError::internal)??;
    let registry = state.registry.read().expect("registry lock").clone();
    let items = registry
        .gateways()
        .map(|g| {
            let s = stats
                .get(&crate::stats::keys::gateway(g.record.id.as_str()))
                .map(|s| json!(s));
            (g.record.id.to_string(), gateway_detail(&state, g, s))
        })
        .collect();
    Ok(Json(paginate(items, &page)).into_response())
}

pub(super) async fn get_gateway(
    _: Analyst,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(gateway_document(&state, &id).await?).into_response())
}

/// The desired remote config of a gateway as stored (`GET /v1/admin/gateways/{id}/config`).
pub(crate) fn desired_config_text(state: &AppState, id: &str) -> Option<String> {
    let registry = state.registry.read().expect("registry lock");
    let desired = registry.gateway(id)?.desired.as_ref()?;
    Some(String::from_utf8_lossy(&desired.json).into_owned())
}

pub(super) async fn get_gateway_config(
    _: Analyst,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let text = desired_config_text(&state, &id)
        .ok_or_else(|| ApiError::not_found(format!("a pushed config of gateway {id}")))?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        text,
    )
        .into_response())
}

/// `GET /v1/admin/gateways/{id}`'s document: the gateway, its run-time state, its ingest
/// counts and its epochs.
pub(crate) async fn gateway_document(state: &AppState, id: &str) -> Result<Value, ApiError> {
    let g = state
        .registry
        .read()
        .expect("registry lock")
        .gateway(id)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("gateway {id}")))?;
    let stats = state
        .store
        .get(Space::Stats, crate::stats::keys::gateway(id).as_bytes())?;
    let stats = stats.and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    let store = state.store.clone();
    let gw = g.record.id.clone();
    let epochs =
        tokio::task::spawn_blocking(move || crate::ingest::epochs::report(store.as_ref(), &gw))
            .await
            .map_err(ApiError::internal)??;
    let mut detail = gateway_detail(state, &g, stats);
    detail["epochs"] = json!(epochs);
    Ok(detail)
}

pub(super) async fn set_enabled(
    state: &AppState,
    id: &str,
    enabled: bool,
) -> Result<Response, ApiError> {
    let _one_at_a_time = state.registry_writes.lock().await;
    let mut site = current_site(state);
    let g = site
        .gateways
        .iter_mut()
        .find(|g| g.id.as_str() == id)
        .ok_or_else(|| ApiError::not_found(format!("gateway {id}")))?;
    g.enabled = enabled;
    let shown = gateway_json(g);
    apply_site(state, site, false).await?;
    Ok(Json(shown).into_response())
}

pub(super) async fn disable_gateway(
    _: Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    set_enabled(&state, &id, false).await
}

pub(super) async fn enable_gateway(
    _: Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    set_enabled(&state, &id, true).await
}

/// Sets a gateway's desired remote config and publishes it at once (it is published again
/// whenever the gateway comes online with another version).
pub(super) async fn put_gateway_config(
    _: Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let gw = GatewayId::new(&id).map_err(|e| ApiError::field("gateway", e))?;
    let text = std::str::from_utf8(&body)
        .map_err(|e| ApiError::field("", format!("body is not UTF-8: {e}")))?
        .to_owned();
    let _one_at_a_time = state.registry_writes.lock().await;
    let current = state.registry.read().expect("registry lock").clone();
    if current.gateway(&id).is_none() {
        return Err(ApiError::not_found(format!("gateway {id}")));
    }
    let (commit, desired) = registry::set_desired_config(
        &current,
        &gw,
        &text,
        state
            .config
            .visits
            .exit_timeout_s
            .min(state.config.visits.exit_grace_s),
    )
    .map_err(|e| registry_error(e, false))?;
    super::super::commit_durably(&state, commit).await?;
    let mut registry = state.registry.write().expect("registry lock");
    registry.set_desired(&gw, desired.clone());
    let entry = registry.gateway(&id).expect("checked above");
    let topic = omo_device_config::Topic::new(
        entry.record.store.clone(),
        gw.clone(),
        omo_device_config::Channel::Config,
    )
    .to_string();
    let payload = omo_device_config::envelope::seal_raw(&topic, &entry.key, &desired.json);
    let sent = state.outbound.publish(topic, payload, true).is_ok();
    Ok(Json(json!({"version": desired.version, "published": sent})).into_response())
}
