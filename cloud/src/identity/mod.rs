//! Who is who: customers, their app installs (platform, push token, install token stored as a
//! hash), LINE user id, static beacon ids, Eddystone-EID identity keys, consent per channel,
//! tags and attributes. One customer may have several installs.
//!
//! Records live in the identity space, with index keys (`member/…`, `line/…`, `beacon/…`,
//! `eid/…`) that point at the customer. Every change is one commit that expects the records it
//! read to be unchanged, so two requests cannot create the same member twice.

pub mod eid_resolver;
mod forget;
mod installs;
pub mod keys;
mod line_link;

pub use forget::{
    begin_erasure, end_erasure, erasing, erasures_under_way, expire_line_nonces, Erasing,
};
pub use installs::{
    authenticate_install, invalidate_push_token, register_install, revoke_install, AppConsent,
    InstallRequest,
};
pub use line_link::{new_link_nonce, use_link_nonce, Linked, NONCE_TTL_MS};

use std::collections::{BTreeMap, BTreeSet};

use omo_device_config::eid::EidIdentity;
use omo_device_config::{BeaconId, Timestamp};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::secrets;
use crate::store::{Commit, Space, Store, StoreError};

/// Consent per channel: the current state, derived from the customer's consent records
/// (see [`Customer::record_consent`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Consent {
    pub line: bool,
    pub push: bool,
    pub webhook: bool,
    /// Location tracking itself: without it observations never become visits.
    pub location: bool,
}

impl Consent {
    pub fn get(&self, channel: ConsentChannel) -> bool {
        match channel {
            ConsentChannel::Line => self.line,
            ConsentChannel::Push => self.push,
            ConsentChannel::Webhook => self.webhook,
            ConsentChannel::Location => self.location,
        }
    }

    fn set(&mut self, channel: ConsentChannel, granted: bool) {
        match channel {
            ConsentChannel::Line => self.line = granted,
            ConsentChannel::Push => self.push = granted,
            ConsentChannel::Webhook => self.webhook = granted,
            ConsentChannel::Location => self.location = granted,
        }
    }
}

/// What a consent is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsentChannel {
    Line,
    Push,
    Webhook,
    Location,
}

impl ConsentChannel {
    pub const ALL: [ConsentChannel; 4] = [
        ConsentChannel::Line,
        ConsentChannel::Push,
        ConsentChannel::Webhook,
        ConsentChannel::Location,
    ];
}

/// Who recorded a consent change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsentSource {
    /// The brand app, on the customer's behalf.
    App,
    /// LINE: following the account (consent to messages) or unfollowing it (withdrawal).
    Line,
    /// An operator, through the admin API.
    Admin,
    /// A bulk import of consents given elsewhere (a store form, the brand's CRM).
    Import,
}

/// One consent given or withdrawn: kept for good, the current state is derived from them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentChange {
    pub channel: ConsentChannel,
    pub granted: bool,
    /// When the customer gave or withdrew it (a LINE event's time, say).
    pub at: Timestamp,
    /// When the cloud recorded it.
    pub recorded: Timestamp,
    pub source: ConsentSource,
    /// The version of the text the customer agreed to, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_version: Option<String>,
}

/// An Eddystone-EID identity key a customer's phone or tag advertises with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EidKey {
    /// 32 hex digits.
    pub identity_key: String,
    /// Rotation period exponent K (the EID changes every 2^K s), 0..=15.
    pub exponent: u8,
    /// The advertiser's time counter minus Unix time, seconds.
    #[serde(default)]
    pub clock_offset_s: i64,
}

