//! `/v1/admin/customers` and installs: create, list, read and change customers, record consent
//! (a withdrawal cancels the channel's waiting deliveries), export and erase them, revoke an
//! install.

use super::*;

/// Consent flags to set; an absent channel is left as it is.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConsentPatch {
    line: Option<bool>,
    push: Option<bool>,
    webhook: Option<bool>,
    location: Option<bool>,
}

impl ConsentPatch {
    fn over(&self, current: Consent) -> Consent {
        Consent {
            line: self.line.unwrap_or(current.line),
            push: self.push.unwrap_or(current.push),
            webhook: self.webhook.unwrap_or(current.webhook),
            location: self.location.unwrap_or(current.location),
        }
    }
}

/// Fields of a customer an operator may set (absent: unchanged).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CustomerPatch {
    #[serde(default)]
    member_id: Option<Option<String>>,
    #[serde(default)]
    line_user: Option<Option<String>>,
    /// Channels to set (absent channels keep their consent).
    consent: Option<ConsentPatch>,
    /// The version of the consent text the flags in `consent` were agreed to under.
    consent_text_version: Option<String>,
    tags: Option<BTreeSet<String>>,
    attributes: Option<std::collections::BTreeMap<String, Value>>,
    beacons: Option<Vec<omo_device_config::BeaconId>>,
    eid_keys: Option<Vec<EidKey>>,
}

impl CustomerPatch {
    /// Applies the patch; consent flags that change become consent records with source
    /// `admin`, recorded at `now`.
    fn apply(self, c: &mut Customer, now: Timestamp) {
        if let Some(m) = self.member_id {
            c.member_id = m;
        }
        if let Some(l) = self.line_user {
            c.line_user = l;
        }
        if let Some(x) = self.consent {
            let wanted = x.over(c.consent);
            c.set_consent(
                wanted,
                identity::ConsentSource::Admin,
                self.consent_text_version.as_deref(),
                now,
            );
        }
        if let Some(x) = self.tags {
            c.tags = x;
        }
        if let Some(x) = self.attributes {
            c.attributes = x;
        }
        if let Some(x) = self.beacons {
            c.beacons = x;
        }
        if let Some(x) = self.eid_keys {
            c.eid_keys = x;
        }
    }
}

/// After a consent change: cancels the customer's waiting deliveries on channels they no
/// longer consent to. A failure is logged, not answered: the consent is recorded, and the
/// worker checks consent again before every send.
pub async fn cancel_withdrawn_sends(state: &AppState, customer: Customer) {
    if customer.consent.line && customer.consent.push && customer.consent.webhook {
        return;
    }
    let store = state.store.clone();
    let now_ms = state.clock.now().timestamp_millis();
    let done = tokio::task::spawn_blocking(move || {
        crate::delivery::worker::cancel_withdrawn(store.as_ref(), &customer, now_ms)
    })
    .await;
    match done {
        Ok(Ok(0)) => {}
        Ok(Ok(n)) => tracing::info!(
            cancelled = n,
            "consent withdrawn: waiting deliveries cancelled"
        ),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cancelling deliveries after a consent withdrawal failed")
        }
        Err(e) => {
            tracing::error!(error = %e, "cancelling deliveries after a consent withdrawal failed")
        }
    }
}

/// Rebuilds the EID resolver's keys from the identity store.
pub async fn refresh_eids(state: &AppState) {
    let store = state.store.clone();
    let eids = state.eids.clone();
    // Off the executor: the visit stage may hold the resolver while it builds a table.
    let refreshed = tokio::task::spawn_blocking(move || {
        let keys = identity::all_eid_keys(store.as_ref())?;
        eids.lock().expect("eid resolver lock").set_keys(keys);
        Ok::<_, crate::store::StoreError>(())
    })
    .await;
    match refreshed {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "EID keys unreadable"),
        Err(e) => tracing::error!(error = %e, "EID refresh failed"),
    }
}

