//! The analysis rows of the decision stage's measurement: a customer's row created at their
//! first eligible trigger in a campaign, marked when they come back.

use std::collections::{BTreeMap, BTreeSet};

use super::super::definition::Campaign;
use super::super::keys;
use super::super::report::{self, AnalysisRow};
use crate::identity;
use crate::store::{Commit, Space, Store, StoreError};
use crate::tallies::funnel::Counts;
use crate::tallies::hours as report_tally;
use crate::visits::engine::Transition;

/// The analysis rows a step reads and changes, written at its end: a customer's row created at
/// their first eligible trigger in a campaign — under a random pseudonym (the analysis id), so
/// erasing the customer deletes only the link and every report keeps its totals — and marked
/// when they come back.
#[derive(Default)]
pub(super) struct Analysis {
    /// Row key → the row and its stored bytes (None: created in this step).
    rows: BTreeMap<String, (AnalysisRow, Option<Vec<u8>>)>,
    /// Link key → its state (see [`Analysis::row_key`]), for links read or created in this
    /// step.
    links: BTreeMap<String, Option<Option<String>>>,
}

impl Analysis {
    /// The customer's link in `campaign`: Some(row key) when linked, Some(None) when linked
    /// to a row that cannot be used, None when not linked.
    fn row_key(
        &mut self,
        store: &dyn Store,
        campaign: &str,
        customer: &str,
    ) -> Result<Option<Option<String>>, StoreError> {
        let link = keys::analysis_link(campaign, customer);
        if let Some(k) = self.links.get(&link) {
            return Ok(k.clone());
        }
        let found = match report::row_of(store, campaign, customer)? {
            report::Linked::No => None,
            report::Linked::Unusable => Some(None),
            report::Linked::Row(key, row, bytes) => {
                self.rows.insert(key.clone(), (row, Some(bytes)));
                Some(Some(key))
            }
        };
        self.links.insert(link, found.clone());
        Ok(found)
    }

    /// Creates the row of a customer's first eligible trigger (nothing if they have one).
    pub(super) fn first_trigger(
        &mut self,
        store: &dyn Store,
        (campaign, customer): (&Campaign, &identity::Customer),
        (group, place): (&str, &str),
        t: &Transition,
    ) -> Result<(), StoreError> {
        if self.row_key(store, &campaign.id, &customer.id)?.is_some() {
            return Ok(());
        }
        let mut id = [0u8; 12];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut id);
        let key = keys::analysis(&campaign.id, &hex::encode(id));
        let mut platforms = BTreeSet::new();
        if customer.line_user.is_some() {
            platforms.insert("line".to_owned());
        }
        for i in &customer.installs {
            if let Some(install) = identity::install(store, i)? {
                platforms.insert(
                    match install.platform {
                        identity::Platform::Ios => "ios",
                        identity::Platform::Android => "android",
                    }
                    .to_owned(),
                );
            }
        }
        let row = AnalysisRow {
            group: group.to_owned(),
            first_trigger_ms: t.at_ms,
            visit: t.visit.clone(),
            window_end_ms: t.at_ms + i64::from(campaign.attribution_days) * 86_400_000,
            platforms,
            returned_ms: None,
            redeemed: 0,
            spend: 0.0,
            store: place.to_owned(),
        };
        self.links.insert(
            keys::analysis_link(&campaign.id, &customer.id),
            Some(Some(key.clone())),
        );
        self.rows.insert(key, (row, None));
        Ok(())
    }

    /// Marks the customer's row in `campaign` returned if `t` is a new visit in its window.
    pub(super) fn visit(
        &mut self,
        store: &dyn Store,
        campaign: &str,
        t: &Transition,
    ) -> Result<(), StoreError> {
        let Some(Some(key)) = self.row_key(store, campaign, &t.customer)? else {
            return Ok(());
        };
        let Some((row, _)) = self.rows.get_mut(&key) else {
            return Ok(());
        };
        if row.returned_ms.is_none()
            && t.visit != row.visit
            && t.at_ms > row.first_trigger_ms + report::SAME_TRIP_MS
            && t.at_ms <= row.window_end_ms
        {
            row.returned_ms = Some(t.at_ms);
        }
        Ok(())
    }

    /// Adds the links and rows to `c`, and counts the customers first triggered and those
    /// who came back in the stores' report tallies.
    pub(super) fn write(self, c: &mut Commit, counts: &mut Counts) {
        for (link, key) in &self.links {
            let Some(Some(key)) = key else { continue };
            if self.rows.get(key).is_some_and(|(_, old)| old.is_none()) {
                let analysis = key.rsplit('/').next().unwrap_or_default();
                c.expect(Space::Campaigns, link.clone(), None);
                c.put(Space::Campaigns, link.clone(), analysis.as_bytes().to_vec());
            }
        }
        for (key, (row, old)) in self.rows {
            let new = serde_json::to_vec(&row).expect("analysis rows serialise");
            let campaign = key.split('/').nth(1).unwrap_or_default();
            let counter = |metric: &str| {
                report_tally::counter(
                    &row.store,
                    row.first_trigger_ms,
                    campaign,
                    &format!("{metric}/{}", row.group),
                )
            };
            let returned_before = old
                .as_ref()
                .and_then(|b| serde_json::from_slice::<AnalysisRow>(b).ok())
                .is_some_and(|r| r.returned_ms.is_some());
            // (Rows from before stores were recorded have none to count at.)
            if old.is_none() && !row.store.is_empty() {
                counts.add_counter(counter("customers"));
            }
            if row.returned_ms.is_some() && !returned_before && !row.store.is_empty() {
                counts.add_counter(counter("returned"));
            }
            if old.as_ref() != Some(&new) {
                c.expect(Space::Campaigns, key.clone(), old);
                c.put(Space::Campaigns, key, new);
            }
        }
    }
}
