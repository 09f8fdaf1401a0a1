//! The decision stage (DESIGN.md, "The cloud's pipeline"): reads visit transitions in order
//! from its offset, decides each matching campaign once per trigger key (customer, campaign,
//! visit id, transition or milestone), and commits the decision, the caps history and budget it
//! used, the delivery row of a send, the measurement row of a first eligible trigger, and its
//! new offset — in one transaction. A replay after a crash decides the same; a trigger key
//! already decided is never decided again.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use super::decide::{assign, decide, Outcome, PastSend, Trigger};
use super::definition::{Campaign, Trigger as CampaignTrigger};
use super::report;
use super::stored::{self, Versioned};
use crate::cluster::lease::Assignment;
use crate::cluster::{self, Partition};
use crate::delivery;
use crate::identity;
use crate::profiles::{self, ProfileParams};
use crate::registry::Registry;
use crate::secrets::keyed;
use crate::store::event_log::{advance, report_partitions_progress};
use crate::store::read_through::ReadThrough;
use crate::store::{scan_prefix_from, Commit, Space, Store, StoreError};
use crate::tallies::funnel::Counts;
use crate::visits::engine::{Scope, Transition, TransitionKind};
use analysis::Analysis;
use budget::Budgets;

mod ahead;
mod analysis;
mod budget;
pub(super) mod offer;
pub(super) mod reads;

#[cfg(test)]
use budget::sent as budget_sent;
use reads::{customer_view, fires, in_places, Place, Places, Segments};
pub use reads::{every_customer_view, history};

/// This stage's name in the offsets space (its offsets count transitions, not log records).
pub const CONSUMER: &str = "decide";
const BATCH: usize = 500;
/// How far back a customer's sends are read for caps.
const HISTORY_DAYS: i64 = 62;

/// A decision as stored (for the funnel: every trigger that did not send says why).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub trigger_key: String,
    pub campaign: String,
    pub campaign_version: u32,
    pub customer: String,
    pub visit: String,
    pub at_ms: i64,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// What the stage reads besides the store.
pub struct Inputs {
    pub registry: Arc<RwLock<Registry>>,
    /// The server secret that keys trigger keys, delivery ids, retry keys and coupons.
    pub secret: [u8; 32],
    /// Told when a commit wrote deliveries (the delivery worker waits on it).
    pub sent: Arc<tokio::sync::Notify>,
    /// `delivery.link_base`: where tracked links point (`{link_base}/r/{token}`).
    pub link_base: Option<String>,
    /// How tiers are scored (`[profiles]`).
    pub profiles: ProfileParams,
}

fn transition_label(kind: &TransitionKind) -> String {
    match kind {
        TransitionKind::Enter => "enter".into(),
        TransitionKind::Dwell { minutes } => format!("dwell-{minutes}"),
        TransitionKind::Exit { .. } => "exit".into(),
        TransitionKind::Purchase { .. } => "purchase".into(),
    }
}

/// What a step reads besides the transitions: the campaigns, where they run, and what
/// decisions need to know of places and customers.
struct Context<'a> {
    store: &'a dyn Store,
    inputs: &'a Inputs,
    campaigns: &'a [Versioned],
    /// Where each campaign runs: a new visit to one of these stores is its measured outcome.
    campaign_stores: Vec<(String, BTreeSet<String>)>,
    places: &'a Places,
    segments: Segments<'a>,
}

impl Context<'_> {
    /// The live campaigns (launched, not ended) `t` triggers (an Nth visit's count is
    /// checked apart).
    fn firing<'c>(&'c self, t: &'c Transition) -> impl Iterator<Item = &'c Versioned> + 'c {
        self.campaigns.iter().filter(|k| {
            k.campaign.is_live() && fires(&k.campaign.trigger, &t.kind) && in_places(k, &t.scope)
        })
    }

    /// The campaigns whose measured outcome `t` may be: a store visit where they run.
    fn measured_by<'c>(&'c self, t: &'c Transition) -> impl Iterator<Item = &'c str> + 'c {
        let store = match (&t.kind, &t.scope) {
            (TransitionKind::Enter, Scope::Store(s)) => Some(s),
            _ => None,
        };
        self.campaign_stores
            .iter()
            .filter(move |(_, stores)| store.is_some_and(|s| stores.contains(s)))
            .map(|(campaign, _)| campaign.as_str())
    }
}

