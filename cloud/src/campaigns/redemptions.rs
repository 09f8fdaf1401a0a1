//! A coupon redeemed at a store's till (`POST /v1/redemptions`): the code must exist, its
//! offer must have been delivered, and it must be valid at that store (one of its campaign's
//! stores); idempotent by code — the same code again from the same store answers the first
//! redemption. The redemption is attributed to its send.

use std::collections::BTreeSet;

use omo_device_config::Timestamp;
use serde::{Deserialize, Serialize};

use super::{report, stored};
use crate::delivery::{self, Status};
use crate::registry::Registry;
use crate::store::{Commit, Space, Store, StoreError};
use crate::tallies::funnel::Counts;

/// A customer's spend at most (keeps sums finite).
const MAX_SPEND: f64 = 1e12;

/// A stored redemption.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Redemption {
    pub code: String,
    pub delivery: String,
    pub campaign: String,
    pub variant: String,
    pub store: String,
    pub at: Timestamp,
    pub amount: Option<f64>,
    pub order_id: Option<String>,
}

/// The stores a campaign runs in (its stores and its zones' stores).
fn campaign_stores(
    store: &dyn Store,
    registry: &Registry,
    campaign: &str,
) -> Result<BTreeSet<String>, StoreError> {
    let Some((current, _)) = stored::current(store, campaign)? else {
        return Ok(BTreeSet::new());
    };
    let places = &current.campaign.places;
    Ok(places
        .stores
        .iter()
        .cloned()
        .chain(
            registry
                .zones()
                .iter()
                .filter(|z| places.zones.contains(z.id()))
                .map(|z| z.store().to_string()),
        )
        .collect())
}

/// A redemption to record, as the POS reported it.
#[derive(Debug, Clone)]
pub struct Redeeming<'a> {
    pub store: &'a str,
    pub code: &'a str,
    /// When it was redeemed.
    pub at: Timestamp,
    /// The purchase amount, in the store's currency.
    pub amount: Option<f64>,
    pub order_id: Option<&'a str>,
}

/// Why a redemption is refused.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// No offer carries the code.
    #[error("coupon code {0}")]
    UnknownCode(String),
    /// Another store redeemed the code before.
    #[error("code: already redeemed at store {0}")]
    Elsewhere(String),
    /// The request's field is not valid for this code.
    #[error("{0}: {1}")]
    Field(&'static str, String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What [`prepare`] found.
pub enum Prepared {
    /// Record it with this commit.
    New(Commit, Redemption),
    /// The same store redeemed this code before: that redemption.
    Again(Redemption),
}

/// Checks the code and builds the commit that records its redemption, attributed to its
/// send: the customer's analysis row counts it (and its amount), the campaign's funnel and
/// the store's counters too. The commit conflicts if another redemption of the campaign was
/// recorded meanwhile: prepare it again.
pub fn prepare(
    store: &dyn Store,
    registry: &Registry,
    req: &Redeeming,
) -> Result<Prepared, Refused> {
    let at = req.at;
    if let Some(bytes) = store.get(
        Space::Campaigns,
        delivery::keys::redemption_key(req.code).as_bytes(),
    )? {
        let earlier: Redemption =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::backend("redemption", e))?;
        if earlier.store == req.store {
            return Ok(Prepared::Again(earlier));
        }
        return Err(Refused::Elsewhere(earlier.store));
    }
    let id = store
        .get(Space::Campaigns, delivery::coupon_key(req.code).as_bytes())?
        .ok_or_else(|| Refused::UnknownCode(req.code.to_owned()))?;
    let (d, _) = delivery::read(store, &String::from_utf8_lossy(&id))?
        .ok_or_else(|| StoreError::Backend("a coupon without its delivery".into()))?;
    if d.test {
        return Err(Refused::Field(
            "code",
            "the coupon of a test send: it is not taken at the till".into(),
        ));
    }
    // A code shown at the till proves its message arrived, even when the answer to the
    // request that carried it was lost (a crash, a timeout) and the delivery then expired.
    if d.status != Status::Delivered && d.attempts == 0 {
        return Err(Refused::Field(
            "code",
            format!("its offer was never sent ({:?})", d.status).to_lowercase(),
        ));
    }
    if !campaign_stores(store, registry, &d.campaign)?.contains(req.store) {
        return Err(Refused::Field(
            "store",
            format!("the coupon is not valid at store {}", req.store),
        ));
    }
    if at.millis() < d.decided_ms {
        return Err(Refused::Field("at", "before the offer was made".into()));
    }
    let redemption = Redemption {
        code: req.code.to_owned(),
        delivery: d.id.clone(),
        campaign: d.campaign.clone(),
        variant: d.variant.clone(),
        store: req.store.to_owned(),
        at,
        amount: req.amount,
        order_id: req.order_id.map(str::to_owned),
    };
    let mut c = Commit::new();
    c.expect(
        Space::Campaigns,
        delivery::keys::redemption_key(req.code),
        None,
    );
    c.put(
        Space::Campaigns,
        delivery::keys::redemption_key(req.code),
        serde_json::to_vec(&redemption).expect("redemptions serialise"),
    );
    if let report::Linked::Row(key, mut row, bytes) =
        report::row_of(store, &d.campaign, &d.customer)?
    {
        row.redeemed += 1;
        row.spend = (row.spend + req.amount.unwrap_or(0.0)).min(MAX_SPEND);
        c.expect(Space::Campaigns, key.clone(), Some(bytes));
        c.put(
            Space::Campaigns,
            key,
            serde_json::to_vec(&row).expect("analysis rows serialise"),
        );
    }
    let mut counts = Counts::default();
    counts.add(&d.campaign, &d.variant, "redeemed");
    counts.add_counter(d.store_counter("redeemed"));
    counts.write(store, &mut c)?;
    Ok(Prepared::New(c, redemption))
}
