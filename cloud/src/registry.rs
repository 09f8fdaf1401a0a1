//! The gateway registry (DESIGN.md, "Registry"): stores, gateways (password hash, signing key),
//! beacons and zones, with each gateway's desired remote config and its last config ack, and
//! each store's POS API keys. The store is the authority; [`Registry`] is the in-memory view
//! rebuilt from it after every change, which the broker's login check and ingest read.
//!
//! Every change is validated as a whole site (the format `omo-config validate` checks), so a
//! record can never point at a store or gateway that is not there.

use std::collections::{BTreeMap, HashMap};

use omo_device_config::broker_auth::PasswordHash;
use omo_device_config::payload::{ConfigAck, RemoteConfig};
use omo_device_config::problems::Problem;
use omo_device_config::site::{self, Site};
use omo_device_config::{GatewayId, SigningKey, StoreId};
use serde::{Deserialize, Serialize};

use crate::store::{Commit, Space, Store, StoreError};

/// A zone of any kind, as stored (its `kind` tags it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Zone {
    Beacon(site::BeaconZone),
    Gateway(site::GatewayZone),
    Wifi(site::WifiZone),
    Geofence(site::Geofence),
}

impl Zone {
    /// The store the zone belongs to.
    pub fn store(&self) -> &StoreId {
        match self {
            Zone::Beacon(z) => &z.store,
            Zone::Gateway(z) => &z.store,
            Zone::Wifi(z) => &z.store,
            Zone::Geofence(z) => &z.store,
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Zone::Beacon(z) => z.id.as_str(),
            Zone::Gateway(z) => z.id.as_str(),
            Zone::Wifi(z) => z.id.as_str(),
            Zone::Geofence(z) => z.id.as_str(),
        }
    }

    /// Its name (may be empty).
    pub fn name(&self) -> &str {
        match self {
            Zone::Beacon(z) => &z.name,
            Zone::Gateway(z) => &z.name,
            Zone::Wifi(z) => &z.name,
            Zone::Geofence(z) => &z.name,
        }
    }
}

/// A gateway as ingest and the broker need it: parsed credentials and key.
#[derive(Debug, Clone)]
pub struct GatewayEntry {
    pub record: site::Gateway,
    pub password: PasswordHash,
    pub key: SigningKey,
    /// The desired remote config (its JSON as stored, and the version in it).
    pub desired: Option<DesiredConfig>,
    /// The gateway's last `config/ack`.
    pub last_ack: Option<ConfigAck>,
}

/// A desired remote config document.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredConfig {
    pub version: u64,
    pub json: Vec<u8>,
}

/// A store's POS API key, stored as its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PosKey {
    pub id: String,
    pub sha256: String,
}

/// Why a registry change was refused or the stored registry could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<Problem>),
    #[error("stored registry record {key}: {reason}")]
    Corrupt { key: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The in-memory registry.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    /// Changes whenever the registry is reloaded, so caches built from it know to rebuild.
    pub generation: u64,
    site: Site,
    gateways: HashMap<GatewayId, GatewayEntry>,
    pos_keys: BTreeMap<StoreId, Vec<PosKey>>,
}

const STORE: &str = "store/";
const GATEWAY: &str = "gateway/";
const BEACON: &str = "beacon/";
const ZONE: &str = "zone/";
const CONFIG: &str = "gateway-config/";
const CONFIG_ACK: &str = "gateway-config-ack/";
const POS_KEY: &str = "pos-key/";

fn corrupt(key: &[u8], reason: impl ToString) -> RegistryError {
    RegistryError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: reason.to_string(),
    }
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("registry records serialise")
}

