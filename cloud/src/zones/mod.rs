//! Zones: where a customer is, from whatever observed them (DESIGN.md, "Zones"). Each kind —
//! beacon zones, gateway zones, Wi-Fi zones, geofences — implements [`ZoneMatch`]; a
//! [`ZoneSet`] indexes every zone of the registry so an observation is tested only against the
//! zones it could concern.
//!
//! Matching is pure: no store, no clock. What a match means over time is the visit stage's.

pub mod geofence;
pub mod geojson;
pub mod index;
pub mod kinds;
pub mod match_file;
pub mod packed;
pub mod prepared;
pub mod synthetic;
pub mod winding;

use std::collections::HashMap;

use omo_device_config::{BeaconId, GatewayId, StoreId, ZoneId};

use crate::ingest::record::{BeaconSighting, GpsFix, WifiSighting};
use crate::registry::Zone;
use geofence::Shape;
use index::{Fence, FenceIndex};
use kinds::{BeaconZone, GatewayZone, WifiZone};

/// What one observation says about one zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// Evidence that the customer is in the zone.
    Inside,
    /// Evidence that the customer is not in the zone.
    Outside,
    /// No evidence either way (a vague fix at an edge, a weak signal): keep the current state.
    Unknown,
}

/// An observation, as zones see it.
#[derive(Debug, Clone, Copy)]
pub enum Observation<'a> {
    Gps(GpsFix),
    Wifi(&'a [WifiSighting]),
    /// A phone (or the LINE app) reports a store-fixed beacon.
    Beacon {
        id: &'a BeaconId,
        rssi: Option<f64>,
    },
    /// A gateway hears the customer's device.
    Gateway {
        gateway: &'a GatewayId,
        rssi: f64,
        distance_m: f64,
    },
}

/// One app report as zones see it: a zone is judged by the report's observation of that
/// zone's kind (a geofence by the fix, a Wi-Fi zone by the scan, a beacon zone by the
/// beacons listed).
#[derive(Debug, Clone, Copy)]
pub struct Report<'a> {
    pub gps: Option<GpsFix>,
    pub wifi: &'a [WifiSighting],
    pub beacons: &'a [BeaconSighting],
}

/// The limits matching applies (set in `[visits]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatchRules {
    /// Fixes less accurate than this (metres) decide nothing.
    pub max_gps_accuracy_m: f64,
    /// An app report listing at least this many beacons, none of a beacon zone's, is evidence
    /// of being outside that zone; 0: listed beacons never are.
    pub beacon_outside_min_others: u32,
}

/// One zone kind's rule.
pub trait ZoneMatch {
    fn matches(&self, observation: &Observation<'_>) -> Match;
}

/// A zone of any kind with its identity.
#[derive(Debug, Clone)]
pub struct ZoneInfo {
    pub id: ZoneId,
    pub store: StoreId,
    pub rule: Rule,
}

/// The rule of one zone.
#[derive(Debug, Clone)]
pub enum Rule {
    Beacon(BeaconZone),
    Gateway(GatewayZone),
    Wifi(WifiZone),
    /// Index into the fence index.
    Fence(usize),
}

/// Every zone, indexed by what can match it.
pub struct ZoneSet {
    zones: Vec<ZoneInfo>,
    by_beacon: HashMap<BeaconId, Vec<usize>>,
    by_gateway: HashMap<GatewayId, Vec<usize>>,
    by_bssid: HashMap<String, Vec<usize>>,
    by_id: HashMap<String, usize>,
    fences: FenceIndex,
    fence_zone: Vec<usize>,
    rules: MatchRules,
}

impl ZoneSet {
    /// Builds the set from registry zones; a geofence that cannot be built is skipped and
    /// returned as a problem (the registry validated it, so this is only defence).
    pub fn new(zones: &[Zone], rules: MatchRules) -> (ZoneSet, Vec<String>) {
        let mut set = ZoneSet {
            zones: Vec::new(),
            by_beacon: HashMap::new(),
            by_gateway: HashMap::new(),
            by_bssid: HashMap::new(),
            by_id: HashMap::new(),
            fences: FenceIndex::new(Vec::new()),
            fence_zone: Vec::new(),
            rules,
        };
        let mut fences = Vec::new();
        let mut problems = Vec::new();
        for z in zones {
            let i = set.zones.len();
            let (id, store, rule) = match z {
                Zone::Beacon(b) => {
                    for id in &b.beacons {
                        set.by_beacon.entry(*id).or_default().push(i);
                    }
                    (
                        b.id.clone(),
                        b.store.clone(),
                        Rule::Beacon(BeaconZone::from_site(b)),
                    )
                }
                Zone::Gateway(g) => {
                    for id in &g.gateways {
                        set.by_gateway.entry(id.clone()).or_default().push(i);
                    }
                    (
                        g.id.clone(),
                        g.store.clone(),
                        Rule::Gateway(GatewayZone::from_site(g)),
                    )
                }
                Zone::Wifi(w) => {
                    let rule = WifiZone::from_site(w);
                    for b in rule.bssids() {
                        set.by_bssid.entry(b.clone()).or_default().push(i);
                    }
                    (w.id.clone(), w.store.clone(), Rule::Wifi(rule))
                }
                Zone::Geofence(f) => {
                    let key = format!("zone {}", f.id);
                    let shape = match (&f.geometry, &f.circle) {
                        (Some(g), _) => Shape::area(g, &key),
                        (None, Some(c)) => Shape::circle(c.lon, c.lat, c.radius_m, &key),
                        (None, None) => {
                            problems.push(format!("{key}: no geometry and no circle"));
                            continue;
                        }
                    };
                    match shape {
                        Ok(shape) => {
                            set.fence_zone.push(i);
                            fences.push(Fence {
                                id: f.id.to_string(),
                                shape,
                            });
                            (f.id.clone(), f.store.clone(), Rule::Fence(fences.len() - 1))
                        }
                        Err(e) => {
                            problems.push(e.to_string());
                            continue;
                        }
                    }
                }
            };
            set.by_id.insert(id.to_string(), i);
            set.zones.push(ZoneInfo { id, store, rule });
        }
        set.fences = FenceIndex::new(fences);
        (set, problems)
    }

