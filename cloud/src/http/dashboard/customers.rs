//! The customers' page: a customer looked up by id, with their consent, visits and offers.

use super::*;

/// One customer as the operator's page shows them.
pub struct CustomerView {
    pub id: String,
    pub member: String,
    pub line: String,
    pub created: String,
    pub consent: Vec<(&'static str, bool)>,
    /// Install, platform, push token present, registered, revoked.
    pub devices: Vec<(String, String, &'static str, String, String)>,
    /// Where, entered, exited, dwell, sources.
    pub visits: Vec<(String, String, String, String, String)>,
    /// Campaign, when.
    pub offers: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "customers.html")]
struct CustomersPage {
    nav: Nav,
    query: String,
    error: Option<String>,
    customer: Option<CustomerView>,
}

#[derive(Deserialize)]
pub(super) struct Lookup {
    id: Option<String>,
}

/// Visits and offers shown on a customer's page at most.
const CUSTOMER_ROWS: usize = 100;

fn customer_view(state: &AppState, id: &str) -> Result<CustomerView, ApiError> {
    let c = crate::http::admin::customer_document(state, id)?;
    let consent = ["line", "push", "webhook", "location"]
        .into_iter()
        .map(|ch| (ch, c["consent"][ch] == Value::Bool(true)))
        .collect();
    let devices = c["installs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            (
                text(&i["id"]),
                text(&i["platform"]),
                if i["push_token"].is_string() {
                    "yes"
                } else {
                    "no"
                },
                text(&i["created"]),
                text(&i["revoked"]),
            )
        })
        .collect();
    let visits = crate::visits::visits_of_customer(state.store.as_ref(), id, CUSTOMER_ROWS)?
        .into_iter()
        .map(|v| {
            let scope = serde_json::to_value(&v.scope).unwrap_or(Value::Null);
            (
                format!("{} {}", text(&scope["kind"]), text(&scope["id"])),
                v.entered.to_string(),
                v.exited.map_or("open".into(), |t| t.to_string()),
                v.dwell_s.map_or("—".into(), |d| format!("{} min", d / 60)),
                v.sources
                    .iter()
                    .filter_map(|s| serde_json::to_value(s).ok()?.as_str().map(str::to_owned))
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        })
        .collect();
    let offers = crate::http::admin::offers_of(state, id)?
        .iter()
        .take(CUSTOMER_ROWS)
        .map(|o| (text(&o["campaign"]), text(&o["at"])))
        .collect();
    Ok(CustomerView {
        id: text(&c["id"]),
        member: text(&c["member_id"]),
        line: if c["line_user"].is_string() {
            "linked".into()
        } else {
            "—".into()
        },
        created: text(&c["created"]),
        consent,
        devices,
        visits,
        offers,
    })
}

pub(super) async fn customers_page(
    s: Session,
    State(state): State<AppState>,
    Query(q): Query<Lookup>,
) -> Result<Response, ApiError> {
    if s.role != Role::Operator {
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
        match tokio::task::spawn_blocking(move || customer_view(&st, &id)).await {
            Ok(Ok(c)) => (Some(c), None),
            Ok(Err(e)) if e.status == StatusCode::NOT_FOUND => {
                (None, Some(format!("No customer {query}.")))
            }
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(ApiError::internal(e)),
        }
    };
    Ok(html(&CustomersPage {
        nav: Nav::new(&state, &s, "Customers"),
        query,
        error,
        customer,
    }))
}
