//! The BlueZ source: btleplug on Linux, scanning continuously with duplicate reports on (so
//! every advertisement counts, not only the first per device).
//!
//! btleplug hands over parsed maps — manufacturer data by company id, service data by UUID,
//! the service UUID list — and RSSI as separate updates, not raw AD bytes. [`ad_bytes`] turns
//! each report back into AD structures, so the same decoder serves BlueZ, replay and tests.
//! A scan that goes silent (a known BlueZ failure after hours) is restarted and counted.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use btleplug::api::{Central, CentralEvent, Manager as _, Peripheral as _, ScanFilter};
use btleplug::platform::{Adapter, Manager, PeripheralId};
use futures_util::StreamExt;
use omo_device_config::Clock;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::Advert;
use crate::ad::{AdBuilder, AD_COMPLETE_16BIT_UUIDS, AD_MANUFACTURER_DATA, AD_SERVICE_DATA_16};

/// AD type: complete list of 128-bit service UUIDs.
const AD_COMPLETE_128BIT_UUIDS: u8 = 0x07;
/// AD type: service data with a 128-bit UUID.
const AD_SERVICE_DATA_128: u8 = 0x21;

/// The Bluetooth base UUID's tail: a 16-bit UUID `xxxx` is `0000xxxx-0000-1000-8000-00805F9B34FB`.
const BASE_TAIL: [u8; 12] = [0, 0, 0x10, 0, 0x80, 0, 0, 0x80, 0x5f, 0x9b, 0x34, 0xfb];

/// The 16-bit form of a UUID built on the Bluetooth base UUID.
fn short_uuid(u: &Uuid) -> Option<u16> {
    let b = u.as_bytes();
    (b[0] == 0 && b[1] == 0 && b[4..] == BASE_TAIL).then(|| u16::from_be_bytes([b[2], b[3]]))
}

/// A UUID in on-air (little-endian) byte order.
fn le_bytes(u: &Uuid) -> [u8; 16] {
    let mut b = *u.as_bytes();
    b.reverse();
    b
}

/// Rebuilds AD structures from btleplug's parsed maps, in a stable order.
pub fn ad_bytes(
    manufacturer_data: &HashMap<u16, Vec<u8>>,
    service_data: &HashMap<Uuid, Vec<u8>>,
    services: &[Uuid],
) -> Vec<u8> {
    let mut adv = AdBuilder::new();
    let (mut short, mut long) = (Vec::new(), Vec::new());
    for u in services {
        match short_uuid(u) {
            Some(s) => short.extend_from_slice(&s.to_le_bytes()),
            None => long.extend_from_slice(&le_bytes(u)),
        }
    }
    if !short.is_empty() {
        adv = adv.push(AD_COMPLETE_16BIT_UUIDS, &short);
    }
    if !long.is_empty() {
        adv = adv.push(AD_COMPLETE_128BIT_UUIDS, &long);
    }
    let mut companies: Vec<_> = manufacturer_data.iter().collect();
    companies.sort_by_key(|(c, _)| **c);
    for (company, data) in companies {
        let mut value = company.to_le_bytes().to_vec();
        value.extend_from_slice(data);
        adv = adv.push(AD_MANUFACTURER_DATA, &value);
    }
    let mut services: Vec<_> = service_data.iter().collect();
    services.sort_by_key(|(u, _)| **u);
    for (uuid, data) in services {
        let (ad_type, mut value) = match short_uuid(uuid) {
            Some(s) => (AD_SERVICE_DATA_16, s.to_le_bytes().to_vec()),
            None => (AD_SERVICE_DATA_128, le_bytes(uuid).to_vec()),
        };
        value.extend_from_slice(data);
        adv = adv.push(ad_type, &value);
    }
    adv.build()
}

