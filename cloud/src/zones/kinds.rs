//! The zone kinds that are not geometry: beacon zones (store-fixed beacons a phone reports),
//! gateway zones (gateways that hear the customer's device close enough) and Wi-Fi zones
//! (enough of a set of access points seen strongly enough).

use std::collections::HashSet;

use omo_device_config::site::{self, parse_bssid};
use omo_device_config::{BeaconId, GatewayId};

use super::{Match, Observation, ZoneMatch};
use crate::ingest::record::BeaconSighting;

/// Phones reporting one of these beacons (at least this strong) are in the zone.
#[derive(Debug, Clone)]
pub struct BeaconZone {
    beacons: HashSet<BeaconId>,
    min_rssi_dbm: Option<f64>,
    /// Whether a phone's app can list any of its beacons (only the LINE app reads LINE
    /// Beacons).
    app_listable: bool,
}

impl BeaconZone {
    pub fn from_site(z: &site::BeaconZone) -> BeaconZone {
        BeaconZone {
            beacons: z.beacons.iter().copied().collect(),
            min_rssi_dbm: z.min_rssi_dbm,
            app_listable: z
                .beacons
                .iter()
                .any(|b| !matches!(b, BeaconId::Line { .. })),
        }
    }

    /// One of the zone's beacons heard at `rssi` (LINE's reports carry none): inside unless
    /// weaker than the zone's floor.
    fn heard_at(&self, rssi: Option<f64>) -> Match {
        match (self.min_rssi_dbm, rssi) {
            (Some(floor), Some(r)) if r < floor => Match::Unknown,
            _ => Match::Inside,
        }
    }

    /// How a phone's list of the beacons it hears relates to the zone: inside when it lists
    /// one of the zone's strongly enough; unknown when it lists one too weak; outside when it
    /// lists at least `min_others` beacons (≥ 1; 0 turns this off) and none of the zone's —
    /// the phone was scanning and heard others, not these. Only beacons a phone's app can
    /// report count: a zone of LINE Beacons alone (which only the LINE app reads) is never
    /// outside by an app's list.
    pub fn relate_listed(&self, listed: &[BeaconSighting], min_others: u32) -> Match {
        let mine = listed.iter().filter(|b| self.beacons.contains(&b.id));
        if let Some(best) = mine.map(|b| b.rssi).reduce(f64::max) {
            return self.heard_at(Some(best));
        }
        let enough = u32::try_from(listed.len()).unwrap_or(u32::MAX) >= min_others;
        if min_others > 0 && enough && self.app_listable {
            Match::Outside
        } else {
            Match::Unknown
        }
    }
}

impl ZoneMatch for BeaconZone {
    fn matches(&self, o: &Observation<'_>) -> Match {
        match o {
            Observation::Beacon { id, rssi } if self.beacons.contains(id) => self.heard_at(*rssi),
            _ => Match::Unknown,
        }
    }
}

/// Devices heard by one of these gateways within a distance or above an RSSI are in the zone.
#[derive(Debug, Clone)]
pub struct GatewayZone {
    gateways: HashSet<GatewayId>,
    max_distance_m: Option<f64>,
    min_rssi_dbm: Option<f64>,
}

impl GatewayZone {
    pub fn from_site(z: &site::GatewayZone) -> GatewayZone {
        GatewayZone {
            gateways: z.gateways.iter().cloned().collect(),
            max_distance_m: z.max_distance_m,
            min_rssi_dbm: z.min_rssi_dbm,
        }
    }
}

impl ZoneMatch for GatewayZone {
    fn matches(&self, o: &Observation<'_>) -> Match {
        match o {
            Observation::Gateway {
                gateway,
                rssi,
                distance_m,
            } if self.gateways.contains(*gateway) => {
                let near = self.max_distance_m.is_none_or(|d| *distance_m <= d);
                let strong = self.min_rssi_dbm.is_none_or(|r| *rssi >= r);
                if near && strong {
                    Match::Inside
                } else {
                    Match::Unknown
                }
            }
            _ => Match::Unknown,
        }
    }
}

/// A Wi-Fi scan with at least `min_matches` of these BSSIDs (each at least this strong) is in
/// the zone; a scan that sees none of them at all is evidence of being outside.
#[derive(Debug, Clone)]
pub struct WifiZone {
    bssids: HashSet<String>,
    min_matches: usize,
    min_rssi_dbm: Option<f64>,
}

impl WifiZone {
    pub fn from_site(z: &site::WifiZone) -> WifiZone {
        WifiZone {
            bssids: z
                .bssids
                .iter()
                .filter_map(|b| parse_bssid(b))
                .map(|b| {
                    b.iter()
                        .map(|x| format!("{x:02x}"))
                        .collect::<Vec<_>>()
                        .join(":")
                })
                .collect(),
            min_matches: z.min_matches.max(1) as usize,
            min_rssi_dbm: z.min_rssi_dbm,
        }
    }