/// Where `t`'s caps history starts.
fn history_since(t: &Transition) -> i64 {
    t.at_ms - HISTORY_DAYS * 86_400_000
}

/// Each campaign's stores: its own and its zones' stores.
fn campaign_stores(campaigns: &[Versioned], places: &Places) -> Vec<(String, BTreeSet<String>)> {
    campaigns
        .iter()
        .map(|k| {
            let p = &k.campaign.places;
            let zone_stores = p
                .zones
                .iter()
                .filter_map(|z| places.zone_store.get(z).cloned());
            let stores = p.stores.iter().cloned().chain(zone_stores).collect();
            (k.campaign.id.clone(), stores)
        })
        .collect()
}

/// What a step has decided so far, committed at its end.
struct Step {
    c: Commit,
    /// Trigger keys decided in this step.
    decided: BTreeSet<String>,
    /// Sends of this step by customer (the caps of their next triggers count them).
    sent_now: HashMap<String, Vec<PastSend>>,
    /// The budgets its sends spend.
    budgets: Budgets,
    analysis: Analysis,
    counts: Counts,
    /// Coupon codes given in this step.
    taken: BTreeSet<String>,
    sends: usize,
    /// Customers whose record a decision of this step read: the commit expects each unchanged.
    read_customers: BTreeMap<String, Vec<u8>>,
}

/// Decides the next transitions of every partition (one instance running the whole stage);
/// returns how many it read.
pub fn step(store: &dyn Store, inputs: &Inputs) -> Result<usize, StoreError> {
    let all: Vec<Partition> = Partition::all(cluster::count(store)?).collect();
    step_held(store, inputs, &all)
}

/// Decides the `held` partitions' next transitions after their offsets and commits the
/// decisions with every partition's new offset, in one commit; returns how many it read.
pub fn step_held(
    store: &dyn Store,
    inputs: &Inputs,
    held: &[Partition],
) -> Result<usize, StoreError> {
    let consumers: Vec<String> = held.iter().map(|p| p.consumer(CONSUMER)).collect();
    let at = crate::store::event_log::positions(store, &consumers)?;
    let mut advances = Vec::new();
    let mut read = 0;
    let mut transitions: Vec<Transition> = Vec::new();
    for ((partition, consumer), from) in held.iter().zip(&consumers).zip(at) {
        let page = scan_prefix_from(
            store,
            Space::Transitions,
            &partition.key_prefix(),
            &crate::visits::keys::transition(*partition, from),
            BATCH,
        )?;
        let Some((last_key, _)) = page.last() else {
            continue;
        };
        let last = crate::visits::keys::transition_seq(*partition, last_key)?;
        advances.push((consumer.as_str(), from, last + 1));
        read += page.len();
        transitions.extend(
            page.iter()
                // An empty value is a transition about an erased customer.
                .filter(|(_, bytes)| !bytes.is_empty())
                .filter_map(
                    |(_, bytes)| match serde_json::from_slice::<Transition>(bytes) {
                        Ok(t) => Some(t),
                        Err(e) => {
                            tracing::error!(error = %e, "unreadable transition skipped");
                            None
                        }
                    },
                ),
        );
    }
    if advances.is_empty() {
        return Ok(0);
    }
    // The customers and profiles the decisions will read, in two round trips.
    let ahead = ReadThrough::new(store);
    let customers = || transitions.iter().map(|t| t.customer.as_str());
    ahead.read_ahead(
        Space::Identity,
        customers()
            .map(|c| identity::keys::customer(c).into_bytes())
            .collect(),
    )?;
    ahead.read_ahead(
        Space::Profiles,
        customers()
            .map(|c| profiles::keys::profile_key(c).into_bytes())
            .collect(),
    )?;
    let store: &dyn Store = &ahead;
    let campaigns: Vec<Versioned> = stored::all(store)?;
    tracing::debug!(transitions = read, campaigns = campaigns.len(), "deciding");
    let places = Places::new(&inputs.registry.read().expect("registry lock"));
    let cx = Context {
        store,
        inputs,
        campaigns: &campaigns,
        campaign_stores: campaign_stores(&campaigns, &places),
        places: &places,
        segments: Segments {
            params: &inputs.profiles,
            rules: profiles::rules(store)?,
            places: &places,
        },
    };
    ahead::decisions(&ahead, &cx, &transitions)?;
    // The rows a step adds to often (counters, budgets) are its first partition's.
    let shard = held.iter().map(|p| p.index()).min().unwrap_or(0);
    let mut s = Step::new(shard);
    for t in &transitions {
        s.transition(&cx, t)?;
    }
    let sends = s.sends;
    store.commit(s.into_commit(store, &advances)?)?;
    if sends > 0 {
        crate::crash_point!("decide.after_commit_before_send");
        inputs.sent.notify_one();
    }
    Ok(read)
}