/// Why scanning could not start.
#[derive(Debug, thiserror::Error)]
pub enum BluezError {
    #[error("cannot reach BlueZ over D-Bus ({0}); is bluetoothd running? Without Bluetooth, set scan.source = \"replay\"")]
    NoBluez(String),
    #[error("no Bluetooth adapter{0}; without one, set scan.source = \"replay\"")]
    NoAdapter(String),
    #[error("BlueZ scan failed: {0}")]
    Scan(String),
}

/// Finds the adapter (by name, or the first one).
pub async fn adapter(name: &str) -> Result<Adapter, BluezError> {
    let manager = Manager::new()
        .await
        .map_err(|e| BluezError::NoBluez(e.to_string()))?;
    let adapters = manager
        .adapters()
        .await
        .map_err(|e| BluezError::NoBluez(e.to_string()))?;
    for a in adapters {
        let info = a.adapter_info().await.unwrap_or_default();
        if name.is_empty() || info.split_whitespace().next() == Some(name) {
            return Ok(a);
        }
    }
    let which = if name.is_empty() {
        String::new()
    } else {
        format!(" named {name:?}")
    };
    Err(BluezError::NoAdapter(which))
}

/// What is remembered about one advertiser between its reports.
struct Peer {
    addr: Option<[u8; 6]>,
    rssi: Option<i16>,
    services: Vec<Uuid>,
    seen: Instant,
}

/// Advertisers not heard for this long are forgotten (phones rotate addresses every ~15 min).
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// The advertisers heard lately: BlueZ reports an advertiser's signal strength, services and
/// advertisement data in separate events, and its address on request.
struct Peers {
    map: HashMap<PeripheralId, Peer>,
    last_sweep: Instant,
}

impl Peers {
    fn new() -> Peers {
        Peers {
            map: HashMap::new(),
            last_sweep: Instant::now(),
        }
    }

    /// Remembers what `event` says of its advertiser; returns the advertiser and the
    /// advertisement's bytes when the event carries advertisement data.
    fn note(&mut self, event: CentralEvent) -> Option<(PeripheralId, Vec<u8>)> {
        if self.last_sweep.elapsed() > Duration::from_secs(60) {
            self.map.retain(|_, p| p.seen.elapsed() < FORGET_AFTER);
            self.last_sweep = Instant::now();
        }
        let id = match &event {
            CentralEvent::RssiUpdate { id, .. }
            | CentralEvent::ServicesAdvertisement { id, .. }
            | CentralEvent::ManufacturerDataAdvertisement { id, .. }
            | CentralEvent::ServiceDataAdvertisement { id, .. } => id.clone(),
            _ => return None,
        };
        let peer = self.map.entry(id.clone()).or_insert_with(|| Peer {
            addr: None,
            rssi: None,
            services: Vec::new(),
            seen: Instant::now(),
        });
        peer.seen = Instant::now();
        let data = match event {
            CentralEvent::RssiUpdate { rssi, .. } => {
                peer.rssi = Some(rssi);
                return None;
            }
            CentralEvent::ServicesAdvertisement { services, .. } => {
                peer.services = services;
                return None;
            }
            CentralEvent::ManufacturerDataAdvertisement {
                manufacturer_data, ..
            } => ad_bytes(&manufacturer_data, &HashMap::new(), &peer.services),
            CentralEvent::ServiceDataAdvertisement { service_data, .. } => {
                ad_bytes(&HashMap::new(), &service_data, &peer.services)
            }
            _ => return None,
        };
        Some((id, data))
    }

    /// The advert of `id`'s `data`, once the advertiser's address and signal strength are known
    /// (the address is asked of BlueZ the first time).
    async fn advert(
        &mut self,
        adapter: &Adapter,
        id: &PeripheralId,
        data: Vec<u8>,
        clock: &Clock,
    ) -> Option<Advert> {
        let peer = self.map.get_mut(id)?;
        if peer.addr.is_none() {
            let p = adapter.peripheral(id).await.ok()?;
            peer.addr = Some(p.address().into_inner());
            if peer.rssi.is_none() {
                if let Ok(Some(props)) = p.properties().await {
                    peer.rssi = props.rssi;
                }
            }
        }
        Some(Advert {
            addr: peer.addr?,
            rssi: peer.rssi?,
            data,
            at_ms: clock.now().timestamp_millis(),
        })
    }
}