    /// The zone's BSSIDs, lower-case and colon-separated (as app reports are normalised).
    pub fn bssids(&self) -> impl Iterator<Item = &String> {
        self.bssids.iter()
    }
}

impl ZoneMatch for WifiZone {
    fn matches(&self, o: &Observation<'_>) -> Match {
        let Observation::Wifi(scan) = o else {
            return Match::Unknown;
        };
        let seen = scan.iter().filter(|s| self.bssids.contains(&s.bssid));
        let strong = seen
            .clone()
            .filter(|s| self.min_rssi_dbm.is_none_or(|r| s.rssi >= r))
            .count();
        if strong >= self.min_matches {
            Match::Inside
        } else if seen.count() == 0 && !scan.is_empty() {
            Match::Outside
        } else {
            Match::Unknown
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::record::WifiSighting;
    use omo_device_config::{StoreId, ZoneId};

    #[test]
    fn beacon_zones_need_a_listed_beacon_strong_enough() {
        let z = BeaconZone::from_site(&site::BeaconZone {
            id: ZoneId::new("door").unwrap(),
            store: StoreId::new("s").unwrap(),
            name: String::new(),
            beacons: vec!["line:016a4b2c3d".parse().unwrap()],
            min_rssi_dbm: Some(-80.0),
        });
        let id: BeaconId = "line:016a4b2c3d".parse().unwrap();
        let other: BeaconId = "line:00000000ff".parse().unwrap();
        assert_eq!(
            z.matches(&Observation::Beacon {
                id: &id,
                rssi: Some(-70.0)
            }),
            Match::Inside
        );
        assert_eq!(
            z.matches(&Observation::Beacon {
                id: &id,
                rssi: Some(-90.0)
            }),
            Match::Unknown
        );
        assert_eq!(
            z.matches(&Observation::Beacon {
                id: &id,
                rssi: None
            }),
            Match::Inside,
            "LINE reports carry no RSSI"
        );
        assert_eq!(
            z.matches(&Observation::Beacon {
                id: &other,
                rssi: Some(-50.0)
            }),
            Match::Unknown
        );
    }

    #[test]
    fn gateway_zones_need_a_listed_gateway_close_enough() {
        let z = GatewayZone::from_site(&site::GatewayZone {
            id: ZoneId::new("floor").unwrap(),
            store: StoreId::new("s").unwrap(),
            name: String::new(),
            gateways: vec![GatewayId::new("g1").unwrap()],
            max_distance_m: Some(10.0),
            min_rssi_dbm: None,
        });
        let g1 = GatewayId::new("g1").unwrap();
        let g2 = GatewayId::new("g2").unwrap();
        assert_eq!(
            z.matches(&Observation::Gateway {
                gateway: &g1,
                rssi: -70.0,
                distance_m: 4.0
            }),
            Match::Inside
        );
        assert_eq!(
            z.matches(&Observation::Gateway {
                gateway: &g1,
                rssi: -90.0,
                distance_m: 25.0
            }),
            Match::Unknown
        );
        assert_eq!(
            z.matches(&Observation::Gateway {
                gateway: &g2,
                rssi: -50.0,
                distance_m: 1.0
            }),
            Match::Unknown
        );
    }

    #[test]
    fn wifi_zones_count_strong_matches() {
        let z = WifiZone::from_site(&site::WifiZone {
            id: ZoneId::new("wifi").unwrap(),
            store: StoreId::new("s").unwrap(),
            name: String::new(),
            bssids: vec!["AA:BB:CC:00:00:01".into(), "aa:bb:cc:00:00:02".into()],
            min_matches: 2,
            min_rssi_dbm: Some(-80.0),
        });
        let w = |b: &str, rssi: f64| WifiSighting {
            bssid: b.into(),
            rssi,
        };
        let both = [w("aa:bb:cc:00:00:01", -60.0), w("aa:bb:cc:00:00:02", -70.0)];
        assert_eq!(z.matches(&Observation::Wifi(&both)), Match::Inside);
        let weak = [w("aa:bb:cc:00:00:01", -60.0), w("aa:bb:cc:00:00:02", -90.0)];
        assert_eq!(z.matches(&Observation::Wifi(&weak)), Match::Unknown);
        let elsewhere = [w("11:22:33:44:55:66", -40.0)];
        assert_eq!(z.matches(&Observation::Wifi(&elsewhere)), Match::Outside);
        assert_eq!(z.matches(&Observation::Wifi(&[])), Match::Unknown);
    }
}
