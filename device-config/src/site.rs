//! The site registry file (TOML or JSON; `omo-config validate` checks it, `omo-cloud import`
//! loads it): stores, gateways with their credentials, store-fixed beacons, and zones of four
//! kinds — beacon zones, gateway zones, Wi-Fi zones and geofences.
//!
//! This module checks that a site is self-consistent (ids unique, references resolve, numbers
//! in range, geometries well formed); matching observations against zones is the cloud's job.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::beacon_id::BeaconId;
use crate::broker_auth::PasswordHash;
use crate::envelope::SigningKey;
use crate::ids::{GatewayId, StoreId, ZoneId};
use crate::problems::{
    parse_document, FileProblems, Format, Problem, Problems, Reader, UnknownKeys,
};

/// A whole site file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Site {
    pub stores: Vec<Store>,
    #[serde(default)]
    pub gateways: Vec<Gateway>,
    #[serde(default)]
    pub beacons: Vec<Beacon>,
    #[serde(default)]
    pub beacon_zones: Vec<BeaconZone>,
    #[serde(default)]
    pub gateway_zones: Vec<GatewayZone>,
    #[serde(default)]
    pub wifi_zones: Vec<WifiZone>,
    #[serde(default)]
    pub geofences: Vec<Geofence>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Store {
    pub id: StoreId,
    pub name: String,
    /// IANA time zone (`Asia/Tokyo`): schedules and quiet hours use the store's own time.
    pub time_zone: String,
    pub location: LatLon,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatLon {
    pub lat: f64,
    pub lon: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gateway {
    pub id: GatewayId,
    pub store: StoreId,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `$7$…` as `omo-config provision` prints it.
    pub password_hash: String,
    /// 64 hex digits, as `omo-config provision` prints it.
    pub signing_key: String,
    /// Where it stands, for the store's map (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<LatLon>,
}

fn yes() -> bool {
    true
}

/// A store-fixed beacon that phones (the brand app, the LINE app) report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Beacon {
    pub id: BeaconId,
    pub store: StoreId,
    #[serde(default)]
    pub name: String,
    /// Where it is placed, for the store's map (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<LatLon>,
}

/// Phones reporting any of these beacons (optionally at least this strong) are in the zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BeaconZone {
    pub id: ZoneId,
    pub store: StoreId,
    #[serde(default)]
    pub name: String,
    pub beacons: Vec<BeaconId>,
    #[serde(default)]
    pub min_rssi_dbm: Option<f64>,
}

/// Devices heard by any of these gateways within a distance or RSSI threshold are in the zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayZone {
    pub id: ZoneId,
    pub store: StoreId,
    #[serde(default)]
    pub name: String,
    pub gateways: Vec<GatewayId>,
    #[serde(default)]
    pub max_distance_m: Option<f64>,
    #[serde(default)]
    pub min_rssi_dbm: Option<f64>,
}

/// A phone's Wi-Fi scan seeing at least `min_matches` of these BSSIDs (at least this strong).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WifiZone {
    pub id: ZoneId,
    pub store: StoreId,
    #[serde(default)]
    pub name: String,
    /// `aa:bb:cc:dd:ee:ff`, either case.
    pub bssids: Vec<String>,
    #[serde(default = "one")]
    pub min_matches: u32,
    #[serde(default)]
    pub min_rssi_dbm: Option<f64>,
}

fn one() -> u32 {
    1
}

/// A GPS geofence: a GeoJSON Polygon/MultiPolygon (lon, lat order) or a circle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Geofence {
    pub id: ZoneId,
    pub store: StoreId,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub geometry: Option<Geometry>,
    #[serde(default)]
    pub circle: Option<Circle>,
}

/// A GeoJSON geometry object; only `Polygon` and `MultiPolygon` are geofences.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Geometry {
    #[serde(rename = "type")]
    pub kind: String,
    /// Checked by [`Geometry::polygons`], which names the position at fault.
    pub coordinates: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Circle {
    pub lat: f64,
    pub lon: f64,
    pub radius_m: f64,
}

