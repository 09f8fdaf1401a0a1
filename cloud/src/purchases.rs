//! Purchases from the stores' POS and from e-commerce, joined to the same customer id as the
//! visits (the online-meets-offline data): what was bought, where, when, by whom, and which
//! offer's coupon came with it.
//!
//! A purchase is identified by its channel, its store (store purchases) and the order id, so
//! the same order sent again is recognised (idempotent) and a different order under the same
//! id is refused. The customer is resolved from one reference — the brand's member id, a
//! device (an app install id or a beacon id the customer carries), a LINE user id, or a coupon
//! code from an offer — and a purchase nobody can be resolved for is kept without one (it still
//! counts for the store). A coupon attributes the purchase to its send.
//!
//! Keys in the purchases space: `purchase/{id}` the row; `by-customer/{customer}/{ms:016x}/{id}`,
//! `by-store/{store}/{ms:016x}/{id}` and `online/{ms:016x}/{id}` its indexes;
//! `tally/{place}/{hour:016x}` the store reports' tallies ([`crate::tallies::hours`]).

use omo_device_config::{BeaconId, StoreId, Timestamp};
use serde::{Deserialize, Serialize};

use crate::delivery::{self, Status};
use crate::identity;
use crate::store::{Commit, Space, Store, StoreError};
use crate::vocab::SaleChannel;

/// The largest line amount and quantity accepted (keeps sums finite and typos visible).
pub const MAX_AMOUNT: f64 = 1e9;
pub const MAX_QUANTITY: u32 = 100_000;
/// Lines per purchase at most.
pub const MAX_LINES: usize = 1000;
/// How far ahead of the service's clock a purchase may be stamped.
pub const MAX_FUTURE_MS: i64 = 5 * 60_000;

/// Who bought it, as the sender knows them: exactly one of these.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_id: Option<String>,
    /// An app install id (`i_…`) or a beacon id the customer carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line_user: Option<String>,
    /// A coupon code from an offer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coupon: Option<String>,
}

/// One line of a purchase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    pub sku: String,
    pub category: String,
    pub quantity: u32,
    /// The line's total, in the purchase's currency.
    pub amount: f64,
}

/// A purchase as the POS or the shop sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurchaseIn {
    pub order_id: String,
    pub channel: SaleChannel,
    /// The store it was bought in (store purchases only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    #[serde(default)]
    pub customer: CustomerRef,
    pub at: Timestamp,
    /// ISO 4217, such as `JPY`.
    pub currency: String,
    pub lines: Vec<Line>,
}

/// The offer a purchase's coupon came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attribution {
    pub coupon: String,
    pub delivery: String,
    pub campaign: String,
    pub variant: String,
}

/// A stored purchase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Purchase {
    pub id: String,
    #[serde(flatten)]
    pub sent: PurchaseIn,
    /// The customer it was resolved to (`None`: nobody known, or erased).
    pub customer_id: Option<String>,
    /// Which reference resolved it: `member_id`, `device`, `line_user` or `coupon`.
    pub resolved_by: Option<String>,
    pub total: f64,
    pub attributed: Option<Attribution>,
    pub received: Timestamp,
}

/// Why a purchase was refused: the field at fault and what is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PurchaseError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// The order id was recorded before with other content.
    #[error("order_id {0} was recorded before with other content")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreErrorText),
}

/// A store error as text (so the error stays comparable in tests).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct StoreErrorText(pub String);