impl EidKey {
    pub fn identity(&self) -> Result<EidIdentity, String> {
        let bytes = hex::decode(&self.identity_key)
            .ok()
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .ok_or("identity_key must be 32 hex digits")?;
        if self.exponent > omo_device_config::eid::MAX_EXPONENT {
            return Err(format!(
                "exponent must be at most {}",
                omo_device_config::eid::MAX_EXPONENT
            ));
        }
        Ok(EidIdentity {
            identity_key: bytes,
            exponent: self.exponent,
            clock_offset_s: self.clock_offset_s,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Ios,
    Android,
}

/// A customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    pub id: String,
    pub member_id: Option<String>,
    pub line_user: Option<String>,
    /// The current consent, derived from `consent_records`.
    pub consent: Consent,
    /// Every consent change, oldest recorded first.
    #[serde(default)]
    pub consent_records: Vec<ConsentChange>,
    pub tags: BTreeSet<String>,
    pub attributes: BTreeMap<String, serde_json::Value>,
    /// Static beacon ids the customer carries (a tag, a member card).
    pub beacons: Vec<BeaconId>,
    pub eid_keys: Vec<EidKey>,
    pub installs: Vec<String>,
    pub created: Timestamp,
}

impl Customer {
    /// Records a consent change and derives the current state for its channel from every
    /// record of that channel: the latest by `at` wins (on a tie, the later recorded), so a
    /// late-arriving older event (a redelivered LINE `follow`) cannot undo a newer one. The
    /// same change recorded again (same channel, grant, time and source) is kept once.
    /// Returns whether the channel's current state changed.
    pub fn record_consent(&mut self, change: ConsentChange) -> bool {
        let same = |r: &ConsentChange| {
            r.channel == change.channel
                && r.granted == change.granted
                && r.at == change.at
                && r.source == change.source
        };
        if self.consent_records.iter().any(same) {
            return false;
        }
        let channel = change.channel;
        let before = self.consent.get(channel);
        self.consent_records.push(change);
        let current = self
            .consent_records
            .iter()
            .enumerate()
            .filter(|(_, r)| r.channel == channel)
            .max_by_key(|(i, r)| (r.at, *i))
            .map(|(_, r)| r.granted)
            .unwrap_or(before);
        self.consent.set(channel, current);
        before != current
    }

    /// Records, as `source`, a change for each channel whose flag in `wanted` differs from
    /// the current state; returns the channels that changed.
    pub fn set_consent(
        &mut self,
        wanted: Consent,
        source: ConsentSource,
        text_version: Option<&str>,
        now: Timestamp,
    ) -> Vec<ConsentChannel> {
        let mut changed = Vec::new();
        for ch in ConsentChannel::ALL {
            if wanted.get(ch) != self.consent.get(ch)
                && self.record_consent(ConsentChange {
                    channel: ch,
                    granted: wanted.get(ch),
                    at: now,
                    recorded: now,
                    source,
                    text_version: text_version.map(str::to_owned),
                })
            {
                changed.push(ch);
            }
        }
        changed
    }
}

/// An app install.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Install {
    pub id: String,
    pub customer: String,
    pub platform: Platform,
    pub push_token: Option<String>,
    /// SHA-256 of the install's secret token.
    pub token_sha256: String,
    pub created: Timestamp,
    /// When an operator revoked it: its token no longer authenticates and it gets no pushes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<Timestamp>,
}

/// Why an identity change was refused.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{field} {value} already belongs to another customer")]
    Taken { field: &'static str, value: String },
    #[error("no customer {0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The ids of every customer, in order.
pub fn customer_ids(store: &dyn Store) -> Result<Vec<String>, StoreError> {
    Ok(crate::store::barrier::scan_prefix(
        store,
        Space::Identity,
        keys::CUSTOMERS.as_bytes(),
        usize::MAX,
    )?
    .into_iter()
    .map(|(k, _)| String::from_utf8_lossy(&k[keys::CUSTOMERS.len()..]).into_owned())
    .collect())
}

fn random_id(prefix: &str) -> String {
    let mut b = [0u8; 10];
    rand::rng().fill_bytes(&mut b);
    format!("{prefix}{}", hex::encode(b))
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("identity records serialise")
}

fn read<T: serde::de::DeserializeOwned>(
    store: &dyn Store,
    key: &str,
) -> Result<Option<(T, Vec<u8>)>, StoreError> {
    match store.get(Space::Identity, key.as_bytes())? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(|v| Some((v, bytes)))
            .map_err(|e| StoreError::Backend(format!("identity record {key}: {e}"))),
    }
}

/// The customer an index key (`member/…`, `line/…`, `beacon/…`) points at.
pub fn lookup(store: &dyn Store, index: &str) -> Result<Option<String>, StoreError> {
    Ok(store
        .get(Space::Identity, index.as_bytes())?
        .map(|v| String::from_utf8_lossy(&v).into_owned()))
}

/// The customer `query` names, tried as each id staff may hold, in this order: customer id,
/// member number, LINE user id, install id.
pub fn find(store: &dyn Store, query: &str) -> Result<Option<String>, StoreError> {
    if customer(store, query)?.is_some() {
        return Ok(Some(query.to_owned()));
    }
    for index in [keys::member(query), keys::line_user(query)] {
        if let Some(id) = lookup(store, &index)? {
            return Ok(Some(id));
        }
    }
    Ok(install(store, query)?.map(|i| i.customer))
}

/// The customer carrying a (non-rotating) beacon id, if any.
pub fn beacon_carrier(store: &dyn Store, beacon: &BeaconId) -> Result<Option<String>, StoreError> {
    lookup(store, &keys::beacon(&beacon.to_string()))
}

/// The customers carrying each of `beacons` (non-rotating ids), in their order: one read.
pub fn beacon_carriers(
    store: &dyn Store,
    beacons: &[BeaconId],
) -> Result<Vec<Option<String>>, StoreError> {
    let keys: Vec<Vec<u8>> = beacons
        .iter()
        .map(|b| keys::beacon(&b.to_string()).into_bytes())
        .collect();
    Ok(store
        .get_many(Space::Identity, &keys)?
        .into_iter()
        .map(|v| v.map(|v| String::from_utf8_lossy(&v).into_owned()))
        .collect())
}

/// The customers `ids` name, in their order (`None`: unknown or erased): one read.
pub fn customers(store: &dyn Store, ids: &[String]) -> Result<Vec<Option<Customer>>, StoreError> {
    let keys: Vec<Vec<u8>> = ids
        .iter()
        .map(|id| keys::customer(id).into_bytes())
        .collect();
    store
        .get_many(Space::Identity, &keys)?
        .into_iter()
        .zip(ids)
        .map(|(v, id)| match v {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                StoreError::Backend(format!("identity record {}: {e}", keys::customer(id)))
            }),
        })
        .collect()
}

