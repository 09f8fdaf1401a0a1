//! What a decision reads besides its transition: the scope's store and time zone, the
//! customer as campaigns see them (tags, tier, reachable channels), their recent sends.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono_tz::Tz;

use super::super::decide::{CustomerView, PastSend};
use super::super::definition::Trigger as CampaignTrigger;
use super::super::stored::Versioned;
use crate::delivery::DeliveryChannel;
use crate::identity;
use crate::profiles::{self, ProfileParams};
use crate::registry::Registry;
use crate::store::{Space, Store, StoreError};
use crate::visits::engine::{Scope, TransitionKind};

/// A scope's store as decisions need it.
pub(in crate::campaigns) struct Place {
    pub id: String,
    pub tz: Tz,
    pub name: String,
}

/// Each scope's store. Built once per step.
pub(in crate::campaigns) struct Places {
    pub zone_store: HashMap<String, String>,
    pub stores: HashMap<String, Place>,
    /// The online shop (campaigns on online purchases name their time zone).
    online: Place,
}

impl Places {
    pub(in crate::campaigns) fn new(registry: &Registry) -> Places {
        Places {
            zone_store: registry
                .zones()
                .iter()
                .map(|z| (z.id().to_owned(), z.store().to_string()))
                .collect(),
            stores: registry
                .site()
                .stores
                .iter()
                .filter_map(|s| {
                    Some((
                        s.id.to_string(),
                        Place {
                            id: s.id.to_string(),
                            tz: crate::vocab::time_zone(&s.time_zone)?,
                            name: s.name.clone(),
                        },
                    ))
                })
                .collect(),
            online: Place {
                id: "online".into(),
                tz: Tz::UTC,
                name: "online".into(),
            },
        }
    }

    /// The online shop's place.
    pub(in crate::campaigns) fn online(&self) -> &Place {
        &self.online
    }

    pub(in crate::campaigns) fn store_of(&self, scope: &Scope) -> Option<&Place> {
        let store = match scope {
            Scope::Store(s) => s,
            Scope::Zone(z) => self.zone_store.get(z)?,
            Scope::Online => return Some(&self.online),
        };
        self.stores.get(store)
    }
}

pub(super) fn in_places(c: &Versioned, scope: &Scope) -> bool {
    match scope {
        Scope::Zone(z) => c.campaign.places.zones.contains(z),
        Scope::Store(s) => c.campaign.places.stores.contains(s),
        Scope::Online => c.campaign.places.online,
    }
}

/// Whether a transition fires a campaign's trigger (the Nth-visit count is checked apart).
pub(super) fn fires(trigger: &CampaignTrigger, kind: &TransitionKind) -> bool {
    matches!(
        (trigger, kind),
        (CampaignTrigger::Enter, TransitionKind::Enter)
            | (CampaignTrigger::Exit, TransitionKind::Exit { .. })
            | (CampaignTrigger::NthVisit { .. }, TransitionKind::Enter)
    ) || matches!((trigger, kind), (CampaignTrigger::Dwell { minutes: a }, TransitionKind::Dwell { minutes: b }) if a == b)
        || match (trigger, kind) {
            (
                CampaignTrigger::Purchase {
                    category,
                    min_total,
                    ..
                },
                TransitionKind::Purchase {
                    total, categories, ..
                },
            ) => {
                category.as_ref().is_none_or(|c| categories.contains(c))
                    && min_total.is_none_or(|m| *total >= m)
            }
            _ => false,
        }
}

/// What a step knows to evaluate profiles: the tiers, the tag rules and the stores' zones.
pub(in crate::campaigns) struct Segments<'a> {
    pub params: &'a ProfileParams,
    pub rules: BTreeMap<String, profiles::Rule>,
    pub places: &'a Places,
}