impl Registry {
    /// Reads the whole registry from the store.
    pub fn load(store: &dyn Store) -> Result<Registry, RegistryError> {
        let mut site = Site::default();
        let mut configs = HashMap::new();
        let mut acks = HashMap::new();
        let mut pos_keys: BTreeMap<StoreId, Vec<PosKey>> = BTreeMap::new();
        let mut from = Vec::new();
        loop {
            let page = store.scan(Space::Registry, &from, 1000)?;
            let Some((last, _)) = page.last() else { break };
            from = last.clone();
            from.push(0);
            for (k, v) in &page {
                let key = std::str::from_utf8(k).map_err(|e| corrupt(k, e))?;
                let parse_err = |e: serde_json::Error| corrupt(k, e);
                if key.starts_with(STORE) {
                    site.stores
                        .push(serde_json::from_slice(v).map_err(parse_err)?);
                } else if key.starts_with(GATEWAY) {
                    site.gateways
                        .push(serde_json::from_slice(v).map_err(parse_err)?);
                } else if key.starts_with(BEACON) {
                    site.beacons
                        .push(serde_json::from_slice(v).map_err(parse_err)?);
                } else if key.starts_with(ZONE) {
                    match serde_json::from_slice(v).map_err(parse_err)? {
                        Zone::Beacon(z) => site.beacon_zones.push(z),
                        Zone::Gateway(z) => site.gateway_zones.push(z),
                        Zone::Wifi(z) => site.wifi_zones.push(z),
                        Zone::Geofence(z) => site.geofences.push(z),
                    }
                } else if let Some(id) = key.strip_prefix(CONFIG) {
                    let read =
                        RemoteConfig::read(std::str::from_utf8(v).map_err(|e| corrupt(k, e))?)
                            .map_err(|p| corrupt(k, RegistryError::Invalid(p)))?;
                    let desired = DesiredConfig {
                        version: read.config.version,
                        json: v.clone(),
                    };
                    configs.insert(id.to_owned(), desired);
                } else if let Some(id) = key.strip_prefix(CONFIG_ACK) {
                    let ack: ConfigAck = serde_json::from_slice(v).map_err(parse_err)?;
                    acks.insert(id.to_owned(), ack);
                } else if let Some(rest) = key.strip_prefix(POS_KEY) {
                    let (store_id, _) = rest
                        .split_once('/')
                        .ok_or_else(|| corrupt(k, "no key id"))?;
                    let store_id = StoreId::new(store_id).map_err(|e| corrupt(k, e))?;
                    pos_keys
                        .entry(store_id)
                        .or_default()
                        .push(serde_json::from_slice(v).map_err(parse_err)?);
                } else {
                    return Err(corrupt(k, "unknown record type"));
                }
            }
        }
        Registry::build(site, configs, acks, pos_keys)
    }

    fn build(
        site: Site,
        mut configs: HashMap<String, DesiredConfig>,
        mut acks: HashMap<String, ConfigAck>,
        pos_keys: BTreeMap<StoreId, Vec<PosKey>>,
    ) -> Result<Registry, RegistryError> {
        let mut gateways = HashMap::new();
        for g in &site.gateways {
            let key = format!("{GATEWAY}{}", g.id);
            let password = g
                .password_hash
                .parse::<PasswordHash>()
                .map_err(|e| corrupt(key.as_bytes(), e))?;
            let signing =
                SigningKey::from_hex(&g.signing_key).map_err(|e| corrupt(key.as_bytes(), e))?;
            gateways.insert(
                g.id.clone(),
                GatewayEntry {
                    record: g.clone(),
                    password,
                    key: signing,
                    desired: configs.remove(g.id.as_str()),
                    last_ack: acks.remove(g.id.as_str()),
                },
            );
        }
        static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Ok(Registry {
            generation: GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            site,
            gateways,
            pos_keys,
        })
    }

    /// The time zone of store `id` (`None`: no such store, or its zone is not one).
    pub fn store_tz(&self, id: &str) -> Option<chrono_tz::Tz> {
        self.site()
            .stores
            .iter()
            .find(|s| s.id.as_str() == id)
            .and_then(|s| crate::vocab::time_zone(&s.time_zone))
    }

    /// The registry as a site document.
    pub fn site(&self) -> &Site {
        &self.site
    }

    pub fn gateway(&self, id: &str) -> Option<&GatewayEntry> {
        GatewayId::new(id)
            .ok()
            .and_then(|id| self.gateways.get(&id))
    }

    pub fn gateways(&self) -> impl Iterator<Item = &GatewayEntry> {
        self.gateways.values()
    }

    pub fn store(&self, id: &StoreId) -> Option<&site::Store> {
        self.site.stores.iter().find(|s| &s.id == id)
    }

    /// Whether this client may log in to the embedded broker: username = client id = a known,
    /// enabled gateway, and the password matches its stored hash.
    pub fn broker_login_ok(&self, client_id: &str, username: &str, password: &str) -> bool {
        client_id == username
            && self
                .gateway(username)
                .is_some_and(|g| g.record.enabled && g.password.verify(password))
    }

    /// The longest stay interval any gateway uses: its desired config's, or the default for
    /// gateways without one. Visit exit timeouts must be longer.
    pub fn max_stay_interval_s(&self) -> u32 {
        let default = omo_device_config::params::PresenceParams::default().stay_interval_s;
        self.gateways
            .values()
            .filter_map(|g| g.desired.as_ref())
            .filter_map(|d| std::str::from_utf8(&d.json).ok())
            .filter_map(|j| RemoteConfig::read(j).ok())
            .map(|r| r.config.presence.stay_interval_s)
            .fold(default, u32::max)
    }