pub fn customer(store: &dyn Store, id: &str) -> Result<Option<Customer>, StoreError> {
    Ok(read(store, &keys::customer(id))?.map(|(c, _)| c))
}

pub fn install(store: &dyn Store, id: &str) -> Result<Option<Install>, StoreError> {
    Ok(read(store, &keys::install(id))?.map(|(i, _)| i))
}

/// A fresh customer with no links.
pub fn new_customer(now: Timestamp) -> Customer {
    Customer {
        id: random_id("c_"),
        member_id: None,
        line_user: None,
        consent: Consent::default(),
        consent_records: Vec::new(),
        tags: BTreeSet::new(),
        attributes: BTreeMap::new(),
        beacons: Vec::new(),
        eid_keys: Vec::new(),
        installs: Vec::new(),
        created: now,
    }
}

/// The index keys a customer owns.
fn index_keys(c: &Customer) -> Vec<(String, &'static str, String)> {
    let mut keys = Vec::new();
    if let Some(m) = &c.member_id {
        keys.push((self::keys::member(m), "member_id", m.clone()));
    }
    if let Some(u) = &c.line_user {
        keys.push((self::keys::line_user(u), "line_user", u.clone()));
    }
    for b in &c.beacons {
        keys.push((self::keys::beacon(&b.to_string()), "beacons", b.to_string()));
    }
    for k in &c.eid_keys {
        keys.push((
            self::keys::eid(&k.identity_key),
            "eid_keys",
            k.identity_key.clone(),
        ));
    }
    keys
}

/// Checks a customer's fields.
pub fn validate(c: &Customer) -> Result<(), IdentityError> {
    let invalid = |field: &str, message: &str| IdentityError::Invalid {
        field: field.into(),
        message: message.into(),
    };
    for (field, v) in [("member_id", &c.member_id), ("line_user", &c.line_user)] {
        if let Some(v) = v {
            if v.is_empty() || v.len() > 128 || v.contains(['/', '\n']) {
                return Err(invalid(field, "must be 1..=128 characters without '/'"));
            }
        }
    }
    for (i, r) in c.consent_records.iter().enumerate() {
        if r.text_version
            .as_ref()
            .is_some_and(|v| v.is_empty() || v.len() > 64)
        {
            return Err(invalid(
                &format!("consent_records[{i}].text_version"),
                "must be 1..=64 characters",
            ));
        }
    }
    for (i, k) in c.eid_keys.iter().enumerate() {
        k.identity()
            .map_err(|m| invalid(&format!("eid_keys[{i}]"), &m))?;
    }
    if c.tags.iter().any(|t| t.is_empty() || t.len() > 64) {
        return Err(invalid("tags", "each tag must be 1..=64 characters"));
    }
    Ok(())
}

