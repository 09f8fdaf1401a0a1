//! Test sends (`POST /v1/admin/campaigns/{id}/test`): a campaign's messages sent now to the
//! staff's own phones — customers an operator tagged [`STAFF_TAG`], never anyone else —
//! through the real channels, as the decision stage would build them (`{name}`, `{store}`, a
//! coupon code, a tracked link), whatever the campaign's state, audience, schedule and caps.
//! They are delivery rows marked `test`: the worker sends them like any other, but they count in
//! no funnel, report or tally, their coupons are not taken at the till, and they are listed
//! apart, by campaign ([`recent`]).

use std::collections::BTreeSet;

use serde::Serialize;

use super::definition::Campaign;
use super::stage::offer;
pub use super::stage::offer::Keys;
use super::stage::reads::{customer_view, Place, Places, Segments};
use crate::delivery::{self, Delivery, DeliveryChannel};
use crate::profiles::{self, ProfileParams};
use crate::registry::Registry;
use crate::store::{Commit, Space, Store, StoreError};

/// The tag that makes a customer one of the staff's test devices (an operator gives it).
pub const STAFF_TAG: &str = "staff";

/// Messages one test send may make at most (customers × variants).
pub const MAX_SENDS: usize = 20;

/// Whether test sends may go to `customer`.
pub fn is_test_device(customer: &crate::identity::Customer) -> bool {
    customer.tags.contains(STAFF_TAG)
}

/// Test sends listed per campaign at most, and how far back.
pub const RECENT: usize = 20;
pub const RECENT_DAYS: i64 = 30;

/// What a test send asks.
pub struct Asked<'a> {
    /// Customer ids, each found by [`crate::identity::find`] beforehand (each once).
    pub customers: &'a [String],
    /// One variant, or every one of the campaign's.
    pub variant: Option<&'a str>,
    /// The store named in the message (`{store}`); else the campaign's first.
    pub store: Option<&'a str>,
}

/// What became of one customer's test send.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    pub customer: String,
    pub variant: String,
    /// The channel it goes on (the campaign's first that reaches the customer), or none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<DeliveryChannel>,
    /// Its delivery, waiting for the worker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<String>,
    /// Why there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// Why a test send cannot be made at all, by field.
#[derive(Debug)]
pub enum Refused {
    Field(&'static str, String),
    Store(StoreError),
}

impl From<StoreError> for Refused {
    fn from(e: StoreError) -> Self {
        Refused::Store(e)
    }
}

/// The place `{store}` names: the one asked for, else the campaign's first store (or the store
/// of its first zone), else the online shop.
fn place_of<'a>(
    places: &'a Places,
    campaign: &Campaign,
    asked: Option<&str>,
) -> Result<&'a Place, Refused> {
    if let Some(s) = asked {
        return places
            .stores
            .get(s)
            .ok_or_else(|| Refused::Field("store", format!("{s:?} is not a registered store")));
    }
    let first = campaign
        .places
        .stores
        .iter()
        .chain(
            campaign
                .places
                .zones
                .iter()
                .filter_map(|z| places.zone_store.get(z)),
        )
        .find_map(|s| places.stores.get(s));
    Ok(first.unwrap_or_else(|| places.online()))
}

/// The commit that queues `campaign`'s test sends to `asked` at `now_ms`, and what each came
/// to. Each send is a delivery of its own (ids from a fresh random key), sent on the first of
/// the campaign's channels the customer consented to and can be reached on.
pub fn prepare(
    (store, registry, params): (&dyn Store, &Registry, &ProfileParams),
    keys: Keys<'_>,
    campaign: &Campaign,
    asked: &Asked<'_>,
    now_ms: i64,
) -> Result<(Commit, Vec<Outcome>), Refused> {
    let variants: Vec<&str> = match asked.variant {
        Some(v) if campaign.variants.iter().any(|x| x.id == v) => vec![v],
        Some(v) => {
            return Err(Refused::Field(
                "variant",
                format!("{v:?} is not a variant of this campaign"),
            ))
        }
        None => campaign.variants.iter().map(|v| v.id.as_str()).collect(),
    };
    if asked.customers.len() * variants.len() > MAX_SENDS {
        return Err(Refused::Field(
            "customers",
            format!(
                "at most {MAX_SENDS} messages a test: {} customers × {} messages",
                asked.customers.len(),
                variants.len()
            ),
        ));
    }
    let places = Places::new(registry);
    let place = place_of(&places, campaign, asked.store)?;
    let segments = Segments {
        params,
        rules: profiles::rules(store)?,
        places: &places,
    };
    let mut c = Commit::new();
    let mut taken = BTreeSet::new();
    let mut outcomes = Vec::new();
    for id in asked.customers {
        let found = customer_view(store, id, &segments, now_ms)?;
        let Some((view, customer, _)) = found.filter(|(_, c, _)| is_test_device(c)) else {
            outcomes.push(Outcome {
                customer: id.clone(),
                variant: String::new(),
                channel: None,
                delivery: None,
                skipped: Some(NOT_A_TEST_DEVICE.into()),
            });
            continue;
        };
        let channel = campaign
            .channels
            .iter()
            .copied()
            .find(|ch| view.reachable.contains(ch));
        for variant in &variants {
            let mut outcome = Outcome {
                customer: id.clone(),
                variant: (*variant).to_owned(),
                channel,
                delivery: None,
                skipped: None,
            };
            match channel {
                None => outcome.skipped = Some(unreachable(&campaign.channels)),
                Some(ch) => {
                    let key = format!("test/{}", hex::encode(rand::random::<[u8; 16]>()));
                    let mut d = offer::delivery(
                        (store, keys, &taken),
                        (&key, campaign, variant, ch),
                        (&customer, place),
                        (now_ms, now_ms),
                    )?;
                    d.test = true;
                    taken.insert(d.coupon.clone());
                    delivery::enqueue(&mut c, &d);
                    outcome.delivery = Some(d.id);
                }
            }
            outcomes.push(outcome);
        }
    }
    Ok((c, outcomes))
}

