//! A send's delivery row as the decision stage builds it: its id, retry key, coupon code and
//! tracked link all derive from the trigger key (keyed by the server secret), so a replay
//! builds the same row.

use std::collections::{BTreeMap, BTreeSet};

use super::super::definition::Campaign;
use super::{Inputs, Place};
use crate::delivery::{self, Delivery, DeliveryChannel, Status};
use crate::identity;
use crate::secrets::keyed;
use crate::store::{Space, Store, StoreError};

/// A UUID-shaped key (LINE's `X-Line-Retry-Key` must be a UUID).
fn uuid_from(bytes: &[u8; 32]) -> String {
    let mut b = [0u8; 16];
    b.copy_from_slice(&bytes[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// A coupon code: ten characters from an alphabet without look-alikes.
fn coupon(bytes: &[u8; 32]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    bytes[..10]
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

/// The bytes a send's delivery id (and its coupon and link) derive from: trigger `key`'s send
/// on `channel`.
fn id_bytes(secret: &[u8; 32], key: &str, channel: DeliveryChannel) -> [u8; 32] {
    keyed(secret, &["delivery", key, &format!("{channel:?}")])
}

/// The `n`th coupon code a delivery may take.
fn nth_coupon(secret: &[u8; 32], id_bytes: &[u8; 32], n: u32) -> String {
    coupon(&keyed(
        secret,
        &["coupon", &hex::encode(id_bytes), &n.to_string()],
    ))
}

/// The coupon key a send of trigger `key` on `channel` reads first (for reading it ahead).
pub(super) fn first_coupon_key(secret: &[u8; 32], key: &str, channel: DeliveryChannel) -> String {
    delivery::coupon_key(&nth_coupon(secret, &id_bytes(secret, key, channel), 0))
}

/// The delivery's coupon code: derived from its id, with a counter when (rarely: 50 bits) the
/// code is already taken by another delivery.
fn unused_coupon(
    store: &dyn Store,
    taken: &BTreeSet<String>,
    secret: &[u8; 32],
    id_bytes: &[u8; 32],
) -> Result<String, StoreError> {
    for n in 0u32.. {
        let code = nth_coupon(secret, id_bytes, n);
        if !taken.contains(&code)
            && store
                .get(Space::Campaigns, delivery::coupon_key(&code).as_bytes())?
                .is_none()
        {
            return Ok(code);
        }
    }
    unreachable!("some counter gives an unused code")
}

/// The keys a send's ids derive from and where its tracked links lead (the stage's
/// [`Inputs`], or a test send's).
#[derive(Clone, Copy)]
pub struct Keys<'a> {
    pub secret: &'a [u8; 32],
    pub link_base: Option<&'a str>,
}

impl<'a> Keys<'a> {
    pub(super) fn of(inputs: &'a Inputs) -> Keys<'a> {
        Keys {
            secret: &inputs.secret,
            link_base: inputs.link_base.as_deref(),
        }
    }
}

/// The delivery of a send of `campaign`'s `variant` on `channel` for trigger `key`, to
/// `customer` at `place`, decided at `decided_ms` for a trigger at `at_ms` (its time to live
/// counts from then), its coupon none of `taken` (the codes this step gave already).
pub(in crate::campaigns) fn delivery(
    (store, keys, taken): (&dyn Store, Keys<'_>, &BTreeSet<String>),
    (key, campaign, variant, channel): (&str, &Campaign, &str, DeliveryChannel),
    (customer, place): (&identity::Customer, &Place),
    (decided_ms, at_ms): (i64, i64),
) -> Result<Delivery, StoreError> {
    let id_bytes = id_bytes(keys.secret, key, channel);
    let template = campaign
        .variants
        .iter()
        .find(|v| v.id == variant)
        .map(|v| v.template.clone());
    let code = unused_coupon(store, taken, keys.secret, &id_bytes)?;
    let name = customer
        .attributes
        .get("name")
        .and_then(|n| n.as_str())
        .unwrap_or_default()
        .to_owned();
    // A tracked link, unique per delivery and unguessable (128 keyed bits).
    let link = template.as_ref().and_then(|tpl| tpl.link.clone());
    let click = link
        .as_ref()
        .map(|_| hex::encode(&keyed(keys.secret, &["click", &hex::encode(id_bytes)])[..16]));
    let tracked = match (&click, keys.link_base) {
        (Some(token), Some(base)) => format!("{}/r/{token}", base.trim_end_matches('/')),
        _ => String::new(),
    };
    let values = BTreeMap::from([
        ("name", name),
        ("store", place.name.clone()),
        ("coupon", code.clone()),
        ("link", tracked),
    ]);
    Ok(Delivery {
        id: hex::encode(&id_bytes[..16]),
        trigger_key: key.to_owned(),
        retry_key: uuid_from(&id_bytes),
        campaign: campaign.id.clone(),
        variant: variant.to_owned(),
        channel,
        customer: customer.id.clone(),
        store: place.id.clone(),
        text: template
            .as_ref()
            .map(|tpl| tpl.render(&values))
            .unwrap_or_default(),
        flex: template.and_then(|tpl| tpl.render_flex(&values)),
        coupon: code,
        decided_ms,
        expires_ms: at_ms + i64::from(campaign.offer_ttl_minutes) * 60_000,
        status: Status::Pending,
        attempts: 0,
        first_attempt_ms: None,
        last_attempt_ms: None,
        done_ms: None,
        reason: None,
        link,
        click,
        test: false,
    })
}