/// Writes `new` over `old` (None: a new customer): the record and its index keys, refusing
/// an index key that another customer holds. The commit conflicts if anything changed since.
pub fn save_customer(
    store: &dyn Store,
    old: Option<(&Customer, &[u8])>,
    new: &Customer,
) -> Result<Commit, IdentityError> {
    save_customer_taking(store, old, new, None)
}

/// Like [`save_customer`], but an index key customer `from` holds may be taken over (the
/// commit expects `from` to hold it; save `from` without it in the same commit, first).
fn save_customer_taking(
    store: &dyn Store,
    old: Option<(&Customer, &[u8])>,
    new: &Customer,
    from: Option<&str>,
) -> Result<Commit, IdentityError> {
    validate(new)?;
    let mut c = Commit::new();
    c.expect(
        Space::Identity,
        keys::customer(&new.id),
        old.map(|(_, bytes)| bytes.to_vec()),
    );
    let old_keys: BTreeSet<String> = old
        .map(|(o, _)| index_keys(o).into_iter().map(|(k, _, _)| k).collect())
        .unwrap_or_default();
    let new_keys = index_keys(new);
    for (key, field, value) in &new_keys {
        if old_keys.contains(key) {
            continue;
        }
        let owner = lookup(store, key)?;
        match &owner {
            Some(o) if *o != new.id && Some(o.as_str()) != from => {
                return Err(IdentityError::Taken {
                    field,
                    value: value.clone(),
                });
            }
            _ => {}
        }
        c.expect(
            Space::Identity,
            key.clone(),
            owner
                .filter(|o| Some(o.as_str()) == from)
                .map(String::into_bytes),
        );
        c.put(Space::Identity, key.clone(), new.id.clone());
    }
    for k in old_keys {
        if !new_keys.iter().any(|(n, _, _)| *n == k) {
            c.delete(Space::Identity, k);
        }
    }
    c.put(Space::Identity, keys::customer(&new.id), json(new));
    Ok(c)
}

/// Reads a customer with the bytes a later save must expect.
pub fn customer_for_update(
    store: &dyn Store,
    id: &str,
) -> Result<(Customer, Vec<u8>), IdentityError> {
    read(store, &keys::customer(id))?.ok_or_else(|| IdentityError::NotFound(id.to_owned()))
}

/// The customer linked to a LINE user, creating one (and the commit that stores it) if none.
pub fn customer_for_line(
    store: &dyn Store,
    user: &str,
    now: Timestamp,
) -> Result<(Customer, Option<Commit>), IdentityError> {
    if let Some(id) = lookup(store, &keys::line_user(user))? {
        let (c, _) = customer_for_update(store, &id)?;
        return Ok((c, None));
    }
    let mut c = new_customer(now);
    c.line_user = Some(user.to_owned());
    let commit = save_customer(store, None, &c)?;
    Ok((c, Some(commit)))
}

/// A customer's record with its stored bytes (for a commit that must see it unchanged).
pub fn customer_record(
    store: &dyn Store,
    id: &str,
) -> Result<Option<(Customer, Vec<u8>)>, StoreError> {
    read(store, &keys::customer(id))
}

/// Makes `c` apply only if customer `id` still holds `bytes` (a decision made on what it read
/// of the customer is not committed over a consent change or an erasure).
pub fn expect_customer(c: &mut Commit, id: &str, bytes: Vec<u8>) {
    c.expect(Space::Identity, keys::customer(id), Some(bytes));
}

/// Joins a LINE user to the brand's member (the LINE account link): the member's customer
/// (created if the member is new here) gets the LINE user id and the LINE consent records; a
/// customer the LINE user had apart keeps its history but loses the LINE link. One commit,
/// expecting every record it read unchanged. Returns the member's customer after the join.
pub fn join_line_user(
    store: &dyn Store,
    member_id: &str,
    user: &str,
    now: Timestamp,
) -> Result<(Customer, Commit), IdentityError> {
    let (old_member, mut member) = match lookup(store, &keys::member(member_id))? {
        Some(id) => {
            let (c, bytes) = customer_for_update(store, &id)?;
            (Some((c.clone(), bytes)), c)
        }
        None => {
            let mut c = new_customer(now);
            c.member_id = Some(member_id.to_owned());
            (None, c)
        }
    };
    let mut commit = Commit::new();
    if member.line_user.as_deref().is_some_and(|u| u != user) {
        // The member's LINE consent belonged to the LINE account they had: it goes with it.
        member
            .consent_records
            .retain(|r| r.channel != ConsentChannel::Line);
        member.consent.line = false;
    }
    let apart = lookup(store, &keys::line_user(user))?.filter(|id| *id != member.id);
    if let Some(id) = &apart {
        let (old, bytes) = customer_for_update(store, id)?;
        let mut unlinked = old.clone();
        unlinked.line_user = None;
        for r in old
            .consent_records
            .iter()
            .filter(|r| r.channel == ConsentChannel::Line)
        {
            member.record_consent(r.clone());
        }
        commit.extend(save_customer(store, Some((&old, &bytes)), &unlinked)?);
    }
    member.line_user = Some(user.to_owned());
    commit.extend(save_customer_taking(
        store,
        old_member.as_ref().map(|(c, b)| (c, b.as_slice())),
        &member,
        apart.as_deref(),
    )?);
    Ok((member, commit))
}