    pub fn zone(&self, i: usize) -> &ZoneInfo {
        &self.zones[i]
    }

    /// The index of the zone with this id.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    pub fn len(&self) -> usize {
        self.zones.len()
    }

    pub fn is_empty(&self) -> bool {
        self.zones.is_empty()
    }

    /// How `observation` relates to zone `i`.
    pub fn relate(&self, i: usize, observation: &Observation<'_>) -> Match {
        match (&self.zones[i].rule, observation) {
            (Rule::Beacon(z), o) => z.matches(o),
            (Rule::Gateway(z), o) => z.matches(o),
            (Rule::Wifi(z), o) => z.matches(o),
            (Rule::Fence(f), Observation::Gps(fix)) => {
                if fix.accuracy_m > self.rules.max_gps_accuracy_m {
                    Match::Unknown
                } else {
                    self.fences.relate_one(*f, fix.lon, fix.lat, fix.accuracy_m)
                }
            }
            (Rule::Fence(_), _) => Match::Unknown,
        }
    }

    /// The zones `observation` is evidence for or at the edge of (every zone not listed is
    /// [`Match::Outside`] or unconcerned), ascending by zone index.
    pub fn candidates(&self, observation: &Observation<'_>) -> Vec<(usize, Match)> {
        let mut out: Vec<(usize, Match)> = match observation {
            Observation::Beacon { id, .. } => self.listed(self.by_beacon.get(id), observation),
            Observation::Gateway { gateway, .. } => {
                self.listed(self.by_gateway.get(gateway), observation)
            }
            Observation::Wifi(scan) => {
                let mut zones: Vec<usize> = scan
                    .iter()
                    .filter_map(|s| self.by_bssid.get(&s.bssid))
                    .flatten()
                    .copied()
                    .collect();
                zones.sort_unstable();
                zones.dedup();
                zones
                    .into_iter()
                    .map(|i| (i, self.relate(i, observation)))
                    .collect()
            }
            Observation::Gps(fix) => {
                if fix.accuracy_m > self.rules.max_gps_accuracy_m {
                    Vec::new()
                } else {
                    self.fences
                        .relate(fix.lon, fix.lat, fix.accuracy_m)
                        .into_iter()
                        .map(|(f, m)| (self.fence_zone[f], m))
                        .collect()
                }
            }
        };
        out.retain(|(_, m)| *m != Match::Outside);
        out.sort_unstable_by_key(|(i, _)| *i);
        out
    }