    /// Records a gateway's config ack in memory (after it was committed).
    pub fn set_last_ack(&mut self, gateway: &GatewayId, ack: ConfigAck) {
        if let Some(g) = self.gateways.get_mut(gateway) {
            g.last_ack = Some(ack);
        }
    }

    /// Records a gateway's desired config in memory (after it was committed).
    pub fn set_desired(&mut self, gateway: &GatewayId, desired: DesiredConfig) {
        if let Some(g) = self.gateways.get_mut(gateway) {
            g.desired = Some(desired);
        }
    }

    /// The POS keys of a store.
    pub fn pos_keys(&self, store: &StoreId) -> &[PosKey] {
        self.pos_keys.get(store).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The zones as stored records.
    pub fn zones(&self) -> Vec<Zone> {
        let s = &self.site;
        let mut zones: Vec<Zone> = s
            .beacon_zones
            .iter()
            .cloned()
            .map(Zone::Beacon)
            .chain(s.gateway_zones.iter().cloned().map(Zone::Gateway))
            .chain(s.wifi_zones.iter().cloned().map(Zone::Wifi))
            .chain(s.geofences.iter().cloned().map(Zone::Geofence))
            .collect();
        zones.sort_by(|a, b| a.id().cmp(b.id()));
        zones
    }
}

/// A commit that makes the registry's site records exactly `site` (after validating it):
/// records not in `site` are deleted, with their configs, acks and POS keys; the configs
/// of gateways that stay are kept.
pub fn replace_site(current: &Registry, site: &Site) -> Result<Commit, RegistryError> {
    site.validate().map_err(RegistryError::Invalid)?;
    let mut c = Commit::new();
    let old = &current.site;
    let old_keys: Vec<String> = old
        .stores
        .iter()
        .map(|s| format!("{STORE}{}", s.id))
        .chain(old.gateways.iter().map(|g| format!("{GATEWAY}{}", g.id)))
        .chain(old.beacons.iter().map(|b| format!("{BEACON}{}", b.id)))
        .chain(current.zones().iter().map(|z| format!("{ZONE}{}", z.id())))
        .collect();
    for k in old_keys {
        c.delete(Space::Registry, k.into_bytes());
    }
    for s in &site.stores {
        c.put(Space::Registry, format!("{STORE}{}", s.id), json(s));
    }
    for g in &site.gateways {
        c.put(Space::Registry, format!("{GATEWAY}{}", g.id), json(g));
    }
    for b in &site.beacons {
        c.put(Space::Registry, format!("{BEACON}{}", b.id), json(b));
    }
    let new = Registry {
        site: site.clone(),
        ..Registry::default()
    };
    for z in new.zones() {
        c.put(Space::Registry, format!("{ZONE}{}", z.id()), json(&z));
    }
    for g in &old.gateways {
        if !site.gateways.iter().any(|n| n.id == g.id) {
            c.delete(Space::Registry, format!("{CONFIG}{}", g.id));
            c.delete(Space::Registry, format!("{CONFIG_ACK}{}", g.id));
        }
    }
    for (store_id, keys) in &current.pos_keys {
        if !site.stores.iter().any(|s| &s.id == store_id) {
            for k in keys {
                c.delete(Space::Registry, format!("{POS_KEY}{store_id}/{}", k.id));
            }
        }
    }
    Ok(c)
}

/// A commit that sets a gateway's desired config; the version must be newer than the current,
/// and its stay interval shorter than `visit_bound_s` (the visits' exit timeout and grace).
pub fn set_desired_config(
    current: &Registry,
    gateway: &GatewayId,
    json_text: &str,
    visit_bound_s: u32,
) -> Result<(Commit, DesiredConfig), RegistryError> {
    let entry = current.gateway(gateway.as_str()).ok_or_else(|| {
        RegistryError::Invalid(vec![Problem::new(
            "gateway",
            format!("{gateway} is not registered"),
        )])
    })?;
    let read = RemoteConfig::read(json_text).map_err(RegistryError::Invalid)?;
    if read.config.presence.stay_interval_s >= visit_bound_s {
        return Err(RegistryError::Invalid(vec![Problem::new(
            "presence.stay_interval_s",
            format!(
                "{} s must be shorter than the cloud's visits.exit_timeout_s and visits.exit_grace_s ({visit_bound_s} s)",
                read.config.presence.stay_interval_s
            ),
        )]));
    }
    if let Some(d) = &entry.desired {
        if read.config.version <= d.version {
            return Err(RegistryError::Invalid(vec![Problem::new(
                "version",
                format!("must be newer than the current {}", d.version),
            )]));
        }
    }
    // Stored as sent (keys this build does not know included): the gateway gets these bytes.
    let json = json_text.trim().as_bytes().to_vec();
    let mut c = Commit::new();
    c.put(Space::Registry, format!("{CONFIG}{gateway}"), json.clone());
    Ok((
        c,
        DesiredConfig {
            version: read.config.version,
            json,
        },
    ))
}

/// A commit that records a gateway's config ack.
pub fn record_config_ack(gateway: &GatewayId, ack: &ConfigAck) -> Commit {
    let mut c = Commit::new();
    c.put(Space::Registry, format!("{CONFIG_ACK}{gateway}"), json(ack));
    c
}

/// A commit that adds a POS key to a store.
pub fn add_pos_key(store: &StoreId, key: &PosKey) -> Commit {
    let mut c = Commit::new();
    c.put(
        Space::Registry,
        format!("{POS_KEY}{store}/{}", key.id),
        json(key),
    );
    c
}

/// A commit that revokes POS key `key_id` of `store`.
pub fn remove_pos_key(store: &StoreId, key_id: &str) -> Commit {
    let mut c = Commit::new();
    c.delete(Space::Registry, format!("{POS_KEY}{store}/{key_id}"));
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sled_store::SledStore;

    const SITE: &str = include_str!("../../device-config/examples/site.toml");

    fn open() -> (tempfile::TempDir, SledStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path(), 1 << 20).unwrap();
        (dir, s)
    }