/// Every customer's EID keys, for the resolver.
pub fn all_eid_keys(store: &dyn Store) -> Result<Vec<(String, EidIdentity)>, StoreError> {
    // Through the `eid/` index: only the customers with keys are read, however many there are.
    let mut ids = BTreeSet::new();
    for (_, v) in crate::store::barrier::scan_prefix(
        store,
        Space::Identity,
        keys::EIDS.as_bytes(),
        usize::MAX,
    )? {
        ids.insert(String::from_utf8_lossy(&v).into_owned());
    }
    let mut out = Vec::new();
    for id in ids {
        let Some(c) = customer(store, &id)? else {
            continue;
        };
        for key in &c.eid_keys {
            if let Ok(identity) = key.identity() {
                out.push((c.id.clone(), identity));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sled_store::SledStore;

    fn now() -> Timestamp {
        "2026-11-23T10:00:00.000Z".parse().unwrap()
    }

    fn open() -> (tempfile::TempDir, SledStore) {
        let d = tempfile::tempdir().unwrap();
        let s = SledStore::open(d.path(), 1 << 20).unwrap();
        (d, s)
    }

    fn request(member: Option<&str>) -> InstallRequest {
        InstallRequest {
            platform: Platform::Android,
            push_token: Some("fcm-token".into()),
            member_id: member.map(str::to_owned),
            member_sig: None,
            eid: None,
            consent: None,
        }
    }

    fn change(
        channel: ConsentChannel,
        granted: bool,
        at_ms: i64,
        source: ConsentSource,
    ) -> ConsentChange {
        ConsentChange {
            channel,
            granted,
            at: Timestamp::from_millis(at_ms).unwrap(),
            recorded: Timestamp::from_millis(9_000_000).unwrap(),
            source,
            text_version: None,
        }
    }

    #[test]
    fn consent_is_derived_from_its_records_latest_event_first() {
        let mut c = new_customer(now());
        assert!(c.record_consent(change(
            ConsentChannel::Line,
            true,
            1_000,
            ConsentSource::Line
        )));
        assert!(c.consent.line);
        // Unfollowed later: withdrawn at once.
        assert!(c.record_consent(change(
            ConsentChannel::Line,
            false,
            5_000,
            ConsentSource::Line
        )));
        assert!(!c.consent.line);
        // A redelivered follow from before the unfollow is recorded but changes nothing; the
        // very same record again is not recorded twice.
        assert!(!c.record_consent(change(
            ConsentChannel::Line,
            true,
            2_000,
            ConsentSource::Line
        )));
        assert!(!c.record_consent(change(
            ConsentChannel::Line,
            true,
            2_000,
            ConsentSource::Line
        )));
        assert!(!c.consent.line);
        assert_eq!(c.consent_records.len(), 3);
        // Other channels are independent; flags set as admin become records.
        let wanted = Consent {
            push: true,
            location: true,
            ..c.consent
        };
        let changed = c.set_consent(wanted, ConsentSource::Admin, Some("v3"), now());
        assert_eq!(changed, [ConsentChannel::Push, ConsentChannel::Location]);
        assert!(c.consent.push && c.consent.location && !c.consent.line);
        let last = c.consent_records.last().unwrap();
        assert_eq!(
            (last.source, last.text_version.as_deref()),
            (ConsentSource::Admin, Some("v3"))
        );
        assert!(c
            .set_consent(wanted, ConsentSource::Admin, None, now())
            .is_empty());
    }

    #[test]
    fn an_install_records_the_consent_given_in_the_app() {
        let (_d, s) = open();
        let mut req = request(None);
        req.consent = Some(AppConsent {
            push: Some(true),
            location: Some(true),
            text_version: "2026-11".into(),
        });
        let (install, _, c) = register_install(&s, &req, now()).unwrap();
        s.commit(c).unwrap();
        let c = customer(&s, &install.customer).unwrap().unwrap();
        assert!(c.consent.push && c.consent.location && !c.consent.line);
        assert!(c.consent_records.iter().all(
            |r| r.source == ConsentSource::App && r.text_version.as_deref() == Some("2026-11")
        ));
    }

    #[test]
    fn installs_of_one_member_join_one_customer_and_tokens_authenticate() {
        let (_d, s) = open();
        let (a, token_a, c) = register_install(&s, &request(Some("m1")), now()).unwrap();
        s.commit(c).unwrap();
        let (b, _, c) = register_install(&s, &request(Some("m1")), now()).unwrap();
        s.commit(c).unwrap();
        assert_eq!(a.customer, b.customer);
        let customer = customer(&s, &a.customer).unwrap().unwrap();
        assert_eq!(customer.installs, [a.id.clone(), b.id.clone()]);
        assert_eq!(
            authenticate_install(&s, &token_a).unwrap().unwrap().id,
            a.id
        );
        assert!(authenticate_install(&s, &format!("{}.wrong", a.id))
            .unwrap()
            .is_none());
        assert!(authenticate_install(&s, "garbage").unwrap().is_none());
        let (other, _, c) = register_install(&s, &request(None), now()).unwrap();
        s.commit(c).unwrap();
        assert_ne!(other.customer, a.customer);
    }

    #[test]
    fn eid_keys_are_read_from_their_index_and_follow_changes() {
        let (_d, s) = open();
        let key = EidKey {
            identity_key: "00112233445566778899aabbccddeeff".into(),
            exponent: 10,
            clock_offset_s: 0,
        };
        let mut with = new_customer(now());
        with.eid_keys.push(key.clone());
        s.commit(save_customer(&s, None, &with).unwrap()).unwrap();
        for _ in 0..3 {
            let plain = new_customer(now());
            s.commit(save_customer(&s, None, &plain).unwrap()).unwrap();
        }
        let keys = all_eid_keys(&s).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].0, with.id);
        assert_eq!(keys[0].1, key.identity().unwrap());
        let (old, bytes) = customer_for_update(&s, &with.id).unwrap();
        let mut without = old.clone();
        without.eid_keys.clear();
        s.commit(save_customer(&s, Some((&old, &bytes)), &without).unwrap())
            .unwrap();
        assert!(all_eid_keys(&s).unwrap().is_empty());
    }

    #[test]
    fn two_racing_registrations_cannot_create_a_member_twice() {
        let (_d, s) = open();
        let (_, _, first) = register_install(&s, &request(Some("m2")), now()).unwrap();
        let (_, _, second) = register_install(&s, &request(Some("m2")), now()).unwrap();
        s.commit(first).unwrap();
        assert!(matches!(s.commit(second), Err(StoreError::Conflict { .. })));
    }

    #[test]
    fn index_keys_are_unique_and_follow_changes() {
        let (_d, s) = open();
        let (a, _) = customer_for_line(&s, "U1", now())
            .map(|(c, commit)| {
                s.commit(commit.unwrap()).unwrap();
                (c, ())
            })
            .unwrap();
        let (again, none) = customer_for_line(&s, "U1", now()).unwrap();
        assert_eq!(again.id, a.id);
        assert!(none.is_none());
        let mut b = new_customer(now());
        b.line_user = Some("U1".into());
        let err = save_customer(&s, None, &b).unwrap_err();
        assert!(
            matches!(
                err,
                IdentityError::Taken {
                    field: "line_user",
                    ..
                }
            ),
            "{err}"
        );
        // Moving the LINE id frees the old index key.
        let (mut c, bytes) = customer_for_update(&s, &a.id).unwrap();
        let old = c.clone();
        c.line_user = Some("U2".into());
        s.commit(save_customer(&s, Some((&old, &bytes)), &c).unwrap())
            .unwrap();
        assert_eq!(lookup(&s, "line/U1").unwrap(), None);
        assert_eq!(lookup(&s, "line/U2").unwrap(), Some(a.id.clone()));
        let mut bad = c.clone();
        bad.eid_keys.push(EidKey {
            identity_key: "zz".into(),
            exponent: 10,
            clock_offset_s: 0,
        });
        let err = save_customer(&s, None, &bad).unwrap_err().to_string();
        assert!(err.starts_with("eid_keys[0]"), "{err}");
    }
}