/// A polygon: an exterior ring then holes, each a closed list of `[lon, lat]`.
pub type Polygon = Vec<Vec<[f64; 2]>>;

/// Largest circle radius accepted; a larger "store" geofence is a typo.
pub const MAX_RADIUS_M: f64 = 50_000.0;

impl Geometry {
    /// The geometry's polygons, or the problem with the key path under `key`.
    pub fn polygons(&self, key: &str) -> Result<Vec<Polygon>, Problem> {
        let coords = format!("{key}.coordinates");
        match self.kind.as_str() {
            "Polygon" => Ok(vec![polygon(&self.coordinates, &coords)?]),
            "MultiPolygon" => {
                let list = self
                    .coordinates
                    .as_array()
                    .ok_or_else(|| Problem::new(&coords, "must be an array of polygons"))?;
                if list.is_empty() {
                    return Err(Problem::new(&coords, "has no polygons"));
                }
                list.iter()
                    .enumerate()
                    .map(|(i, p)| polygon(p, &format!("{coords}[{i}]")))
                    .collect()
            }
            other => Err(Problem::new(
                format!("{key}.type"),
                format!("{other:?} is not a geofence geometry; use Polygon or MultiPolygon"),
            )),
        }
    }
}

fn polygon(value: &Value, key: &str) -> Result<Polygon, Problem> {
    let rings = value
        .as_array()
        .ok_or_else(|| Problem::new(key, "must be an array of linear rings"))?;
    if rings.is_empty() {
        return Err(Problem::new(key, "has no exterior ring"));
    }
    rings
        .iter()
        .enumerate()
        .map(|(r, ring)| {
            let rkey = format!("{key}[{r}]");
            let positions = ring
                .as_array()
                .ok_or_else(|| Problem::new(&rkey, "must be an array of [lon, lat] positions"))?;
            let ring: Vec<[f64; 2]> = positions
                .iter()
                .enumerate()
                .map(|(i, pos)| position(pos, &format!("{rkey}[{i}]")))
                .collect::<Result<_, _>>()?;
            check_ring(&ring, &rkey)?;
            Ok(ring)
        })
        .collect()
}

/// A linear ring's own rules, its positions already in range: at least four, and closed.
pub fn check_ring(ring: &[[f64; 2]], key: &str) -> Result<(), Problem> {
    if ring.len() < 4 {
        return Err(Problem::new(
            key,
            format!(
                "has {} positions; a closed ring needs at least 4",
                ring.len()
            ),
        ));
    }
    if ring.first() != ring.last() {
        return Err(Problem::new(
            key,
            "is not closed: the last position must equal the first",
        ));
    }
    Ok(())
}

fn position(value: &Value, key: &str) -> Result<[f64; 2], Problem> {
    let pair = value
        .as_array()
        .filter(|a| a.len() >= 2)
        .ok_or_else(|| Problem::new(key, "must be [lon, lat]"))?;
    let (Some(lon), Some(lat)) = (pair[0].as_f64(), pair[1].as_f64()) else {
        return Err(Problem::new(key, "must be [lon, lat] numbers"));
    };
    check_lon_lat(lon, lat).map_err(|m| Problem::new(key, m))?;
    Ok([lon, lat])
}

/// A placed device's location, if it has one, in range.
fn check_location(at: Option<&LatLon>, k: &str, p: &mut Problems) {
    if let Some(at) = at {
        if let Err(m) = check_lon_lat(at.lon, at.lat) {
            p.push(format!("{k}.location"), m);
        }
    }
}

/// A position's longitude in -180..=180 and latitude in -90..=90.
pub fn check_lon_lat(lon: f64, lat: f64) -> Result<(), String> {
    if !(-180.0..=180.0).contains(&lon) {
        return Err(format!("longitude {lon} is not in -180..=180"));
    }
    if !(-90.0..=90.0).contains(&lat) {
        return Err(format!("latitude {lat} is not in -90..=90"));
    }
    Ok(())
}

