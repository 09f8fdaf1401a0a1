//! Who a campaign can reach, before it runs (`POST /v1/admin/campaigns/reach`, the composer's
//! live count): of every customer, those in its audience now, those of them reachable on each
//! of its channels (consented and addressable), and the channel each would be sent on — the
//! first of the campaign's channels that reaches them — with those no channel reaches.

use std::collections::BTreeMap;

use serde::Serialize;

use super::decide::in_audience;
use super::definition::Campaign;
use super::stage::every_customer_view;
use crate::delivery::DeliveryChannel;
use crate::profiles::ProfileParams;
use crate::registry::Registry;
use crate::store::{Store, StoreError};

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Reach {
    /// Every customer.
    pub customers: u64,
    /// In the campaign's audience (tags, attributes, tier) now.
    pub in_audience: u64,
    /// Of them, reachable on each of the campaign's channels.
    pub reachable: BTreeMap<DeliveryChannel, u64>,
    /// Of them, by the channel a send would use (the first that reaches them).
    pub sent_on: BTreeMap<DeliveryChannel, u64>,
    /// In the audience but on none of its channels.
    pub unreachable: u64,
}

impl Reach {
    /// Customers a send could reach.
    pub fn sendable(&self) -> u64 {
        self.sent_on.values().sum()
    }
}

/// `campaign`'s reach at `at_ms`.
pub fn reach(
    store: &dyn Store,
    registry: &Registry,
    params: &ProfileParams,
    campaign: &Campaign,
    at_ms: i64,
) -> Result<Reach, StoreError> {
    let mut r = Reach {
        reachable: campaign.channels.iter().map(|c| (*c, 0)).collect(),
        sent_on: campaign.channels.iter().map(|c| (*c, 0)).collect(),
        ..Reach::default()
    };
    every_customer_view(store, registry, params, at_ms, |c| {
        r.customers += 1;
        if !in_audience(&campaign.audience, c) {
            return;
        }
        r.in_audience += 1;
        for ch in &campaign.channels {
            if c.reachable.contains(ch) {
                *r.reachable.entry(*ch).or_default() += 1;
            }
        }
        match campaign.channels.iter().find(|ch| c.reachable.contains(ch)) {
            Some(ch) => *r.sent_on.entry(*ch).or_default() += 1,
            None => r.unreachable += 1,
        }
    })?;
    Ok(r)
}
