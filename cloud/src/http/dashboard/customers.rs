//! The customers' page: a customer found by any id staff hold — the customer id, a member
//! number, a LINE user id, an app install id or a coupon code from one of their offers — with
//! their consent, devices, visits and offers.

use super::*;

/// One customer as the operator's page shows them.
pub struct CustomerView {
    pub id: String,
    pub member: String,
    pub line: String,
    pub created: String,
    pub consent: Vec<(String, bool)>,
    /// Loyalty tier, spend to date, store visits, tags (their own and the rules').
    pub tier: String,
    pub spend: String,
    pub visit_count: String,
    pub tags: String,
    /// Install, platform, push token present, registered, revoked.
    pub devices: Vec<(String, String, String, String, String)>,
    /// Where, entered, exited, dwell, sources.
    pub visits: Vec<(String, String, String, String, String)>,
    /// Campaign, when.
    pub offers: Vec<(String, String)>,
    /// Tagged `staff`: test sends may go to them; and the change that toggles it.
    pub staff: bool,
    pub staff_patch: String,
    /// Each consent given or withdrawn, newest first: when, channel, given or withdrawn, how,
    /// the text's version.
    pub consent_history: Vec<(String, String, String, String, String)>,
}

#[derive(Template)]
#[template(path = "customers.html")]
struct CustomersPage {
    t: Words,
    nav: Nav,
    /// What erasing the customer shown removes, asked before it is.
    erase_confirm: String,
    query: String,
    error: Option<String>,
    customer: Option<CustomerView>,
}

#[derive(Deserialize)]
pub(super) struct Lookup {
    id: Option<String>,
}

/// The customer `query` names, trying it as each id staff may hold, in this order: customer
/// id, member number, LINE user id, install id ([`crate::identity::find`]), coupon code.
fn find_customer(state: &AppState, query: &str) -> Result<Option<String>, ApiError> {
    let store = state.store.as_ref();
    if let Some(id) = crate::identity::find(store, query)? {
        return Ok(Some(id));
    }
    let coupon = crate::delivery::coupon_key(query);
    if let Some(delivery) =
        crate::store::Store::get(store, crate::store::Space::Campaigns, coupon.as_bytes())?
    {
        let id = String::from_utf8_lossy(&delivery);
        if let Some((d, _)) = crate::delivery::read(store, &id)? {
            return Ok(Some(d.customer));
        }
    }
    Ok(None)
}

/// Whether the customer's own `tags` make them a staff test device, and the PATCH body that
/// gives or takes that tag (their other tags kept).
fn staff_toggle(tags: &Value) -> (bool, String) {
    let staff_tag = crate::campaigns::test_send::STAFF_TAG;
    let mut own: std::collections::BTreeSet<String> = tags
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str().map(str::to_owned))
        .collect();
    let staff = own.contains(staff_tag);
    if staff {
        own.remove(staff_tag);
    } else {
        own.insert(staff_tag.to_owned());
    }
    (staff, serde_json::json!({ "tags": own }).to_string())
}