    #[test]
    fn a_site_round_trips_through_the_store() {
        let (_d, s) = open();
        let site = Site::parse(SITE, false).unwrap();
        let empty = Registry::load(&s).unwrap();
        s.commit(replace_site(&empty, &site).unwrap()).unwrap();
        let reg = Registry::load(&s).unwrap();
        assert_eq!(reg.site().stores, site.stores);
        assert_eq!(reg.site().gateways, site.gateways);
        assert_eq!(
            reg.zones().len(),
            Registry {
                site: site.clone(),
                ..Registry::default()
            }
            .zones()
            .len()
        );
        let gw = &site.gateways[0];
        assert!(reg.gateway(gw.id.as_str()).is_some());
        // The example gateway.toml's placeholder password matches the example site's hash.
        assert!(reg.broker_login_ok(
            gw.id.as_str(),
            gw.id.as_str(),
            "change-me-use-omo-config-provision"
        ));
        assert!(!reg.broker_login_ok(gw.id.as_str(), gw.id.as_str(), "wrong"));
        assert!(!reg.broker_login_ok(
            "other",
            gw.id.as_str(),
            "change-me-use-omo-config-provision"
        ));
    }

    #[test]
    fn replacing_the_site_removes_what_it_no_longer_lists() {
        let (_d, s) = open();
        let site = Site::parse(SITE, false).unwrap();
        s.commit(replace_site(&Registry::default(), &site).unwrap())
            .unwrap();
        let reg = Registry::load(&s).unwrap();
        let gw = site.gateways[0].id.clone();
        let (c, _) = set_desired_config(&reg, &gw, r#"{"version":3}"#, 300).unwrap();
        s.commit(c).unwrap();
        let reg = Registry::load(&s).unwrap();
        assert_eq!(
            reg.gateway(gw.as_str())
                .unwrap()
                .desired
                .as_ref()
                .unwrap()
                .version,
            3
        );
        // Not newer: refused, naming the field; a stay interval the visit exit would cut, too.
        let err = set_desired_config(
            &reg,
            &gw,
            r#"{"version":4,"presence":{"stay_interval_s":300}}"#,
            300,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("presence.stay_interval_s"),
            "{err}"
        );
        let err = set_desired_config(&reg, &gw, r#"{"version":3}"#, 300).unwrap_err();
        assert!(err.to_string().contains("version"), "{err}");
        let mut smaller = site.clone();
        smaller.gateways.clear();
        smaller.gateway_zones.clear();
        s.commit(replace_site(&reg, &smaller).unwrap()).unwrap();
        let reg = Registry::load(&s).unwrap();
        assert!(reg.gateway(gw.as_str()).is_none());
        assert!(s
            .scan(Space::Registry, CONFIG.as_bytes(), 10)
            .unwrap()
            .iter()
            .all(|(k, _)| !k.starts_with(CONFIG.as_bytes())));
    }

    #[test]
    fn an_invalid_site_is_refused_with_its_keys() {
        let mut site = Site::parse(SITE, false).unwrap();
        site.gateways[0].store = StoreId::new("nowhere").unwrap();
        let err = replace_site(&Registry::default(), &site)
            .unwrap_err()
            .to_string();
        assert!(err.contains("gateways[0].store"), "{err}");
    }
}