/// Why an id gets no test send: unknown, erased or not tagged (the same words for each, so a
/// test send tells nobody whether a customer exists).
pub const NOT_A_TEST_DEVICE: &str =
    "no staff test device has this id (an operator tags the staff's own customer record \"staff\")";

/// Why a customer gets no test send.
fn unreachable(channels: &[DeliveryChannel]) -> String {
    let names: Vec<&str> = channels
        .iter()
        .map(|c| match c {
            DeliveryChannel::Line => "LINE",
            DeliveryChannel::Push => "push",
            DeliveryChannel::Webhook => "webhook",
        })
        .collect();
    format!(
        "not reachable on the campaign's channels ({}): no consent or no address",
        names.join(", ")
    )
}

/// `campaign`'s test sends of the last [`RECENT_DAYS`] before `now_ms`, newest first,
/// [`RECENT`] at most (read from the index's end).
pub fn recent(store: &dyn Store, campaign: &str, now_ms: i64) -> Result<Vec<Delivery>, StoreError> {
    let since = delivery::test_index_key(campaign, now_ms - RECENT_DAYS * 86_400_000, "");
    let mut end = crate::store::prefix_end(delivery::keys::test_prefix(campaign).as_bytes())
        .expect("a prefix ending in '/'");
    let mut sends = Vec::new();
    while sends.len() < RECENT {
        let Some((key, _)) = store.last_before(Space::Campaigns, &end)? else {
            break;
        };
        if key.as_slice() < since.as_bytes() {
            break;
        }
        if let Some((d, _)) = delivery::keys::indexed_id(&key)
            .map(|id| delivery::read(store, id))
            .transpose()?
            .flatten()
        {
            sends.push(d);
        }
        end = key;
    }
    Ok(sends)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaigns::redemptions::{self, Redeeming};
    use crate::campaigns::stage::tests::{rows, setup};
    use crate::campaigns::stored;
    use crate::delivery::Status;
    use crate::identity::{new_customer, save_customer};
    use crate::registry::Registry;
    use crate::store::barrier::scan_all;
    use crate::store::testing::places;

    const AT: i64 = 1_795_000_000_000;

    #[test]
    fn a_test_send_reaches_each_customer_by_variant_and_counts_nowhere() {
        for place in places() {
            let (store, aki, inputs) = setup(&place, |d| {
                d["variants"] = serde_json::json!([
                    {"id": "a", "weight": 1, "template": {"text": "Hi {name} at {store}: {coupon}", "link": "https://brand.example.com/x"}},
                    {"id": "b", "weight": 1, "template": {"text": "B {coupon}"}},
                ]);
            });
            // Aki's phone is a staff test device; Ren's too, but Ren consented to nothing; Sora
            // is a customer like any other (consented, reachable, not staff).
            let (before, bytes) = crate::identity::customer_record(&store, &aki.id)
                .unwrap()
                .unwrap();
            let mut tagged = before.clone();
            tagged.tags.insert(STAFF_TAG.into());
            store
                .commit(save_customer(&store, Some((&before, &bytes)), &tagged).unwrap())
                .unwrap();
            let mut ren = new_customer("2026-11-01T00:00:00.000Z".parse().unwrap());
            ren.tags.insert(STAFF_TAG.into());
            store
                .commit(save_customer(&store, None, &ren).unwrap())
                .unwrap();
            let mut sora = new_customer("2026-11-01T00:00:00.000Z".parse().unwrap());
            sora.line_user = Some("U-sora".into());
            sora.consent.line = true;
            store
                .commit(save_customer(&store, None, &sora).unwrap())
                .unwrap();
            let campaign = stored::all(&store).unwrap().remove(0).campaign;
            let registry: Registry = inputs.registry.read().unwrap().clone();
            let keys = Keys {
                secret: &inputs.secret,
                link_base: inputs.link_base.as_deref(),
            };
            let customers = [aki.id.clone(), ren.id.clone(), sora.id.clone()];
            let asked = Asked {
                customers: &customers,
                variant: None,
                store: None,
            };
            let (commit, outcomes) = prepare(
                (&store, &registry, &inputs.profiles),
                keys,
                &campaign,
                &asked,
                AT,
            )
            .unwrap();
            store.commit(commit).unwrap();
            assert_eq!(outcomes.len(), 5);
            assert!(outcomes
                .iter()
                .any(|o| o.customer == sora.id && o.skipped.as_deref() == Some(NOT_A_TEST_DEVICE)));
            let sent: Vec<_> = outcomes.iter().filter(|o| o.delivery.is_some()).collect();
            assert_eq!(sent.len(), 2, "{outcomes:?}");
            assert!(sent
                .iter()
                .all(|o| o.customer == aki.id && o.channel == Some(DeliveryChannel::Line)));
            assert!(outcomes.iter().filter(|o| o.customer == ren.id).all(|o| o
                .skipped
                .as_deref()
                .is_some_and(|s| s.contains("LINE, push"))));

            let ds: Vec<Delivery> = rows(&store, "delivery/")
                .into_iter()
                .map(|v| serde_json::from_value(v).unwrap())
                .collect();
            assert_eq!(ds.len(), 2);
            let a = ds.iter().find(|d| d.variant == "a").unwrap();
            assert!(a.test && a.status == Status::Pending);
            assert!(a.text.starts_with("Hi Aki at Shibuya: "), "{}", a.text);
            assert!(a.text.contains(&a.coupon));
            assert!(a.click.is_some());
            // Listed apart, newest first; in no store's index.
            let keys_now: Vec<String> = scan_all(&store, Space::Campaigns)
                .unwrap()
                .into_iter()
                .map(|(k, _)| String::from_utf8(k).unwrap())
                .collect();
            assert!(!keys_now.iter().any(|k| k.starts_with("by-store/")));
            assert_eq!(recent(&store, &campaign.id, AT + 1).unwrap().len(), 2);
            assert!(recent(&store, &campaign.id, AT + 31 * 86_400_000)
                .unwrap()
                .is_empty());

            // Its link leads on without a click counted; its coupon is not taken at the till.
            let token = a.click.clone().unwrap();
            assert_eq!(
                delivery::click(&store, &token, AT + 6).unwrap().as_deref(),
                Some("https://brand.example.com/x")
            );
            assert!(store
                .get(Space::Campaigns, delivery::clicked_key(&a.id).as_bytes())
                .unwrap()
                .is_none());
            let refused = redemptions::prepare(
                &store,
                &registry,
                &Redeeming {
                    store: "s1",
                    code: &a.coupon,
                    at: omo_device_config::Timestamp::from_millis(AT + 7).unwrap(),
                    amount: None,
                    order_id: None,
                },
            );
            assert!(
                matches!(refused, Err(redemptions::Refused::Field("code", ref m)) if m.contains("test send")),
                "{:?}",
                refused.err()
            );
        }
    }

    #[test]
    fn an_unknown_variant_or_store_is_refused_by_field() {
        let place = &places()[0];
        let (store, aki, inputs) = setup(place, |_| {});
        let campaign = stored::all(&store).unwrap().remove(0).campaign;
        let registry: Registry = inputs.registry.read().unwrap().clone();
        let keys = Keys {
            secret: &inputs.secret,
            link_base: None,
        };
        let customers = [aki.id.clone()];
        for (variant, store_id, field) in [
            (Some("zz"), None, "variant"),
            (None, Some("nowhere"), "store"),
        ] {
            let asked = Asked {
                customers: &customers,
                variant,
                store: store_id,
            };
            match prepare(
                (&store, &registry, &inputs.profiles),
                keys,
                &campaign,
                &asked,
                AT,
            ) {
                Err(Refused::Field(f, _)) => assert_eq!(f, field),
                other => panic!("{:?}", other.map(|(_, o)| o)),
            }
        }
    }
}