/// A customer as the API shows it: EID identity keys only as fingerprints (a leaked key would
/// let anyone follow that phone), installs without their token hashes.
pub(super) fn customer_json(state: &AppState, c: &Customer) -> Result<Value, ApiError> {
    let mut v = json!(c);
    v["eid_keys"] = json!(c
        .eid_keys
        .iter()
        .map(|k| json!({
            "fingerprint": &crate::secrets::sha256_hex(k.identity_key.as_bytes())[..16],
            "exponent": k.exponent,
            "clock_offset_s": k.clock_offset_s,
        }))
        .collect::<Vec<_>>());
    let installs: Vec<Value> = c
        .installs
        .iter()
        .filter_map(|id| identity::install(state.store.as_ref(), id).transpose())
        .map(|r| r.map(|i| json!({"id": i.id, "platform": i.platform, "push_token": i.push_token, "created": i.created, "revoked": i.revoked})))
        .collect::<Result<_, _>>()?;
    v["installs"] = json!(installs);
    Ok(v)
}

pub(super) async fn create_customer(
    _: Operator,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let patch: CustomerPatch = parse_json(&body)?;
    let now = Timestamp::new(state.clock.now());
    let mut c = identity::new_customer(now);
    patch.apply(&mut c, now);
    let commit = identity::save_customer(state.store.as_ref(), None, &c).map_err(identity_error)?;
    super::super::commit_durably(&state, commit).await?;
    if !c.eid_keys.is_empty() {
        refresh_eids(&state).await;
    }
    Ok((StatusCode::CREATED, Json(customer_json(&state, &c)?)).into_response())
}

pub(super) async fn list_customers(
    _: Operator,
    State(state): State<AppState>,
    Query(page): Query<Page>,
) -> Result<Response, ApiError> {
    let limit = page.limit.unwrap_or(100).clamp(1, 1000);
    let from = match &page.after {
        Some(a) => format!("{}\u{0}", identity::keys::customer(a)),
        None => identity::keys::CUSTOMERS.to_owned(),
    };
    let entries = state
        .store
        .scan(Space::Identity, from.as_bytes(), limit + 1)?;
    let mut items = Vec::new();
    for (k, v) in entries
        .iter()
        .filter(|(k, _)| k.starts_with(identity::keys::CUSTOMERS.as_bytes()))
    {
        let c: Customer = serde_json::from_slice(v).map_err(ApiError::internal)?;
        items.push((
            String::from_utf8_lossy(&k[identity::keys::CUSTOMERS.len()..]).into_owned(),
            customer_json(&state, &c)?,
        ));
    }
    Ok(Json(paginate(
        items,
        &Page {
            after: page.after,
            limit: Some(limit),
        },
    ))
    .into_response())
}

pub(super) async fn get_customer(
    _: Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let c = identity::customer(state.store.as_ref(), &id)?
        .ok_or_else(|| ApiError::not_found(format!("customer {id}")))?;
    Ok(Json(customer_json(&state, &c)?).into_response())
}

/// The offers sent to a customer (campaign and time), newest first.
pub(super) async fn customer_offers(
    _: Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(json!({"items": offers_of(&state, &id)?})).into_response())
}

pub(crate) fn offers_of(state: &AppState, id: &str) -> Result<Vec<Value>, ApiError> {
    identity::customer(state.store.as_ref(), id)?
        .ok_or_else(|| ApiError::not_found(format!("customer {id}")))?;
    let mut sends = crate::campaigns::stage::history(state.store.as_ref(), id, 0)?;
    sends.reverse();
    Ok(sends
        .into_iter()
        .map(|s| json!({"campaign": s.campaign, "at": Timestamp::from_millis(s.at_ms)}))
        .collect())
}

/// `GET /v1/admin/customers/{id}`'s document.
pub(crate) fn customer_document(state: &AppState, id: &str) -> Result<Value, ApiError> {
    let c = identity::customer(state.store.as_ref(), id)?
        .ok_or_else(|| ApiError::not_found(format!("customer {id}")))?;
    customer_json(state, &c)
}

pub(super) async fn patch_customer(
    _: Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let patch: CustomerPatch = parse_json(&body)?;
    let (old, bytes) =
        identity::customer_for_update(state.store.as_ref(), &id).map_err(identity_error)?;
    let mut c = old.clone();
    patch.apply(&mut c, Timestamp::new(state.clock.now()));
    update_customer(&state, (&old, &bytes), &c).await?;
    Ok(Json(customer_json(&state, &c)?).into_response())
}