/// The customer as decisions see it at `at_ms`: their tags (their own and the rules'), tier,
/// attributes, and the channels they consented to and can be reached on; with the record and
/// its stored bytes.
pub(in crate::campaigns) fn customer_view(
    store: &dyn Store,
    id: &str,
    segments: &Segments<'_>,
    at_ms: i64,
) -> Result<Option<(CustomerView, identity::Customer, Vec<u8>)>, StoreError> {
    let Some((c, bytes)) = identity::customer_record(store, id)? else {
        return Ok(None);
    };
    let profile = profiles::read(store, id)?.unwrap_or_else(|| profiles::Profile::new(id));
    let tz_of = |s: &str| segments.places.stores.get(s).map(|p| p.tz);
    let mut tags = c.tags.clone();
    tags.extend(profile.tags(&segments.rules, segments.params, at_ms, &tz_of));
    let tier = profile.tier(segments.params, at_ms);
    let mut reachable = BTreeSet::new();
    if c.consent.line && c.line_user.is_some() {
        reachable.insert(DeliveryChannel::Line);
    }
    if c.consent.push {
        for i in &c.installs {
            if identity::install(store, i)?.is_some_and(|i| i.push_token.is_some()) {
                reachable.insert(DeliveryChannel::Push);
            }
        }
    }
    // The brand's webhook addresses the customer by the brand's own member id.
    if c.consent.webhook && c.member_id.is_some() {
        reachable.insert(DeliveryChannel::Webhook);
    }
    let view = CustomerView {
        id: c.id.clone(),
        tags,
        attributes: c.attributes.clone(),
        tier: Some(tier),
        reachable,
    };
    Ok(Some((view, c, bytes)))
}

/// The keys of `customer`'s caps history since `since_ms`: `[from, end)`.
pub(super) fn history_range(customer: &str, since_ms: i64) -> (Vec<u8>, Vec<u8>) {
    let prefix = super::super::keys::history_prefix(customer);
    let from = format!("{prefix}{:016x}", since_ms.max(0)).into_bytes();
    let end = crate::store::prefix_end(prefix.as_bytes()).expect("a prefix ending in '/'");
    (from, end)
}

/// The most sends of a customer's caps history read.
pub(super) const HISTORY_MAX: usize = 10_000;

/// The sends to `customer` since `since_ms` (its caps history: campaign and time), oldest
/// first, [`HISTORY_MAX`] at most.
pub fn history(
    store: &dyn Store,
    customer: &str,
    since_ms: i64,
) -> Result<Vec<PastSend>, StoreError> {
    let prefix = super::super::keys::history_prefix(customer);
    let (from, end) = history_range(customer, since_ms);
    store
        .scan_range(Space::Campaigns, &from, &end, HISTORY_MAX)?
        .into_iter()
        .map(|(k, _)| {
            let rest = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            let (at, campaign) = rest
                .split_once('/')
                .ok_or_else(|| StoreError::backend("history key", &rest))?;
            let at_ms =
                i64::from_str_radix(at, 16).map_err(|e| StoreError::backend("history key", e))?;
            Ok(PastSend {
                campaign: campaign.to_owned(),
                at_ms,
            })
        })
        .collect()
}

/// Every customer as decisions would see them at `at_ms`, read a thousand at a time (their
/// records and profiles fetched ahead in two round trips), handed to `visit` in id order.
pub fn every_customer_view(
    store: &dyn Store,
    registry: &Registry,
    params: &ProfileParams,
    at_ms: i64,
    mut visit: impl FnMut(&CustomerView),
) -> Result<(), StoreError> {
    let places = Places::new(registry);
    let segments = Segments {
        params,
        rules: profiles::rules(store)?,
        places: &places,
    };
    for chunk in identity::customer_ids(store)?.chunks(1000) {
        let ahead = crate::store::read_through::ReadThrough::new(store);
        ahead.read_ahead(
            Space::Identity,
            chunk
                .iter()
                .map(|c| identity::keys::customer(c).into_bytes())
                .collect(),
        )?;
        ahead.read_ahead(
            Space::Profiles,
            chunk
                .iter()
                .map(|c| profiles::keys::profile_key(c).into_bytes())
                .collect(),
        )?;
        for id in chunk {
            if let Some((view, _, _)) = customer_view(&ahead, id, &segments, at_ms)? {
                visit(&view);
            }
        }
    }
    Ok(())
}