/// A customer's consent records in words, newest first.
fn consent_history(t: &Words, records: &Value) -> Vec<(String, String, String, String, String)> {
    let mut rows: Vec<(String, String, String, String, String, String)> = records
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                when(t, &r["at"]),
                t.s(&format!("consent.{}", text(&r["channel"]))),
                t.s(if r["granted"] == Value::Bool(true) {
                    "consent.given"
                } else {
                    "consent.withdrawn"
                }),
                t.s(&format!("consent.source.{}", text(&r["source"]))),
                text(&r["text_version"]),
                r["at"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    // Newest first by when it was given or withdrawn (a late record may be older).
    rows.sort_by(|a, b| b.5.cmp(&a.5));
    rows.into_iter()
        .map(|(a, b, c, d, e, _)| (a, b, c, d, e))
        .collect()
}

/// Visits and offers shown on a customer's page at most.
const CUSTOMER_ROWS: usize = 100;

fn customer_view(state: &AppState, t: &Words, id: &str) -> Result<CustomerView, ApiError> {
    let c = crate::http::admin::customer_document(state, id)?;
    let (tier, spend, visit_count, tags) = loyalty(state, t, id, &c["tags"])?;
    let consent = ["line", "push", "webhook", "location"]
        .into_iter()
        .map(|ch| {
            (
                t.s(&format!("consent.{ch}")),
                c["consent"][ch] == Value::Bool(true),
            )
        })
        .collect();
    let devices = c["installs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            (
                text(&i["id"]),
                text(&i["platform"]),
                t.s(if i["push_token"].is_string() {
                    "yes"
                } else {
                    "no"
                }),
                when(t, &i["created"]),
                when(t, &i["revoked"]),
            )
        })
        .collect();
    let visits = crate::visits::visits_of_customer(state.store.as_ref(), id, CUSTOMER_ROWS)?
        .into_iter()
        .map(|v| {
            let scope = serde_json::to_value(&v.scope).unwrap_or(Value::Null);
            (
                format!(
                    "{} {}",
                    t.s(&format!("zone.kind.{}", text(&scope["kind"]))),
                    text(&scope["id"])
                ),
                t.time(&v.entered),
                v.exited
                    .as_ref()
                    .map_or_else(|| t.s("customer.still_there"), |x| t.time(x)),
                v.dwell_s.map_or("—".into(), |d| t.minutes(d)),
                v.sources
                    .iter()
                    .filter_map(|s| serde_json::to_value(s).ok()?.as_str().map(str::to_owned))
                    .map(|s| t.s(&format!("source.{s}")))
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        })
        .collect();
    let offers = crate::http::admin::offers_of(state, id)?
        .iter()
        .take(CUSTOMER_ROWS)
        .map(|o| (text(&o["campaign"]), when(t, &o["at"])))
        .collect();
    let (staff, staff_patch) = staff_toggle(&c["tags"]);
    Ok(CustomerView {
        staff,
        staff_patch,
        consent_history: consent_history(t, &c["consent_records"]),
        id: text(&c["id"]),
        member: text(&c["member_id"]),
        line: if c["line_user"].is_string() {
            t.s("customer.line_linked")
        } else {
            "—".into()
        },
        created: when(t, &c["created"]),
        tier,
        spend,
        visit_count,
        tags,
        consent,
        devices,
        visits,
        offers,
    })
}

pub(super) async fn customers_page(
    v: Viewer,
    State(state): State<AppState>,
    Query(q): Query<Lookup>,
) -> Result<Response, ApiError> {
    if !v.operator() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "customers are shown to operators only",
        ));
    }
    let query = q.id.unwrap_or_default().trim().to_owned();
    let (customer, error) = if query.is_empty() {
        (None, None)
    } else {
        let st = state.clone();
        let id = query.clone();
        let t = v.t;
        let found = tokio::task::spawn_blocking(move || match find_customer(&st, &id)? {
            Some(customer) => customer_view(&st, &t, &customer),
            None => Err(ApiError::not_found(format!("customer {id}"))),
        });
        match found.await {
            Ok(Ok(c)) => (Some(c), None),
            Ok(Err(e)) if e.status == StatusCode::NOT_FOUND => {
                (None, Some(v.t.f("customer.not_found", &[&query])))
            }
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(ApiError::internal(e)),
        }
    };
    let erase_confirm = customer.as_ref().map_or_else(String::new, |c| {
        let who = if c.member == "—" { &c.id } else { &c.member };
        v.t.f(
            "customer.erase.confirm",
            &[
                who,
                &v.t.int(c.devices.len() as u64),
                &v.t.int(c.visits.len() as u64),
                &v.t.int(c.offers.len() as u64),
            ],
        )
    });
    Ok(html(&CustomersPage {
        erase_confirm,
        nav: Nav::new(&state, &v, Section::Customers, v.t.s("nav.customers")),
        query,
        error,
        customer,
        t: v.t,
    }))
}

/// A customer's tier, spend to date, store visits and tags (their own, `own_tags`, and the
/// rules'), from their profile.
fn loyalty(
    state: &AppState,
    t: &Words,
    id: &str,
    own_tags: &Value,
) -> Result<(String, String, String, String), ApiError> {
    let now_ms = state.clock.now().timestamp_millis();
    let profile = crate::profiles::read(state.store.as_ref(), id)?
        .unwrap_or_else(|| crate::profiles::Profile::new(id));
    let mut tags: std::collections::BTreeSet<String> = own_tags
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str().map(str::to_owned))
        .collect();
    tags.extend(profile.tags.iter().cloned());
    let spend = t.amounts(
        profile
            .spend
            .iter()
            .map(|(currency, s)| (currency, s.store + s.online)),
    );
    Ok((
        profile.tier(&state.config.profiles, now_ms),
        spend,
        t.int(profile.visits),
        if tags.is_empty() {
            "—".into()
        } else {
            tags.into_iter().collect::<Vec<_>>().join(", ")
        },
    ))
}
