//! What a step's decisions will read, fetched before it decides: on an engine across a network
//! each is a round trip, so four calls for the whole step (after the two for its customers and
//! profiles) stand in for several per trigger. The keys are the ones the decisions then read
//! (`trigger_key`, `offer::first_coupon_key`, `reads::history_range`, the analysis link and
//! row): a key spelled otherwise here is not an error, only a read that goes to the store.

use std::collections::{BTreeMap, BTreeSet};

use super::reads::{history_range, HISTORY_MAX};
use super::{history_since, offer, trigger_key, Context};
use crate::campaigns::keys;
use crate::identity;
use crate::store::read_through::ReadThrough;
use crate::store::{Space, Store, StoreError};
use crate::visits::engine::Transition;

/// Reads ahead, for `transitions`: the decision keys of the campaigns each fires, the first
/// coupon key a send on each of its channels would take, and the customers' analysis links in
/// them and in the campaigns a store visit measures; the customers' caps histories; then the
/// rows those links name and the customers' installs (their records were read ahead before).
pub(super) fn decisions(
    ahead: &ReadThrough<'_>,
    cx: &Context<'_>,
    transitions: &[Transition],
) -> Result<(), StoreError> {
    let mut decisions = BTreeSet::new();
    let mut links = BTreeSet::new();
    let mut since: BTreeMap<&str, i64> = BTreeMap::new();
    for t in transitions {
        for k in cx.firing(t) {
            let id = &k.campaign.id;
            let key = trigger_key(&cx.inputs.secret, t, id);
            for channel in &k.campaign.channels {
                decisions.insert(offer::first_coupon_key(&cx.inputs.secret, &key, *channel));
            }
            decisions.insert(keys::decision(&key));
            links.insert((id.as_str(), t.customer.as_str()));
            let from = history_since(t);
            since
                .entry(t.customer.as_str())
                .and_modify(|s| *s = (*s).min(from))
                .or_insert(from);
        }
        for campaign in cx.measured_by(t) {
            links.insert((campaign, t.customer.as_str()));
        }
    }
    let link_keys: Vec<(String, Vec<u8>)> = links
        .iter()
        .map(|(c, who)| (c.to_string(), keys::analysis_link(c, who).into_bytes()))
        .collect();
    ahead.read_ahead(
        Space::Campaigns,
        decisions
            .into_iter()
            .map(String::into_bytes)
            .chain(link_keys.iter().map(|(_, k)| k.clone()))
            .collect(),
    )?;
    let histories = since
        .into_iter()
        .map(|(customer, from)| history_range(customer, from))
        .collect();
    ahead.read_ranges_ahead(Space::Campaigns, histories, HISTORY_MAX)?;
    let mut rows = Vec::new();
    for (campaign, link) in &link_keys {
        if let Some(id) = ahead.get(Space::Campaigns, link)? {
            rows.push(keys::analysis(campaign, &String::from_utf8_lossy(&id)).into_bytes());
        }
    }
    ahead.read_ahead(Space::Campaigns, rows)?;
    // The customers a decision or a measured visit reads (a record that cannot be read is
    // left to the decision that reads it, which says so).
    let customers: BTreeSet<&str> = links.iter().map(|(_, who)| *who).collect();
    let mut installs = Vec::new();
    for id in customers {
        if let Ok(Some((c, _))) = identity::customer_record(ahead, id) {
            installs.extend(
                c.installs
                    .iter()
                    .map(|i| identity::keys::install(i).into_bytes()),
            );
        }
    }
    ahead.read_ahead(Space::Identity, installs)
}