impl From<StoreError> for PurchaseError {
    fn from(e: StoreError) -> PurchaseError {
        match e {
            StoreError::Conflict { .. } => {
                PurchaseError::Store(StoreErrorText("conflict; retry".into()))
            }
            other => PurchaseError::Store(StoreErrorText(other.to_string())),
        }
    }
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> PurchaseError {
    PurchaseError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

fn text_ok(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && !s.contains(['/', '\n', '\r'])
}

/// Checks every field of a purchase; `now_ms` is the service's clock.
pub fn validate(p: &PurchaseIn, now_ms: i64) -> Result<(), PurchaseError> {
    if !text_ok(&p.order_id, 128) {
        return Err(invalid(
            "order_id",
            "must be 1..=128 characters without '/' or line breaks",
        ));
    }
    match (p.channel, &p.store) {
        (SaleChannel::Store, None) => {
            return Err(invalid("store", "a store purchase names its store"))
        }
        (SaleChannel::Store, Some(s)) => {
            StoreId::new(s).map_err(|e| invalid("store", e.to_string()))?;
        }
        (SaleChannel::Online, Some(_)) => {
            return Err(invalid("store", "an online purchase has no store"))
        }
        (SaleChannel::Online, None) => {}
    }
    let c = &p.customer;
    let given = [&c.member_id, &c.device, &c.line_user, &c.coupon]
        .iter()
        .filter(|v| v.is_some())
        .count();
    if given > 1 {
        return Err(invalid(
            "customer",
            "give one of member_id, device, line_user, coupon",
        ));
    }
    for (field, v) in [
        ("customer.member_id", &c.member_id),
        ("customer.device", &c.device),
        ("customer.line_user", &c.line_user),
        ("customer.coupon", &c.coupon),
    ] {
        if v.as_deref().is_some_and(|v| !text_ok(v, 128)) {
            return Err(invalid(
                field,
                "must be 1..=128 characters without '/' or line breaks",
            ));
        }
    }
    if p.at.millis() > now_ms + MAX_FUTURE_MS {
        return Err(invalid("at", "is in the future"));
    }
    if p.currency.len() != 3 || !p.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(invalid("currency", "must be an ISO 4217 code such as JPY"));
    }
    if p.lines.is_empty() || p.lines.len() > MAX_LINES {
        return Err(invalid("lines", format!("must hold 1..={MAX_LINES} lines")));
    }
    for (i, l) in p.lines.iter().enumerate() {
        if !text_ok(&l.sku, 64) {
            return Err(invalid(
                format!("lines[{i}].sku"),
                "must be 1..=64 characters",
            ));
        }
        if !text_ok(&l.category, 64) {
            return Err(invalid(
                format!("lines[{i}].category"),
                "must be 1..=64 characters",
            ));
        }
        if l.quantity == 0 || l.quantity > MAX_QUANTITY {
            return Err(invalid(
                format!("lines[{i}].quantity"),
                format!("must be 1..={MAX_QUANTITY}"),
            ));
        }
        if !(0.0..=MAX_AMOUNT).contains(&l.amount) {
            return Err(invalid(
                format!("lines[{i}].amount"),
                "must be a number within 0..=1e9",
            ));
        }
    }
    Ok(())
}

/// The purchase's id: from its channel, store and order id, so the same order maps to the
/// same row.
pub fn purchase_id(p: &PurchaseIn) -> String {
    let who = match p.channel {
        SaleChannel::Store => format!("store\0{}", p.store.as_deref().unwrap_or_default()),
        SaleChannel::Online => "online".into(),
    };
    let h = crate::secrets::sha256_hex(format!("{who}\0{}", p.order_id).as_bytes());
    format!("p_{}", &h[..20])
}

/// A customer id and the reference that named it.
type Resolved = Option<(String, &'static str)>;

/// An identity index key read while resolving, with what it held: the commit expects it
/// unchanged (an erasure in between makes the purchase resolve again, to nobody).
type Read = Option<(String, Option<Vec<u8>>)>;

fn index(store: &dyn Store, key: String) -> Result<(Option<String>, Read), StoreError> {
    let held = store.get(Space::Identity, key.as_bytes())?;
    let id = held
        .as_ref()
        .map(|v| String::from_utf8_lossy(v).into_owned());
    Ok((id, Some((key, held))))
}

/// The customer a reference names, and the offer of a coupon.
fn resolve(
    store: &dyn Store,
    c: &CustomerRef,
) -> Result<(Resolved, Option<Attribution>, Read), PurchaseError> {
    if let Some(m) = &c.member_id {
        let (id, read) = index(store, identity::keys::member(m))?;
        return Ok((id.map(|id| (id, "member_id")), None, read));
    }
    if let Some(u) = &c.line_user {
        let (id, read) = index(store, identity::keys::line_user(u))?;
        return Ok((id.map(|id| (id, "line_user")), None, read));
    }
    if let Some(d) = &c.device {
        let (id, read) = if d.starts_with("i_") {
            let key = identity::keys::install(d);
            let held = store.get(Space::Identity, key.as_bytes())?;
            let id = identity::install(store, d)?.map(|i| i.customer);
            (id, Some((key, held)))
        } else {
            let beacon: BeaconId = d.parse().map_err(|e| {
                invalid(
                    "customer.device",
                    format!("neither an install id nor a beacon id: {e}"),
                )
            })?;
            index(store, identity::keys::beacon(&beacon.to_string()))?
        };
        return Ok((id.map(|id| (id, "device")), None, read));
    }
    if let Some(code) = &c.coupon {
        let Some(delivery_id) =
            store.get(Space::Campaigns, delivery::coupon_key(code).as_bytes())?
        else {
            return Err(invalid("customer.coupon", "no offer carries this code"));
        };
        let Some((d, _)) = delivery::read(store, &String::from_utf8_lossy(&delivery_id))? else {
            return Err(invalid("customer.coupon", "no offer carries this code"));
        };
        if d.status != Status::Delivered && d.attempts == 0 {
            return Err(invalid("customer.coupon", "its offer was never sent"));
        }
        let who = (!d.customer.is_empty()).then(|| (d.customer.clone(), "coupon"));
        // A test send's coupon names the customer but no campaign brought the purchase.
        if d.test {
            return Ok((who, None, None));
        }
        let attribution = Attribution {
            coupon: code.clone(),
            delivery: d.id,
            campaign: d.campaign,
            variant: d.variant,
        };
        return Ok((who, Some(attribution), None));
    }
    Ok((None, None, None))
}

/// What recording a purchase came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    /// Stored now, with the commit that stores it.
    New(Purchase, Commit),
    /// The same order was recorded before: that record.
    Again(Purchase),
}

/// Validates `p`, resolves its customer and builds the commit that stores it (or finds the
/// same order recorded before).
pub fn prepare(
    store: &dyn Store,
    p: PurchaseIn,
    now: Timestamp,
) -> Result<Recorded, PurchaseError> {
    validate(&p, now.millis())?;
    let id = purchase_id(&p);
    if let Some(bytes) = store.get(Space::Purchases, keys::row(&id).as_bytes())? {
        let earlier: Purchase = serde_json::from_slice(&bytes)
            .map_err(|e| PurchaseError::Store(StoreErrorText(format!("purchase {id}: {e}"))))?;
        // An erasure since cleared the customer reference: the same order otherwise.
        let erased =
            earlier.customer_id.is_none() && earlier.sent.customer == CustomerRef::default();
        let without_customer = PurchaseIn {
            customer: CustomerRef::default(),
            ..p.clone()
        };
        if earlier.sent == p || (erased && earlier.sent == without_customer) {
            return Ok(Recorded::Again(earlier));
        }
        return Err(PurchaseError::Conflict(p.order_id.clone()));
    }
    let (who, attributed, read) = resolve(store, &p.customer)?;
    let total = p.lines.iter().map(|l| l.amount).sum::<f64>();
    let at_ms = p.at.millis();
    let purchase = Purchase {
        id: id.clone(),
        customer_id: who.as_ref().map(|(c, _)| c.clone()),
        resolved_by: who.map(|(_, by)| by.to_owned()),
        total,
        attributed,
        received: now,
        sent: p,
    };
    let mut c = Commit::new();
    c.expect(Space::Purchases, keys::row(&id), None);
    if let Some((key, held)) = read {
        c.expect(Space::Identity, key, held);
    }
    c.put(
        Space::Purchases,
        keys::row(&id),
        serde_json::to_vec(&purchase).expect("purchases serialise"),
    );
    if let Some(customer) = &purchase.customer_id {
        c.put(
            Space::Purchases,
            keys::of_customer(customer, at_ms, &id),
            Vec::new(),
        );
    }
    c.put(
        Space::Purchases,
        keys::at_place(purchase.sent.store.as_deref(), at_ms, &id),
        Vec::new(),
    );
    let place = purchase
        .sent
        .store
        .as_ref()
        .map_or_else(|| "online".to_owned(), |s| s.to_string());
    crate::tallies::hours::add_purchase(
        store,
        &mut c,
        (&place, at_ms),
        (
            &purchase.sent.currency,
            total,
            purchase.customer_id.is_some(),
            purchase.attributed.as_ref().map(|a| a.campaign.as_str()),
        ),
    )?;
    Ok(Recorded::New(purchase, c))
}

fn load(
    store: &dyn Store,
    ids: impl IntoIterator<Item = String>,
) -> Result<Vec<Purchase>, StoreError> {
    let mut out = Vec::new();
    for id in ids {
        if let Some(b) = store.get(Space::Purchases, keys::row(&id).as_bytes())? {
            out.push(
                serde_json::from_slice(&b)
                    .map_err(|e| StoreError::Backend(format!("purchase {id}: {e}")))?,
            );
        }
    }
    Ok(out)
}

fn ids_under(
    store: &dyn Store,
    from: &str,
    to: &str,
    limit: usize,
) -> Result<Vec<String>, StoreError> {
    crate::store::ids_in_range(
        store,
        Space::Purchases,
        (from.as_bytes(), to.as_bytes()),
        limit,
    )
}

/// A customer's purchases, oldest first.
pub fn of_customer(
    store: &dyn Store,
    customer: &str,
    limit: usize,
) -> Result<Vec<Purchase>, StoreError> {
    let prefix = keys::customer_prefix(customer);
    let end = keys::customer_end(customer);
    load(store, ids_under(store, &prefix, &end, limit)?)
}

/// A store's purchases (`None`: online ones) made in `[from_ms, to_ms)`, oldest first.
pub fn in_range(
    store: &dyn Store,
    place: Option<&str>,
    (from_ms, to_ms): (i64, i64),
    limit: usize,
) -> Result<Vec<Purchase>, StoreError> {
    let prefix = keys::place_prefix(place);
    let from = format!("{prefix}{:016x}", from_ms.max(0));
    let to = format!("{prefix}{:016x}", to_ms.max(0));
    load(store, ids_under(store, &from, &to, limit)?)
}

/// Erasure: the purchases linked to the customer, or naming one of their references (member
/// id, LINE user, installs, beacons) though they resolved to nobody, lose the customer and the
/// reference (the purchases stay for the store's figures); returns how many.
pub fn unlink_customer(
    store: &dyn Store,
    customer: &str,
    refs: &[String],
) -> Result<usize, StoreError> {
    let theirs = |p: &Purchase| {
        let c = &p.sent.customer;
        p.customer_id.as_deref() == Some(customer)
            || [&c.member_id, &c.line_user, &c.device]
                .into_iter()
                .flatten()
                .any(|r| refs.contains(r))
    };
    let mut n = 0;
    let mut from = keys::PURCHASES.as_bytes().to_vec();
    loop {
        let page = crate::store::scan_prefix_from(
            store,
            Space::Purchases,
            keys::PURCHASES.as_bytes(),
            &from,
            1000,
        )?;
        let Some((last, _)) = page.last() else {
            return Ok(n);
        };
        from = last.clone();
        from.push(0);
        let mut c = Commit::new();
        for (k, v) in &page {
            let Ok(mut p) = serde_json::from_slice::<Purchase>(v) else {
                continue;
            };
            if !theirs(&p) {
                continue;
            }
            if let Some(linked) = &p.customer_id {
                c.delete(
                    Space::Purchases,
                    keys::of_customer(linked, p.sent.at.millis(), &p.id),
                );
            }
            p.customer_id = None;
            p.resolved_by = None;
            p.sent.customer = CustomerRef::default();
            c.put(
                Space::Purchases,
                k.clone(),
                serde_json::to_vec(&p).expect("purchases serialise"),
            );
            n += 1;
        }
        store.commit(c)?;
        if page.len() < 1000 {
            return Ok(n);
        }
    }
}

pub mod keys;
mod shop_keys;

pub use shop_keys::{is_shop_key, new_shop_key, revoke_shop_key, shop_key_ids};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sled_store::SledStore;