/// Scans until `tx` closes (`Ok`) or BlueZ fails (`Err`: the caller retries). A scan that hears
/// nothing for `silence` is restarted and `on_restart` is called.
pub async fn run(
    adapter: &Adapter,
    clock: &Clock,
    silence: Duration,
    tx: &mpsc::Sender<Advert>,
    on_restart: &(dyn Fn() + Send + Sync),
) -> Result<(), BluezError> {
    let scan_err = |e: btleplug::Error| BluezError::Scan(e.to_string());
    let mut peers = Peers::new();
    loop {
        let mut events = adapter.events().await.map_err(scan_err)?;
        adapter
            .start_scan(ScanFilter::default())
            .await
            .map_err(scan_err)?;
        loop {
            let event = match tokio::time::timeout(silence, events.next()).await {
                Ok(Some(e)) => e,
                Ok(None) => break,
                Err(_) => {
                    on_restart();
                    tracing::warn!(
                        silence_s = silence.as_secs(),
                        "scan heard nothing; restarting it"
                    );
                    break;
                }
            };
            let Some((id, data)) = peers.note(event) else {
                continue;
            };
            let Some(advert) = peers.advert(adapter, &id, data, clock).await else {
                continue;
            };
            if tx.send(advert).await.is_err() {
                let _ = adapter.stop_scan().await;
                return Ok(());
            }
        }
        let _ = adapter.stop_scan().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::{decode, Eddystone, EddystoneUid, Frame, IBeacon, LineBeacon};

    fn short(u: u16) -> Uuid {
        let mut b = [0u8; 16];
        b[2..4].copy_from_slice(&u.to_be_bytes());
        b[4..].copy_from_slice(&BASE_TAIL);
        Uuid::from_bytes(b)
    }

    #[test]
    fn maps_become_the_frames_the_beacons_sent() {
        let ibeacon = IBeacon {
            uuid: [7; 16],
            major: 1,
            minor: 2,
            tx_power: -59,
        };
        // btleplug strips the company id off manufacturer data.
        let mfg = HashMap::from([(0x004C, ibeacon.encode()[2..].to_vec())]);
        let frames = decode(&ad_bytes(&mfg, &HashMap::new(), &[])).unwrap();
        assert_eq!(frames, [Frame::IBeacon(ibeacon)]);

        let uid = Eddystone::Uid(EddystoneUid {
            tx_power: -18,
            namespace: [1; 10],
            instance: [2; 6],
        });
        let line = LineBeacon::new([1, 2, 3, 4, 5], -60, &[9, 9]);
        let (mut e, mut l) = (Vec::new(), Vec::new());
        uid.encode(&mut e);
        line.encode(&mut l);
        let sd = HashMap::from([(short(0xFEAA), e), (short(0xFE6F), l)]);
        let adv = ad_bytes(&HashMap::new(), &sd, &[short(0xFEAA), short(0xFE6F)]);
        let frames = decode(&adv).unwrap();
        assert!(frames.contains(&Frame::Eddystone(uid)) && frames.contains(&Frame::Line(line)));
    }

    #[test]
    fn long_uuids_are_kept_in_on_air_order() {
        let u = Uuid::from_bytes([0xE2, 0xC5, 0x6D, 0xB5, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
        assert_eq!(short_uuid(&u), None);
        assert_eq!(short_uuid(&short(0xFEAA)), Some(0xFEAA));
        let adv = ad_bytes(&HashMap::new(), &HashMap::from([(u, vec![1])]), &[u]);
        assert_eq!(adv[0..2], [17, AD_COMPLETE_128BIT_UUIDS]);
        assert_eq!(adv[2], 11, "little-endian: last byte first");
        assert_eq!(adv[18..20], [18, AD_SERVICE_DATA_128]);
    }
}