/// Parses a BSSID (`aa:bb:cc:dd:ee:ff`, either case).
pub fn parse_bssid(text: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = text.split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    let mut out = [0u8; 6];
    for (o, p) in out.iter_mut().zip(parts) {
        if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *o = u8::from_str_radix(p, 16).ok()?;
    }
    Some(out)
}

impl Site {
    /// The top-level keys.
    pub const KEYS: [&'static str; 7] = [
        "stores",
        "gateways",
        "beacons",
        "beacon_zones",
        "gateway_zones",
        "wifi_zones",
        "geofences",
    ];

    /// Parses and validates a site file's text; `json` picks the format. Every record is read
    /// on its own, so one bad record does not hide the problems of the others.
    pub fn parse(text: &str, json: bool) -> Result<Site, Vec<Problem>> {
        let format = if json { Format::Json } else { Format::Toml };
        let doc = parse_document(text, format).map_err(|p| vec![p])?;
        let mut r = Reader::new(UnknownKeys::Errors);
        r.top_level(&doc, &Self::KEYS);
        if !doc.contains_key("stores") {
            r.problems.push(Problem::new("stores", "missing"));
        }
        let site = Site {
            stores: r.list(&doc, "stores"),
            gateways: r.list(&doc, "gateways"),
            beacons: r.list(&doc, "beacons"),
            beacon_zones: r.list(&doc, "beacon_zones"),
            gateway_zones: r.list(&doc, "gateway_zones"),
            wifi_zones: r.list(&doc, "wifi_zones"),
            geofences: r.list(&doc, "geofences"),
        };
        // References into a list that lost records cannot be checked without false alarms.
        let complete = Complete {
            stores: !r.any_failed("stores"),
            gateways: !r.any_failed("gateways"),
            beacons: !r.any_failed("beacons"),
        };
        let mut problems = r.problems;
        problems.extend(site.check(complete).0);
        if problems.is_empty() {
            Ok(site)
        } else {
            Err(problems)
        }
    }