    /// How an app report relates to zone `i`, judged by its observation of the zone's kind:
    /// a geofence by the fix (outside only when the accuracy circle lies wholly outside and
    /// the fix is accurate enough), a Wi-Fi zone by the scan (outside when a scan sees none
    /// of its BSSIDs), a beacon zone by the beacons listed (see
    /// [`BeaconZone::relate_listed`]). A gateway zone is never judged by a report.
    pub fn relate_report(&self, i: usize, report: &Report<'_>) -> Match {
        match &self.zones[i].rule {
            Rule::Fence(_) => report
                .gps
                .map_or(Match::Unknown, |fix| self.relate(i, &Observation::Gps(fix))),
            Rule::Wifi(_) if report.wifi.is_empty() => Match::Unknown,
            Rule::Wifi(_) => self.relate(i, &Observation::Wifi(report.wifi)),
            Rule::Beacon(z) => {
                z.relate_listed(report.beacons, self.rules.beacon_outside_min_others)
            }
            Rule::Gateway(_) => Match::Unknown,
        }
    }

    fn listed(
        &self,
        zones: Option<&Vec<usize>>,
        observation: &Observation<'_>,
    ) -> Vec<(usize, Match)> {
        zones
            .into_iter()
            .flatten()
            .map(|&i| (i, self.relate(i, observation)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use omo_device_config::site;

    const RULES: MatchRules = MatchRules {
        max_gps_accuracy_m: 100.0,
        beacon_outside_min_others: 1,
    };

    fn fence_zone(radius_m: f64) -> Zone {
        Zone::Geofence(site::Geofence {
            id: ZoneId::new("fence").unwrap(),
            store: StoreId::new("s1").unwrap(),
            name: String::new(),
            geometry: None,
            circle: Some(site::Circle {
                lat: 35.66,
                lon: 139.70,
                radius_m,
            }),
        })
    }

    fn fix_east(metres: f64, accuracy_m: f64) -> GpsFix {
        let kx = geofence::metres_per_degree() * 35.66f64.to_radians().cos();
        GpsFix {
            lat: 35.66,
            lon: 139.70 + metres / kx,
            accuracy_m,
        }
    }

    #[test]
    fn a_gps_fix_with_200_m_accuracy_beside_a_50_m_fence_makes_no_entry() {
        let (set, problems) = ZoneSet::new(&[fence_zone(50.0)], RULES);
        assert!(problems.is_empty());
        // Beside the fence, 200 m accuracy: beyond the limit, so no evidence at all.
        assert!(set
            .candidates(&Observation::Gps(fix_east(60.0, 200.0)))
            .is_empty());
        assert_eq!(
            set.relate(0, &Observation::Gps(fix_east(60.0, 200.0))),
            Match::Unknown
        );
        // Even inside the limit, an accuracy circle across the edge decides nothing.
        assert_eq!(
            set.candidates(&Observation::Gps(fix_east(40.0, 30.0))),
            vec![(0, Match::Unknown)]
        );
        assert_eq!(
            set.candidates(&Observation::Gps(fix_east(10.0, 20.0))),
            vec![(0, Match::Inside)]
        );
        assert!(set
            .candidates(&Observation::Gps(fix_east(500.0, 20.0)))
            .is_empty());
    }

    #[test]
    fn observations_reach_only_their_kind_of_zone() {
        let beacon: BeaconId = "line:016a4b2c3d".parse().unwrap();
        let zones = vec![
            fence_zone(50.0),
            Zone::Beacon(site::BeaconZone {
                id: ZoneId::new("door").unwrap(),
                store: StoreId::new("s1").unwrap(),
                name: String::new(),
                beacons: vec![beacon],
                min_rssi_dbm: None,
            }),
        ];
        let (set, _) = ZoneSet::new(&zones, RULES);
        assert_eq!(
            set.candidates(&Observation::Beacon {
                id: &beacon,
                rssi: Some(-70.0)
            }),
            vec![(1, Match::Inside)]
        );
        assert_eq!(
            set.candidates(&Observation::Gps(fix_east(0.0, 5.0))),
            vec![(0, Match::Inside)]
        );
        assert_eq!(
            set.relate(
                0,
                &Observation::Beacon {
                    id: &beacon,
                    rssi: None
                }
            ),
            Match::Unknown
        );
    }

    fn wifi_and_door() -> Vec<Zone> {
        let s1 = StoreId::new("s1").unwrap();
        vec![
            fence_zone(50.0),
            Zone::Wifi(site::WifiZone {
                id: ZoneId::new("wifi").unwrap(),
                store: s1.clone(),
                name: String::new(),
                bssids: vec!["02:00:5e:10:00:01".into()],
                min_matches: 1,
                min_rssi_dbm: None,
            }),
            Zone::Beacon(site::BeaconZone {
                id: ZoneId::new("door").unwrap(),
                store: s1.clone(),
                name: String::new(),
                beacons: vec!["ibeacon:E2C56DB5-DFFB-48D2-B060-D0F5A71096E0:100:1"
                    .parse()
                    .unwrap()],
                min_rssi_dbm: Some(-85.0),
            }),
            Zone::Beacon(site::BeaconZone {
                id: ZoneId::new("line-door").unwrap(),
                store: s1,
                name: String::new(),
                beacons: vec!["line:016a4b2c3d".parse().unwrap()],
                min_rssi_dbm: None,
            }),
        ]
    }

    fn report<'a>(
        gps: Option<GpsFix>,
        wifi: &'a [WifiSighting],
        beacons: &'a [BeaconSighting],
    ) -> Report<'a> {
        Report { gps, wifi, beacons }
    }

    #[test]
    fn a_report_is_judged_per_zone_by_its_observation_of_that_kind() {
        let (set, _) = ZoneSet::new(&wifi_and_door(), RULES);
        let [fence, wifi, door, line_door] =
            ["fence", "wifi", "door", "line-door"].map(|id| set.index_of(id).unwrap());
        let ap = |bssid: &str| WifiSighting {
            bssid: bssid.into(),
            rssi: -60.0,
        };
        let beacon = |id: &str, rssi: f64| BeaconSighting {
            id: id.parse().unwrap(),
            rssi,
        };
        let own = "ibeacon:E2C56DB5-DFFB-48D2-B060-D0F5A71096E0:100:1";
        let other = "ibeacon:E2C56DB5-DFFB-48D2-B060-D0F5A71096E0:100:2";
        // A scan that sees none of the zone's BSSIDs is outside; no scan says nothing.
        let street = [ap("0a:11:22:33:44:55")];
        assert_eq!(
            set.relate_report(wifi, &report(None, &street, &[])),
            Match::Outside
        );
        assert_eq!(
            set.relate_report(wifi, &report(None, &[], &[])),
            Match::Unknown
        );
        let inside = [ap("02:00:5e:10:00:01")];
        assert_eq!(
            set.relate_report(wifi, &report(None, &inside, &[])),
            Match::Inside
        );
        // A precise fix 3 km away is outside; a straddling or a vague one says nothing.
        let far = Some(fix_east(3000.0, 10.0));
        assert_eq!(
            set.relate_report(fence, &report(far, &[], &[])),
            Match::Outside
        );
        let edge = Some(fix_east(60.0, 30.0));
        assert_eq!(
            set.relate_report(fence, &report(edge, &[], &[])),
            Match::Unknown
        );
        let vague = Some(fix_east(3000.0, 500.0));
        assert_eq!(
            set.relate_report(fence, &report(vague, &[], &[])),
            Match::Unknown
        );
        assert_eq!(
            set.relate_report(fence, &report(None, &street, &[])),
            Match::Unknown
        );
        // A list of other beacons is outside a beacon zone; its own beacon too weak says
        // nothing; an empty list says nothing.
        let others = [beacon(other, -60.0)];
        assert_eq!(
            set.relate_report(door, &report(None, &[], &others)),
            Match::Outside
        );
        let weak = [beacon(other, -60.0), beacon(own, -95.0)];
        assert_eq!(
            set.relate_report(door, &report(None, &[], &weak)),
            Match::Unknown
        );
        let strong = [beacon(own, -95.0), beacon(own, -70.0)];
        assert_eq!(
            set.relate_report(door, &report(None, &[], &strong)),
            Match::Inside
        );
        assert_eq!(
            set.relate_report(door, &report(far, &street, &[])),
            Match::Unknown
        );
        // An app cannot list LINE Beacons: a zone of them alone is never outside by a list.
        assert_eq!(
            set.relate_report(line_door, &report(None, &[], &others)),
            Match::Unknown
        );
        // With the rule off (0), or asking for more beacons than listed, a list says nothing.
        for min_others in [0, 2] {
            let rules = MatchRules {
                beacon_outside_min_others: min_others,
                ..RULES
            };
            let (set, _) = ZoneSet::new(&wifi_and_door(), rules);
            assert_eq!(
                set.relate_report(door, &report(None, &[], &others)),
                Match::Unknown
            );
        }
    }
}