/// Runs the stage over the partitions this instance is assigned: decides whenever the log (and
/// so the transitions) grows or the assignment changes.
pub async fn run(
    store: Arc<dyn Store>,
    inputs: Arc<Inputs>,
    mut log_end: tokio::sync::watch::Receiver<u64>,
    mut assignment: tokio::sync::watch::Receiver<Assignment>,
) {
    loop {
        let held: Vec<Partition> = assignment
            .borrow_and_update()
            .of(CONSUMER)
            .into_iter()
            .collect();
        let (s, i, h) = (store.clone(), inputs.clone(), held.clone());
        let stepped = tokio::task::spawn_blocking(move || step_held(s.as_ref(), &i, &h)).await;
        // Its input is the visit stage's transitions, not the log: its lag is in transitions.
        if let Ok(lag) = lag(store.as_ref(), &held) {
            let read = match &stepped {
                Ok(Ok(n)) => *n,
                _ => 0,
            };
            report_partitions_progress(CONSUMER, lag, read);
        }
        match stepped {
            Ok(Ok(n)) if n > 0 => continue,
            Ok(Ok(_)) => {}
            Ok(Err(StoreError::Conflict { .. })) => {
                // Something it read changed while it decided (a customer's consent, say).
                tracing::debug!("decision step conflicted; deciding again");
                metrics::counter!("omo_stage_step_conflicts_total", "stage" => CONSUMER)
                    .increment(1);
                continue;
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "decision stage failed; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            // The runtime is shutting down.
            Err(e) if e.is_cancelled() => return,
            Err(e) => tracing::error!(error = %e, "decision stage task failed"),
        }
        tokio::select! {
            changed = log_end.changed() => if changed.is_err() { return },
            changed = assignment.changed() => if changed.is_err() { return },
        }
    }
}

/// How many transitions the `held` partitions have still to decide, at most.
pub fn lag(store: &dyn Store, held: &[Partition]) -> Result<u64, StoreError> {
    let at = cluster::positions_of(store, CONSUMER, held)?;
    let mut most = 0;
    for (p, at) in held.iter().zip(at) {
        let end = crate::visits::stage::transitions_end(store, *p)?;
        most = most.max(end.saturating_sub(at));
    }
    Ok(most)
}

/// The trigger key of `campaign` for transition `t`: one decision per customer, campaign,
/// visit and transition (or milestone).
fn trigger_key(secret: &[u8; 32], t: &Transition, campaign: &str) -> String {
    hex::encode(keyed(
        secret,
        &[
            "trigger",
            &t.customer,
            campaign,
            &t.visit,
            &transition_label(&t.kind),
        ],
    ))
}

/// Whether an Nth-visit trigger's count holds for `t` (any other trigger: yes).
fn nth_visit_holds(
    store: &dyn Store,
    trigger: &CampaignTrigger,
    t: &Transition,
) -> Result<bool, StoreError> {
    let CampaignTrigger::NthVisit { n, within_days } = *trigger else {
        return Ok(true);
    };
    let since = t.at_ms - i64::from(within_days) * 86_400_000;
    let count = crate::visits::visits_of_customer(store, &t.customer, 10_000)?
        .iter()
        .filter(|v| {
            v.scope == t.scope && v.entered.millis() >= since && v.entered.millis() <= t.at_ms
        })
        .count();
    Ok(count == n as usize)
}

/// The group a decision counts in: the variant sent, the holdout for a would-send, and for a
/// suppressed one the group the customer is assigned to.
fn group_of(campaign: &Campaign, customer: &str, outcome: &Outcome) -> String {
    match outcome {
        Outcome::Send { variant, .. } => variant.clone(),
        Outcome::WouldSend { .. } => report::HOLDOUT.to_owned(),
        Outcome::Suppressed { .. } => assign(campaign, customer)
            .unwrap_or(report::HOLDOUT)
            .to_owned(),
    }
}

/// Counts a decision in its campaign's funnel.
fn count_outcome(counts: &mut Counts, campaign: &str, group: &str, outcome: &Outcome) {
    counts.add(campaign, group, "triggers");
    match outcome {
        Outcome::Suppressed { reason } => {
            let reason = serde_json::to_value(reason).expect("reasons serialise");
            counts.add(
                campaign,
                group,
                &format!("suppressed:{}", reason.as_str().unwrap_or("")),
            );
        }
        Outcome::Send { .. } => {
            counts.add(campaign, group, "eligible");
            counts.add(campaign, group, "sent");
        }
        Outcome::WouldSend { .. } => {
            counts.add(campaign, group, "eligible");
            counts.add(campaign, group, "would_send");
        }
    }
}

impl Step {
    /// A step whose counters and budgets are `shard`'s rows.
    fn new(shard: u16) -> Step {
        Step {
            c: Commit::new(),
            decided: BTreeSet::new(),
            sent_now: HashMap::new(),
            budgets: Budgets::new(shard),
            analysis: Analysis::default(),
            counts: Counts::in_shard(shard),
            taken: BTreeSet::new(),
            sends: 0,
            read_customers: BTreeMap::new(),
        }
    }

    /// Decides every campaign transition `t` fires, and marks the returns it measures.
    fn transition(&mut self, cx: &Context, t: &Transition) -> Result<(), StoreError> {
        for campaign in cx.measured_by(t) {
            self.analysis.visit(cx.store, campaign, t)?;
        }
        for campaign in cx.firing(t) {
            self.trigger(cx, campaign, t)?;
        }
        Ok(())
    }

    /// Decides `campaign` for `t` unless its trigger key was decided before.
    fn trigger(
        &mut self,
        cx: &Context,
        campaign: &Versioned,
        t: &Transition,
    ) -> Result<(), StoreError> {
        let store = cx.store;
        let key = trigger_key(&cx.inputs.secret, t, &campaign.campaign.id);
        let decision_key = super::keys::decision(&key);
        if self.decided.contains(&key)
            || store
                .get(Space::Campaigns, decision_key.as_bytes())?
                .is_some()
            || !nth_visit_holds(store, &campaign.campaign.trigger, t)?
        {
            return Ok(());
        }
        let Some(place) = cx.places.store_of(&t.scope) else {
            return Ok(());
        };
        let Some((view, customer, bytes)) =
            customer_view(store, &t.customer, &cx.segments, t.at_ms)?
        else {
            return Ok(());
        };
        self.read_customers
            .entry(t.customer.clone())
            .or_insert(bytes);
        let mut past = history(store, &t.customer, history_since(t))?;
        past.extend(self.sent_now.get(&t.customer).cloned().unwrap_or_default());
        let (id, limit) = (&campaign.campaign.id, campaign.campaign.budget);
        let budget_left = self.budgets.left(store, id, limit)?;
        let outcome = decide(
            &campaign.campaign,
            &Trigger {
                customer: &view,
                at_ms: t.at_ms,
                late: t.late,
                store_tz: place.tz,
                history: &past,
                budget_left,
            },
        );
        let decision = Decision {
            trigger_key: key.clone(),
            campaign: campaign.campaign.id.clone(),
            campaign_version: campaign.version,
            customer: t.customer.clone(),
            visit: t.visit.clone(),
            at_ms: t.at_ms,
            outcome: outcome.clone(),
        };
        self.c.expect(Space::Campaigns, decision_key.clone(), None);
        self.c.put(
            Space::Campaigns,
            decision_key,
            serde_json::to_vec(&decision).expect("decisions serialise"),
        );
        self.decided.insert(key.clone());
        let group = group_of(&campaign.campaign, &t.customer, &outcome);
        count_outcome(&mut self.counts, &campaign.campaign.id, &group, &outcome);
        if outcome.uses_caps() {
            self.capped(cx, (&campaign.campaign, &customer), place, t, &outcome)?;
        }
        if let Outcome::Send { variant, channel } = &outcome {
            self.budgets.spend(id, limit);
            let d = offer::delivery(
                (store, offer::Keys::of(cx.inputs), &self.taken),
                (&key, &campaign.campaign, variant, *channel),
                (&customer, place),
                (t.decided_ms, t.at_ms),
            )?;
            self.taken.insert(d.coupon.clone());
            self.counts.add_counter(d.store_counter("decided"));
            // Its id and coupon derive from the trigger key, whose absence is expected above.
            delivery::enqueue(&mut self.c, &d);
            self.sends += 1;
        }
        Ok(())
    }

    /// A decision that counts against the caps: its history entry, and the customer's
    /// analysis row if this is their first eligible trigger in the campaign.
    fn capped(
        &mut self,
        cx: &Context,
        (campaign, customer): (&Campaign, &identity::Customer),
        place: &Place,
        t: &Transition,
        outcome: &Outcome,
    ) -> Result<(), StoreError> {
        self.c.put(
            Space::Campaigns,
            super::keys::history(&t.customer, t.at_ms, &campaign.id),
            Vec::new(),
        );
        self.sent_now
            .entry(t.customer.clone())
            .or_default()
            .push(PastSend {
                campaign: campaign.id.clone(),
                at_ms: t.at_ms,
            });
        let group = match outcome {
            Outcome::Send { variant, .. } => variant.as_str(),
            _ => report::HOLDOUT,
        };
        self.analysis
            .first_trigger(cx.store, (campaign, customer), (group, &place.id), t)
    }

    /// The step's commit: its decisions and sends, the analysis rows and counters, the budgets,
    /// the customers it read expected unchanged (a consent change or an erasure since: the
    /// step runs again on what the record says now), and the offset moved `from` → `to`.
    /// The step's commit, with each partition's offset moved `(consumer, from, to)`.
    fn into_commit(
        self,
        store: &dyn Store,
        advances: &[(&str, u64, u64)],
    ) -> Result<Commit, StoreError> {
        let Step {
            mut c,
            mut counts,
            analysis,
            budgets,
            read_customers,
            ..
        } = self;
        analysis.write(&mut c, &mut counts);
        counts.write(store, &mut c)?;
        budgets.write(&mut c);
        for (id, bytes) in read_customers {
            identity::expect_customer(&mut c, &id, bytes);
        }
        for (consumer, from, to) in advances {
            advance(&mut c, consumer, *from, *to);
        }
        Ok(c)
    }
}

#[cfg(test)]
pub(in crate::campaigns) mod tests {
    use super::*;
    use crate::identity::{new_customer, save_customer};
    use crate::registry::replace_site;
    use crate::store::barrier::scan_all;
    use crate::store::testing::{places, Place, TestStore};
    use crate::visits::engine::Source;
    use omo_device_config::site::Site;
    use omo_device_config::Timestamp;

    const SITE: &str = r#"
[[stores]]
id = "s1"
name = "Shibuya"
time_zone = "Asia/Tokyo"
location = { lat = 35.6, lon = 139.7 }
"#;

    fn transition(customer: &str, visit: &str, at: &str, late: bool) -> Transition {
        let at_ms = at.parse::<Timestamp>().unwrap().millis();
        Transition {
            visit: visit.into(),
            customer: customer.into(),
            scope: Scope::Store("s1".into()),
            kind: TransitionKind::Enter,
            at_ms,
            decided_ms: at_ms,
            late,
            sources: BTreeSet::from([Source::Gateway]),
        }
    }

    pub(in crate::campaigns) fn rows(store: &TestStore, prefix: &str) -> Vec<serde_json::Value> {
        scan_all(store, Space::Campaigns)
            .unwrap()
            .into_iter()
            .filter(|(k, _)| k.starts_with(prefix.as_bytes()))
            .map(|(_, v)| serde_json::from_slice(&v).unwrap_or(serde_json::Value::Null))
            .collect()
    }

    /// A store with the site, a LINE customer named Aki, and a campaign firing on entering the
    /// store, `edit`ed; with the stage's inputs.
    pub(in crate::campaigns) fn setup(
        place: &Place,
        edit: impl FnOnce(&mut serde_json::Value),
    ) -> (TestStore, identity::Customer, Inputs) {
        let store = place.open();
        store
            .commit(replace_site(&Registry::default(), &Site::parse(SITE, false).unwrap()).unwrap())
            .unwrap();
        let mut customer = new_customer("2026-11-01T00:00:00.000Z".parse().unwrap());
        customer.line_user = Some("U1".into());
        customer.consent.line = true;
        customer
            .attributes
            .insert("name".into(), serde_json::json!("Aki"));
        store
            .commit(save_customer(&store, None, &customer).unwrap())
            .unwrap();
        let mut def = crate::campaigns::definition::tests::example();
        def["trigger"] = serde_json::json!({"kind": "enter"});
        def["audience"] = serde_json::json!({});
        def["schedule"]["hours"] = serde_json::Value::Null;
        def["quiet_hours"] = serde_json::Value::Null;
        def["holdout_percent"] = serde_json::json!(0);
        edit(&mut def);
        let campaign = serde_json::from_value(def).unwrap();
        let (commit, _) = stored::save(None, campaign, "2026-11-01T00:00:00.000Z".parse().unwrap());
        store.commit(commit).unwrap();
        let inputs = Inputs {
            registry: Arc::new(RwLock::new(Registry::load(&store).unwrap())),
            secret: [3; 32],
            sent: Default::default(),
            link_base: Some("https://offers.example.com".into()),
            profiles: Default::default(),
        };
        (store, customer, inputs)
    }

    fn append(store: &TestStore, transitions: &[Transition]) {
        let mut c = Commit::new();
        for (i, t) in transitions.iter().enumerate() {
            c.put(
                Space::Transitions,
                (i as u64 + 1).to_be_bytes().to_vec(),
                serde_json::to_vec(t).unwrap(),
            );
        }
        store.commit(c).unwrap();
    }

    #[test]
    fn each_trigger_key_is_decided_once_with_its_reason_and_one_delivery() {
        for place in places() {
            each_trigger_key_is_decided_once_with_its_reason_and_one_delivery_on(&place);
        }
    }

    fn each_trigger_key_is_decided_once_with_its_reason_and_one_delivery_on(place: &Place) {
        let (store, customer, inputs) = setup(place, |_| {});
        let transitions = [
            transition(&customer.id, "v1", "2026-11-23T03:00:00.000Z", false),
            transition(&customer.id, "v2", "2026-11-24T03:00:00.000Z", false),
            transition(&customer.id, "v3", "2026-11-25T03:00:00.000Z", true),
        ];
        append(&store, &transitions);
        assert_eq!(step(&store, &inputs).unwrap(), 3);
        assert_eq!(step(&store, &inputs).unwrap(), 0);
        let decisions = rows(&store, "decision/");
        let outcomes: BTreeSet<String> = decisions
            .iter()
            .map(|d| {
                format!(
                    "{}:{}",
                    d["outcome"].as_str().unwrap(),
                    d["reason"].as_str().unwrap_or("")
                )
            })
            .collect();
        assert_eq!(
            outcomes,
            BTreeSet::from([
                "send:".to_owned(),
                "suppressed:cap".to_owned(),
                "suppressed:late".to_owned()
            ])
        );
        let deliveries = rows(&store, "delivery/");
        assert_eq!(deliveries.len(), 1);
        let text = deliveries[0]["text"].as_str().unwrap();
        assert!(
            text.starts_with("Hi Aki, a coffee on us at Shibuya: "),
            "{text}"
        );
        assert_eq!(deliveries[0]["retry_key"].as_str().unwrap().len(), 36);
        assert!(
            !text.contains(&customer.id)
                && !deliveries[0]["id"].as_str().unwrap().contains(&customer.id)
        );
        // A replay from an older offset (a crash before the offset moved) decides nothing twice.
        let mut rewind = Commit::new();
        rewind.delete(Space::Offsets, CONSUMER.as_bytes().to_vec());
        store.commit(rewind).unwrap();
        assert_eq!(step(&store, &inputs).unwrap(), 3);
        assert_eq!(rows(&store, "decision/").len(), 3);
        assert_eq!(rows(&store, "delivery/").len(), 1);
        assert_eq!(
            rows(&store, "analysis/").len(),
            1,
            "one measurement row per customer and campaign"
        );
    }

    #[test]
    fn a_draft_or_an_ended_campaign_decides_nothing_and_a_reach_counts_its_audience() {
        for state in ["draft", "ended"] {
            for place in places() {
                let (store, customer, inputs) = setup(&place, |d| d[state] = true.into());
                append(
                    &store,
                    &[transition(
                        &customer.id,
                        "v1",
                        "2026-11-23T03:00:00.000Z",
                        false,
                    )],
                );
                assert_eq!(step(&store, &inputs).unwrap(), 1, "{state}");
                assert!(rows(&store, "decision/").is_empty(), "{state}");
                assert!(rows(&store, "delivery/").is_empty(), "{state}");
            }
        }
        for place in places() {
            let (store, _, inputs) = setup(&place, |d| {
                d["channels"] = serde_json::json!(["push", "line"])
            });
            let campaign = stored::all(&store).unwrap().remove(0).campaign;
            let registry = inputs.registry.read().unwrap();
            let r =
                crate::campaigns::reach::reach(&store, &registry, &inputs.profiles, &campaign, 0)
                    .unwrap();
            assert_eq!((r.customers, r.in_audience, r.unreachable), (1, 1, 0));
            assert_eq!(r.sent_on[&delivery::DeliveryChannel::Line], 1);
            assert_eq!(r.sent_on[&delivery::DeliveryChannel::Push], 0);
        }
    }

    #[test]
    fn a_template_link_becomes_a_tracked_link_unique_to_its_delivery() {
        for place in places() {
            a_template_link_becomes_a_tracked_link_unique_to_its_delivery_on(&place);
        }
    }

    fn a_template_link_becomes_a_tracked_link_unique_to_its_delivery_on(place: &Place) {
        let (store, customer, inputs) = setup(place, |d| {
            d["variants"][0]["template"]["text"] = serde_json::json!("Hi {name}: {link}");
            d["variants"][0]["template"]["link"] =
                serde_json::json!("https://brand.example.com/autumn");
            d["caps"] =
                serde_json::json!({"per_customer": 100, "period_days": 1, "cooldown_minutes": 0});
        });
        append(
            &store,
            &[
                transition(&customer.id, "v1", "2026-11-23T03:00:00.000Z", false),
                transition(&customer.id, "v2", "2026-11-23T05:00:00.000Z", false),
            ],
        );
        step(&store, &inputs).unwrap();
        let deliveries = rows(&store, "delivery/");
        assert_eq!(deliveries.len(), 2);
        let mut tokens = BTreeSet::new();
        for d in &deliveries {
            let text = d["text"].as_str().unwrap();
            let token = text
                .strip_prefix("Hi Aki: https://offers.example.com/r/")
                .unwrap_or_else(|| panic!("{text}"));
            assert_eq!(token.len(), 32, "{text}");
            assert_eq!(d["click"].as_str(), Some(token));
            assert_eq!(d["link"], "https://brand.example.com/autumn");
            assert_eq!(
                store
                    .get(Space::Campaigns, delivery::click_key(token).as_bytes())
                    .unwrap(),
                Some(d["id"].as_str().unwrap().as_bytes().to_vec())
            );
            tokens.insert(token.to_owned());
        }
        assert_eq!(tokens.len(), 2, "one link per delivery");
    }

    /// Ten triggers of one customer make one analysis row (the customer counts once), every
    /// trigger is in the funnel, and a visit days later — not the triggering one, nor the
    /// store-wide visit of the same trip — is the customer's return.
    #[test]
    fn a_customer_triggering_ten_times_counts_once_and_returns_are_new_visits() {
        for place in places() {
            a_customer_triggering_ten_times_counts_once_and_returns_are_new_visits_on(&place);
        }
    }

    fn a_customer_triggering_ten_times_counts_once_and_returns_are_new_visits_on(place: &Place) {
        let (store, customer, inputs) = setup(place, |d| {
            d["caps"] =
                serde_json::json!({"per_customer": 100, "period_days": 1, "cooldown_minutes": 0});
        });
        let mut ts: Vec<Transition> = (0..10)
            .map(|i| {
                transition(
                    &customer.id,
                    &format!("v{i}"),
                    &format!("2026-11-{:02}T03:00:00.000Z", 10 + i),
                    false,
                )
            })
            .collect();
        // The store-wide visit of the first trip, entered a minute after the trigger.
        let mut companion = transition(&customer.id, "w0", "2026-11-10T03:01:00.000Z", false);
        companion.scope = Scope::Store("s1".into());
        ts.insert(1, companion);
        append(&store, &ts);
        while step(&store, &inputs).unwrap() > 0 {}
        let report = report::build(&store, "welcome-coffee", &["a".to_owned()], 7, 0).unwrap();
        let a = report.groups.iter().find(|g| g.group == "a").unwrap();
        assert_eq!(a.customers, 1, "{report:?}");
        assert_eq!(a.funnel["triggers"], 11);
        assert_eq!(a.funnel["sent"], 11);
        assert_eq!(a.returned, 1);
        assert_eq!(a.platforms["line"], 1);
        let rows = rows(&store, "analysis/");
        assert_eq!(rows.len(), 1);
        assert_eq!(
            rows[0]["returned_ms"],
            serde_json::json!("2026-11-11T03:00:00.000Z"
                .parse::<Timestamp>()
                .unwrap()
                .millis()),
            "the next day's visit, not the companion a minute later"
        );
        assert!(report::to_csv(&report).starts_with("campaign,group,customers"));
    }

    /// A store of four partitions whose steps run on two threads at once (two instances):
    /// every trigger decided once, and a budget two partitions spend at the same time is
    /// spent exactly (each from its slice, the pool and slices expected as read).
    #[test]
    fn partitions_deciding_at_once_decide_each_trigger_once_within_the_budget() {
        for place in places() {
            partitions_deciding_at_once_on(&place);
        }
    }

    fn partitions_deciding_at_once_on(place: &Place) {
        let (store, _, inputs) = setup(place, |d| {
            d["budget"] = serde_json::json!(30);
            d["caps"] =
                serde_json::json!({"per_customer": 100, "period_days": 1, "cooldown_minutes": 0});
        });
        assert_eq!(cluster::settle(&store, Some(4)).unwrap(), 4);
        let mut next = [1u64; 4];
        let mut c = Commit::new();
        for i in 0..40 {
            let mut customer = new_customer("2026-11-01T00:00:00.000Z".parse().unwrap());
            customer.id = format!("c{i}");
            customer.line_user = Some(format!("U-{i}"));
            customer.consent.line = true;
            store
                .commit(save_customer(&store, None, &customer).unwrap())
                .unwrap();
            for v in 0..2 {
                let at = format!("2026-11-23T0{}:{:02}:00.000Z", 3 + v, i);
                let t = transition(&customer.id, &format!("v{i}-{v}"), &at, false);
                let p = Partition::of(&customer.id, 4);
                let seq = &mut next[p.index() as usize];
                c.put(
                    Space::Transitions,
                    crate::visits::keys::transition(p, *seq),
                    serde_json::to_vec(&t).unwrap(),
                );
                *seq += 1;
            }
        }
        store.commit(c).unwrap();
        let halves = [
            [Partition::new(0, 4), Partition::new(1, 4)],
            [Partition::new(2, 4), Partition::new(3, 4)],
        ];
        std::thread::scope(|scope| {
            for held in &halves {
                let (store, inputs) = (&store, &inputs);
                scope.spawn(move || loop {
                    match step_held(store, inputs, held) {
                        Ok(0) => return,
                        Ok(_) | Err(StoreError::Conflict { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                });
            }
        });
        assert_eq!(
            lag(&store, &Partition::all(4).collect::<Vec<_>>()).unwrap(),
            0
        );
        let decisions = rows(&store, "decision/");
        assert_eq!(decisions.len(), 80, "every trigger decided once");
        let sent = decisions.iter().filter(|d| d["outcome"] == "send").count();
        let over = decisions.iter().filter(|d| d["reason"] == "budget").count();
        assert_eq!((sent, over), (30, 50), "the budget is spent exactly");
        assert_eq!(rows(&store, "delivery/").len(), 30);
        assert_eq!(budget_sent(&store, "welcome-coffee").unwrap(), 30);
    }
}