    /// Reads a site file; `.json` files are JSON, anything else TOML.
    pub fn load(path: &Path) -> Result<Site, FileProblems> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| FileProblems {
            file: file.clone(),
            problems: vec![Problem::new("", format!("cannot read: {e}"))],
        })?;
        let json = path.extension().is_some_and(|e| e == "json");
        Site::parse(&text, json).map_err(|problems| FileProblems { file, problems })
    }

    /// Checks every record; returns every problem.
    pub fn validate(&self) -> Result<(), Vec<Problem>> {
        self.check(Complete::ALL).into_result()
    }

    fn check(&self, complete: Complete) -> Problems {
        let mut p = Problems::default();
        let stores = self.check_stores(&mut p);
        let stores = complete.stores.then_some(&stores);
        let gateway_store = self.check_gateways(stores, &mut p);
        let beacon_store = self.check_beacons(stores, &mut p);
        let mut zones = Zones {
            ids: HashSet::new(),
            stores,
        };
        for (i, z) in self.beacon_zones.iter().enumerate() {
            let k = format!("beacon_zones[{i}]");
            zones.check(&z.id, &z.store, &k, &mut p);
            check_beacon_zone(z, &k, (&beacon_store, complete.beacons), &mut p);
        }
        for (i, z) in self.gateway_zones.iter().enumerate() {
            let k = format!("gateway_zones[{i}]");
            zones.check(&z.id, &z.store, &k, &mut p);
            check_gateway_zone(z, &k, (&gateway_store, complete.gateways), &mut p);
        }
        for (i, z) in self.wifi_zones.iter().enumerate() {
            let k = format!("wifi_zones[{i}]");
            zones.check(&z.id, &z.store, &k, &mut p);
            check_wifi_zone(z, &k, &mut p);
        }
        for (i, g) in self.geofences.iter().enumerate() {
            let k = format!("geofences[{i}]");
            zones.check(&g.id, &g.store, &k, &mut p);
            check_geofence(g, &k, &mut p);
        }
        p
    }

    /// The gateways' problems; answers each gateway's store.
    fn check_gateways<'a>(
        &'a self,
        stores: Option<&HashSet<&StoreId>>,
        p: &mut Problems,
    ) -> HashMap<&'a GatewayId, &'a StoreId> {
        let mut gateway_store = HashMap::new();
        for (i, g) in self.gateways.iter().enumerate() {
            let k = format!("gateways[{i}]");
            if gateway_store.insert(&g.id, &g.store).is_some() {
                p.push(
                    format!("{k}.id"),
                    format!("gateway {} is listed twice", g.id),
                );
            }
            check_store_ref(stores, &g.store, &k, p);
            if let Err(e) = g.password_hash.parse::<PasswordHash>() {
                p.push(format!("{k}.password_hash"), e.to_string());
            }
            if let Err(e) = SigningKey::from_hex(&g.signing_key) {
                p.push(format!("{k}.signing_key"), e.to_string());
            }
            check_location(g.location.as_ref(), &k, p);
        }
        gateway_store
    }

    /// The beacons' problems; answers each beacon's store.
    fn check_beacons<'a>(
        &'a self,
        stores: Option<&HashSet<&StoreId>>,
        p: &mut Problems,
    ) -> HashMap<BeaconId, &'a StoreId> {
        let mut beacon_store = HashMap::new();
        for (i, b) in self.beacons.iter().enumerate() {
            let k = format!("beacons[{i}]");
            if beacon_store.insert(b.id, &b.store).is_some() {
                p.push(
                    format!("{k}.id"),
                    format!("beacon {} is listed twice", b.id),
                );
            }
            check_store_ref(stores, &b.store, &k, p);
            check_location(b.location.as_ref(), &k, p);
        }
        beacon_store
    }

    fn check_stores(&self, p: &mut Problems) -> HashSet<&StoreId> {
        /// A store id no store may take (the cloud's reports name the online shop so).
        const RESERVED_STORE_ID: &str = "online";
        let mut ids = HashSet::new();
        p.check(
            !self.stores.is_empty() || self.gateways.is_empty(),
            "stores",
            "no stores are defined",
        );
        for (i, s) in self.stores.iter().enumerate() {
            let k = format!("stores[{i}]");
            if !ids.insert(&s.id) {
                p.push(format!("{k}.id"), format!("store {} is listed twice", s.id));
            }
            if s.id.as_str() == RESERVED_STORE_ID {
                p.push(
                    format!("{k}.id"),
                    "\"online\" is reserved: it names the brand's online shop in reports",
                );
            }
            if s.time_zone.parse::<chrono_tz::Tz>().is_err() {
                p.push(
                    format!("{k}.time_zone"),
                    format!(
                        "{:?} is not an IANA time zone such as Asia/Tokyo",
                        s.time_zone
                    ),
                );
            }
            if let Err(m) = check_lon_lat(s.location.lon, s.location.lat) {
                p.push(format!("{k}.location"), m);
            }
        }
        ids
    }
}

/// The zone ids seen so far (each zone kind shares them) and the stores a zone may name.
struct Zones<'a> {
    ids: HashSet<ZoneId>,
    stores: Option<&'a HashSet<&'a StoreId>>,
}

impl Zones<'_> {
    fn check(&mut self, id: &ZoneId, store: &StoreId, k: &str, p: &mut Problems) {
        if !self.ids.insert(id.clone()) {
            p.push(format!("{k}.id"), format!("zone {id} is defined twice"));
        }
        check_store_ref(self.stores, store, k, p);
    }
}