    const NOW: i64 = 1_795_000_000_000;

    fn ts(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms).unwrap()
    }

    fn purchase() -> PurchaseIn {
        PurchaseIn {
            order_id: "o-1".into(),
            channel: SaleChannel::Store,
            store: Some("s1".into()),
            customer: CustomerRef {
                member_id: Some("m1".into()),
                ..CustomerRef::default()
            },
            at: ts(NOW - 60_000),
            currency: "JPY".into(),
            lines: vec![
                Line {
                    sku: "latte-m".into(),
                    category: "coffee".into(),
                    quantity: 2,
                    amount: 960.0,
                },
                Line {
                    sku: "scone".into(),
                    category: "bakery".into(),
                    quantity: 1,
                    amount: 380.0,
                },
            ],
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            if let Ok(p) = serde_json::from_slice::<PurchaseIn>(&bytes) {
                let _ = validate(&p, NOW);
            }
        }

        #[test]
        fn quantities_and_amounts_pass_exactly_within_their_ranges(
            quantity in proptest::prelude::any::<u32>(),
            amount in proptest::prelude::any::<f64>(),
        ) {
            let mut p = purchase();
            p.lines[0].quantity = quantity;
            p.lines[0].amount = amount;
            let ok = (1..=MAX_QUANTITY).contains(&quantity) && (0.0..=MAX_AMOUNT).contains(&amount);
            proptest::prop_assert_eq!(validate(&p, NOW).is_ok(), ok);
        }
    }

    #[test]
    fn a_cut_off_purchase_is_refused_without_a_panic() {
        let text = serde_json::to_string(&purchase()).unwrap();
        for end in 0..text.len() {
            assert!(serde_json::from_str::<PurchaseIn>(&text[..end]).is_err());
        }
        assert!(serde_json::from_str::<PurchaseIn>(&text).is_ok());
    }

    #[test]
    fn every_bad_field_is_named() {
        type Change = Box<dyn Fn(&mut PurchaseIn)>;
        let cases: Vec<(&str, Change)> = vec![
            ("order_id", Box::new(|p| p.order_id = String::new())),
            ("store", Box::new(|p| p.store = None)),
            ("store", Box::new(|p| p.channel = SaleChannel::Online)),
            (
                "customer",
                Box::new(|p| p.customer.line_user = Some("U1".into())),
            ),
            ("at", Box::new(|p| p.at = ts(NOW + 3_600_000))),
            ("currency", Box::new(|p| p.currency = "yen".into())),
            ("lines", Box::new(|p| p.lines.clear())),
            ("lines[1].quantity", Box::new(|p| p.lines[1].quantity = 0)),
            ("lines[0].amount", Box::new(|p| p.lines[0].amount = -1.0)),
            (
                "lines[0].amount",
                Box::new(|p| p.lines[0].amount = f64::NAN),
            ),
            ("lines[1].sku", Box::new(|p| p.lines[1].sku = "a/b".into())),
        ];
        assert_eq!(validate(&purchase(), NOW), Ok(()));
        for (field, change) in cases {
            let mut p = purchase();
            change(&mut p);
            match validate(&p, NOW) {
                Err(PurchaseError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_same_order_is_recorded_once_and_another_under_its_id_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        let mut customer = identity::new_customer(ts(NOW));
        customer.member_id = Some("m1".into());
        store
            .commit(identity::save_customer(&store, None, &customer).unwrap())
            .unwrap();
        let Recorded::New(p, c) = prepare(&store, purchase(), ts(NOW)).unwrap() else {
            panic!("new");
        };
        store.commit(c).unwrap();
        assert_eq!(p.customer_id.as_deref(), Some(customer.id.as_str()));
        assert_eq!(p.resolved_by.as_deref(), Some("member_id"));
        assert_eq!(p.total, 1340.0);
        assert!(matches!(
            prepare(&store, purchase(), ts(NOW + 1000)).unwrap(),
            Recorded::Again(ref again) if *again == p
        ));
        let mut other = purchase();
        other.lines.pop();
        assert_eq!(
            prepare(&store, other, ts(NOW)),
            Err(PurchaseError::Conflict("o-1".into()))
        );
        // The same order id at another store, or online, is another order.
        let mut elsewhere = purchase();
        elsewhere.store = Some("s2".into());
        assert!(matches!(
            prepare(&store, elsewhere, ts(NOW)).unwrap(),
            Recorded::New(..)
        ));
        assert_eq!(
            of_customer(&store, &customer.id, 10).unwrap(),
            std::slice::from_ref(&p)
        );
        assert_eq!(
            in_range(&store, Some("s1"), (NOW - 3_600_000, NOW), 10).unwrap(),
            [p]
        );
        // Another purchase names the member but was recorded before the member was known.
        let mut unresolved = purchase();
        unresolved.order_id = "o-0".into();
        unresolved.customer.member_id = Some("m-later".into());
        let Recorded::New(_, c) = prepare(&store, unresolved.clone(), ts(NOW)).unwrap() else {
            panic!("new");
        };
        store.commit(c).unwrap();
        assert_eq!(
            unlink_customer(&store, &customer.id, &["m-later".to_owned()]).unwrap(),
            2
        );
        // The same order sent again after the erasure is still the same order.
        assert!(matches!(
            prepare(&store, purchase(), ts(NOW + 2000)).unwrap(),
            Recorded::Again(_)
        ));
        assert!(of_customer(&store, &customer.id, 10).unwrap().is_empty());
        let left = in_range(&store, Some("s1"), (NOW - 3_600_000, NOW), 10).unwrap();
        assert_eq!(
            (left[0].customer_id.as_ref(), &left[0].sent.customer),
            (None, &CustomerRef::default())
        );
    }

    #[test]
    fn an_unknown_customer_is_kept_without_one_and_an_unknown_coupon_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        let Recorded::New(p, _) = prepare(&store, purchase(), ts(NOW)).unwrap() else {
            panic!("new");
        };
        assert_eq!((p.customer_id, p.resolved_by), (None, None));
        let mut coupon = purchase();
        coupon.customer = CustomerRef {
            coupon: Some("NOSUCHCODE".into()),
            ..CustomerRef::default()
        };
        assert!(matches!(
            prepare(&store, coupon, ts(NOW)),
            Err(PurchaseError::Invalid { field, .. }) if field == "customer.coupon"
        ));
    }
}