/// Saves an operator's change to a customer, then what follows from it: the EID resolver
/// learns changed keys, and a withdrawn consent cancels the channel's waiting deliveries.
pub(super) async fn update_customer(
    state: &AppState,
    (old, bytes): (&Customer, &[u8]),
    new: &Customer,
) -> Result<(), ApiError> {
    let commit = identity::save_customer(state.store.as_ref(), Some((old, bytes)), new)
        .map_err(identity_error)?;
    super::super::commit_durably(state, commit).await?;
    if new.eid_keys != old.eid_keys {
        refresh_eids(state).await;
    }
    if new.consent != old.consent {
        cancel_withdrawn_sends(state, new.clone()).await;
    }
    Ok(())
}

/// Erases a customer (a deletion request; `crate::privacy` has the steps): their identity
/// links, observations, visits, decisions and the personal fields of their deliveries and
/// redemptions. Answers with a receipt of what was removed, or 202 when the visit stage (which
/// may run the customer's partition on another instance) has not done its part within
/// [`VISIT_ERASURE_WAIT`]; asking again finishes an erasure that was cut short (its receipt
/// then counts what that call removed, and what the visit stage removed when it did its part).
pub(super) async fn erase_customer(
    _: Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let store = state.store.clone();
    let who = id.clone();
    let begun = tokio::task::spawn_blocking(move || identity::begin_erasure(store.as_ref(), &who))
        .await
        .map_err(ApiError::internal)??;
    let erasing = match begun {
        Some((erasing, commit)) => {
            super::super::commit_durably(&state, commit).await?;
            if !erasing.customer.eid_keys.is_empty() {
                refresh_eids(&state).await;
            }
            erasing
        }
        None => identity::erasing(state.store.as_ref(), &id)?
            .ok_or_else(|| ApiError::not_found(format!("customer {id}")))?,
    };
    // The visit stage's part is done by the instance running the customer's partition, this
    // one or another: asked through the store, waited for a while.
    let visits = match visits_erased(&state, &id).await? {
        Some(v) => v,
        None => {
            return Ok((
                StatusCode::ACCEPTED,
                Json(json!({
                    "customer": id,
                    "status": "under_way",
                    "detail": "the customer's identity is erased; the visit stage has not yet done its part (it runs its partition on another instance, or is catching up): ask again to finish the erasure and get its receipt",
                })),
            )
                .into_response())
        }
    };
    let store = state.store.clone();
    let now_ms = state.clock.now().timestamp_millis();
    let rest = erasing.clone();
    let finished = tokio::task::spawn_blocking(move || {
        let f = crate::privacy::finish_erasure(store.as_ref(), &rest, now_ms)?;
        store.flush()?;
        Ok::<_, crate::store::StoreError>(f)
    })
    .await
    .map_err(ApiError::internal)??;
    metrics::counter!("omo_customers_erased_total").increment(1);
    tracing::info!(
        visits = visits.visits,
        observations = finished.observations,
        deliveries = finished.deliveries_scrubbed,
        "customer erased"
    );
    let c = &erasing.customer;
    Ok(Json(json!({
        "customer": id,
        "erased": Timestamp::new(state.clock.now()),
        "identity": {
            "record": true,
            "member_id": c.member_id.is_some(),
            "line_user": c.line_user.is_some(),
            "beacons": c.beacons.len(),
            "eid_keys": c.eid_keys.len(),
            "installs": erasing.installs.len(),
            "push_tokens": erasing.installs.iter().filter(|i| i.push_token.is_some()).count(),
            "consent_records": c.consent_records.len(),
            "attributes": c.attributes.len(),
            "tags": c.tags.len(),
        },
        "visits": visits,
        "removed": finished,
        "kept": "aggregate counts: campaign funnels and analysis rows under their pseudonyms, footfall, ingest statistics",
    }))
    .into_response())
}