/// A beacon zone's beacons (each in `beacon_store`, when the beacons were read whole
/// (`complete`), and of the zone's store) and RSSI floor.
fn check_beacon_zone(
    z: &BeaconZone,
    k: &str,
    (beacon_store, complete): (&HashMap<BeaconId, &StoreId>, bool),
    p: &mut Problems,
) {
    p.check(!z.beacons.is_empty(), format!("{k}.beacons"), "is empty");
    for (j, b) in z.beacons.iter().enumerate() {
        match beacon_store.get(b) {
            None if !complete => {}
            None => p.push(
                format!("{k}.beacons[{j}]"),
                format!("beacon {b} is not in beacons"),
            ),
            Some(s) if **s != z.store => p.push(
                format!("{k}.beacons[{j}]"),
                format!("beacon {b} belongs to store {s}, not {}", z.store),
            ),
            Some(_) => {}
        }
    }
    check_rssi(z.min_rssi_dbm, k, p);
}

/// A gateway zone's gateways (each in `gateway_store`, when the gateways were read whole
/// (`complete`), and of the zone's store) and how near a device must be.
fn check_gateway_zone(
    z: &GatewayZone,
    k: &str,
    (gateway_store, complete): (&HashMap<&GatewayId, &StoreId>, bool),
    p: &mut Problems,
) {
    p.check(!z.gateways.is_empty(), format!("{k}.gateways"), "is empty");
    for (j, g) in z.gateways.iter().enumerate() {
        match gateway_store.get(g) {
            None if !complete => {}
            None => p.push(
                format!("{k}.gateways[{j}]"),
                format!("gateway {g} is not in gateways"),
            ),
            Some(s) if **s != z.store => p.push(
                format!("{k}.gateways[{j}]"),
                format!("gateway {g} belongs to store {s}, not {}", z.store),
            ),
            Some(_) => {}
        }
    }
    match z.max_distance_m {
        Some(d) => p.check(
            d > 0.0 && d <= 100.0,
            format!("{k}.max_distance_m"),
            format!("{d} m is not in (0, 100]"),
        ),
        None => p.check(
            z.min_rssi_dbm.is_some(),
            k,
            "needs max_distance_m or min_rssi_dbm",
        ),
    }
    check_rssi(z.min_rssi_dbm, k, p);
}

/// A Wi-Fi zone's BSSIDs, how many must match, and RSSI floor.
fn check_wifi_zone(z: &WifiZone, k: &str, p: &mut Problems) {
    p.check(!z.bssids.is_empty(), format!("{k}.bssids"), "is empty");
    let mut seen = HashSet::new();
    for (j, b) in z.bssids.iter().enumerate() {
        match parse_bssid(b) {
            None => p.push(
                format!("{k}.bssids[{j}]"),
                format!("{b:?} is not a BSSID like aa:bb:cc:dd:ee:ff"),
            ),
            Some(mac) if !seen.insert(mac) => p.push(format!("{k}.bssids[{j}]"), "listed twice"),
            Some(_) => {}
        }
    }
    p.check(
        z.min_matches >= 1 && z.min_matches as usize <= z.bssids.len().max(1),
        format!("{k}.min_matches"),
        format!("{} is not in 1..={}", z.min_matches, z.bssids.len()),
    );
    check_rssi(z.min_rssi_dbm, k, p);
}

/// A geofence's shape: exactly one of a geometry or a circle, each valid.
fn check_geofence(g: &Geofence, k: &str, p: &mut Problems) {
    match (&g.geometry, &g.circle) {
        (Some(geometry), None) => {
            if let Err(problem) = geometry.polygons(&format!("{k}.geometry")) {
                p.0.push(problem);
            }
        }
        (None, Some(c)) => {
            if let Err(m) = check_lon_lat(c.lon, c.lat) {
                p.push(format!("{k}.circle"), m);
            }
            p.check(
                c.radius_m > 0.0 && c.radius_m <= MAX_RADIUS_M,
                format!("{k}.circle.radius_m"),
                format!("{} m is not in (0, {MAX_RADIUS_M}]", c.radius_m),
            );
        }
        _ => p.push(k, "needs exactly one of geometry or circle"),
    }
}

/// Which lists were read whole, so references into them can be checked.
#[derive(Debug, Clone, Copy)]
struct Complete {
    stores: bool,
    gateways: bool,
    beacons: bool,
}

impl Complete {
    const ALL: Complete = Complete {
        stores: true,
        gateways: true,
        beacons: true,
    };
}

fn check_store_ref(stores: Option<&HashSet<&StoreId>>, store: &StoreId, k: &str, p: &mut Problems) {
    if stores.is_some_and(|s| !s.contains(store)) {
        p.push(
            format!("{k}.store"),
            format!("store {store} is not in stores"),
        );
    }
}

fn check_rssi(rssi: Option<f64>, k: &str, p: &mut Problems) {
    if let Some(r) = rssi {
        p.check(
            (-127.0..=20.0).contains(&r),
            format!("{k}.min_rssi_dbm"),
            format!("{r} dBm is not in -127..=20"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SITE: &str = r#"
[[stores]]
id = "s1"
name = "Shibuya"
time_zone = "Asia/Tokyo"
location = { lat = 35.659, lon = 139.700 }

[[gateways]]
id = "g1"
store = "s1"
password_hash = "$7$101$Vzj7Z9chb6L7LPCY$fS0q08pe5hXC1qool6feab1vFntDgQ/o3EfjFQap1rpUESNORcAkhoovlEuELfQCWS483+sajF5Djqx4FRPtVw=="
signing_key = "0101010101010101010101010101010101010101010101010101010101010101"

[[beacons]]
id = "line:016a4b2c3d"
store = "s1"

[[beacon_zones]]
id = "entrance"
store = "s1"
beacons = ["line:016a4b2c3d"]

[[gateway_zones]]
id = "floor"
store = "s1"
gateways = ["g1"]
max_distance_m = 5.0

[[wifi_zones]]
id = "wifi"
store = "s1"
bssids = ["AA:bb:cc:dd:ee:01", "aa:bb:cc:dd:ee:02"]
min_matches = 2

[[geofences]]
id = "block"
store = "s1"
geometry = { type = "Polygon", coordinates = [[[139.69, 35.65], [139.71, 35.65], [139.71, 35.67], [139.69, 35.65]]] }

[[geofences]]
id = "near"
store = "s1"
circle = { lat = 35.659, lon = 139.700, radius_m = 150.0 }
"#;

    fn keys(text: &str) -> Vec<String> {
        Site::parse(text, false)
            .unwrap_err()
            .into_iter()
            .map(|p| p.key)
            .collect()
    }

    #[test]
    fn valid_site_parses_in_both_formats() {
        let site = Site::parse(SITE, false).unwrap();
        assert_eq!(
            site.geofences[0]
                .geometry
                .as_ref()
                .unwrap()
                .polygons("g")
                .unwrap()[0][0]
                .len(),
            4
        );
        let json = serde_json::to_string(&site).unwrap();
        assert_eq!(Site::parse(&json, true).unwrap(), site);
    }

    #[test]
    fn reports_every_problem_with_its_key() {
        let bad = SITE
            .replace("Asia/Tokyo", "Asia/Tokio")
            .replace(
                "store = \"s1\"\npassword_hash",
                "store = \"s2\"\npassword_hash",
            )
            .replace(
                "beacons = [\"line:016a4b2c3d\"]",
                "beacons = [\"line:016a4b2c3e\"]",
            )
            .replace("min_matches = 2", "min_matches = 3")
            .replace("[139.69, 35.65]]]", "[139.69, 35.66]]]")
            .replace("radius_m = 150.0", "radius_m = 0.0, colour = \"red\"");
        assert_eq!(
            keys(&bad),
            [
                "geofences[1].circle.colour",
                "stores[0].time_zone",
                "gateways[0].store",
                "beacon_zones[0].beacons[0]",
                "gateway_zones[0].gateways[0]",
                "wifi_zones[0].min_matches",
                "geofences[0].geometry.coordinates[0]",
                "geofences[1].circle.radius_m",
            ]
        );
    }

    #[test]
    fn a_placed_beacon_or_gateway_is_somewhere_on_earth() {
        let placed = SITE
            .replace(
                "id = \"line:016a4b2c3d\"\nstore = \"s1\"\n",
                "id = \"line:016a4b2c3d\"\nstore = \"s1\"\nlocation = { lat = 35.6591, lon = 139.7002 }\n",
            )
            .replace(
                "signing_key = \"0101010101010101010101010101010101010101010101010101010101010101\"\n",
                "signing_key = \"0101010101010101010101010101010101010101010101010101010101010101\"\nlocation = { lat = 95.0, lon = 139.7 }\n",
            );
        assert_eq!(keys(&placed), ["gateways[0].location"]);
        let fixed = placed.replace("lat = 95.0", "lat = 35.659");
        let site = Site::parse(&fixed, false).unwrap();
        assert_eq!(site.beacons[0].location.map(|l| l.lon), Some(139.7002));
        assert_eq!(site.gateways[0].location.map(|l| l.lat), Some(35.659));
    }

    #[test]
    fn the_online_shop_name_is_no_store_id() {
        let bad = SITE
            .replace("id = \"s1\"", "id = \"online\"")
            .replace("store = \"s1\"", "store = \"online\"");
        assert!(
            keys(&bad).contains(&"stores[0].id".to_owned()),
            "{:?}",
            keys(&bad)
        );
    }

    #[test]
    fn a_bad_record_does_not_hide_the_others() {
        let bad = SITE
            .replace("id = \"line:016a4b2c3d\"", "id = \"line:016a4b2c\"")
            .replace("id = \"floor\"", "id = \"floor/1\"")
            .replace("min_matches = 2", "min_matches = 3");
        assert_eq!(
            keys(&bad),
            [
                "beacons[0].id",
                "gateway_zones[0].id",
                "wifi_zones[0].min_matches"
            ],
            "the zone's reference to the unreadable beacon is not reported twice"
        );
    }

    #[test]
    fn duplicates_and_geometry_errors() {
        let dup = format!("{SITE}\n[[geofences]]\nid = \"entrance\"\nstore = \"s1\"\ngeometry = {{ type = \"Point\", coordinates = [1, 2] }}\n");
        assert_eq!(
            keys(&dup),
            ["geofences[2].id", "geofences[2].geometry.type"]
        );
        let pos = SITE.replace("[139.71, 35.67]", "[139.71, 95.0]");
        let problems = Site::parse(&pos, false).unwrap_err();
        assert_eq!(problems[0].key, "geofences[0].geometry.coordinates[0][2]");
        assert!(
            problems[0].message.contains("latitude 95"),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn bssids() {
        assert_eq!(
            parse_bssid("AA:bb:0c:dd:ee:ff"),
            Some([0xaa, 0xbb, 0x0c, 0xdd, 0xee, 0xff])
        );
        for bad in [
            "aa:bb:cc:dd:ee",
            "aa:bb:cc:dd:ee:fff",
            "aa-bb-cc-dd-ee-ff",
            "+a:bb:cc:dd:ee:ff",
        ] {
            assert_eq!(parse_bssid(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400), json in any::<bool>()) {
            let _ = Site::parse(&String::from_utf8_lossy(&bytes), json);
        }

        #[test]
        fn never_panics_on_mangled_site(cut in 0usize..1200, junk in ".{0,16}") {
            let cut = cut.min(SITE.len());
            let _ = Site::parse(&format!("{}{}{}", &SITE[..cut], junk, &SITE[cut..]), false);
        }

        #[test]
        fn never_panics_on_any_json_geometry(v in any_json()) {
            let g = Geometry { kind: "MultiPolygon".into(), coordinates: v.clone() };
            let _ = g.polygons("g");
            let g = Geometry { kind: "Polygon".into(), coordinates: v };
            let _ = g.polygons("g");
        }
    }

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<f64>().prop_map(|f| serde_json::json!(f)),
            (-200i32..200).prop_map(|i| serde_json::json!(i)),
            ".{0,3}".prop_map(Value::String),
        ];
        leaf.prop_recursive(5, 64, 6, |inner| {
            proptest::collection::vec(inner, 0..6).prop_map(Value::Array)
        })
    }
}