/// How long an erasure waits for the visit stage's part before answering 202.
const VISIT_ERASURE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Asks the visit stage to erase `id`'s part and waits for what it removed (`None`: not done
/// within [`VISIT_ERASURE_WAIT`]).
async fn visits_erased(
    state: &AppState,
    id: &str,
) -> Result<Option<crate::visits::stage::VisitsErased>, ApiError> {
    let (store, who) = (state.store.clone(), id.to_owned());
    tokio::task::spawn_blocking(move || crate::visits::request_erasure(store.as_ref(), &who))
        .await
        .map_err(ApiError::internal)??;
    state.erasures.notify_one();
    let deadline = tokio::time::Instant::now() + VISIT_ERASURE_WAIT;
    loop {
        let (store, who) = (state.store.clone(), id.to_owned());
        let outcome = tokio::task::spawn_blocking(move || {
            crate::visits::erasure_outcome(store.as_ref(), &who)
        })
        .await
        .map_err(ApiError::internal)??;
        if outcome.is_some() || tokio::time::Instant::now() >= deadline {
            return Ok(outcome);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Everything held about a customer, as one JSON document (a disclosure request).
pub(super) async fn export_customer(
    _: Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let store = state.store.clone();
    let now = Timestamp::new(state.clock.now());
    let who = id.clone();
    let doc =
        tokio::task::spawn_blocking(move || crate::privacy::export(store.as_ref(), &who, now))
            .await
            .map_err(ApiError::internal)??
            .ok_or_else(|| ApiError::not_found(format!("customer {id}")))?;
    Ok(Json(doc).into_response())
}

/// One consent change an operator records: given or withdrawn at the store counter, or
/// imported from the brand's CRM.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConsentIn {
    channel: identity::ConsentChannel,
    granted: bool,
    /// `admin` (default) or `import`.
    #[serde(default)]
    source: Option<identity::ConsentSource>,
    /// When the customer gave or withdrew it (default: now); not in the future.
    #[serde(default)]
    at: Option<Timestamp>,
    #[serde(default)]
    text_version: Option<String>,
}

/// Records a consent change for a customer; the customer with its derived consent.
pub(super) async fn record_consent(
    _: Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: ConsentIn = parse_json(&body)?;
    let source = req.source.unwrap_or(identity::ConsentSource::Admin);
    if !matches!(
        source,
        identity::ConsentSource::Admin | identity::ConsentSource::Import
    ) {
        return Err(ApiError::field(
            "source",
            "an operator records `admin` or `import` consents (the app and LINE record their own)",
        ));
    }
    let c = record_consent_change(
        &state,
        &id,
        (req.channel, req.granted, req.at),
        (source, req.text_version),
    )
    .await?;
    Ok(Json(customer_json(&state, &c)?).into_response())
}

/// Records customer `id`'s consent on `channel` given or withdrawn at `at` (default: now; not
/// in the future) from `source`, and what follows from it ([`update_customer`]); answers the
/// customer as saved.
pub(crate) async fn record_consent_change(
    state: &AppState,
    id: &str,
    (channel, granted, at): (identity::ConsentChannel, bool, Option<Timestamp>),
    (source, text_version): (identity::ConsentSource, Option<String>),
) -> Result<Customer, ApiError> {
    let now = Timestamp::new(state.clock.now());
    let at = at.unwrap_or(now);
    if at.millis() > now.millis() {
        return Err(ApiError::field("at", "is in the future"));
    }
    let (old, bytes) =
        identity::customer_for_update(state.store.as_ref(), id).map_err(identity_error)?;
    let mut c = old.clone();
    c.record_consent(identity::ConsentChange {
        channel,
        granted,
        at,
        recorded: now,
        source,
        text_version,
    });
    if c != old {
        update_customer(state, (&old, &bytes), &c).await?;
    }
    Ok(c)
}

/// Revokes an app install (a lost or compromised phone): its token stops authenticating
/// reports and it gets no more pushes.
pub(super) async fn revoke_install(
    _: Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let now = Timestamp::new(state.clock.now());
    let (install, commit) = match identity::revoke_install(state.store.as_ref(), &id, now) {
        Ok(v) => v,
        Err(identity::IdentityError::NotFound(_)) => {
            return Err(ApiError::not_found(format!("install {id}")))
        }
        Err(e) => return Err(identity_error(e)),
    };
    if !commit.is_empty() {
        super::super::commit_durably(&state, commit).await?;
    }
    Ok(
        Json(json!({"id": install.id, "customer": install.customer, "revoked": install.revoked}))
            .into_response(),
    )
}
