//! Which frames the gateway turns into presence: frame kinds, a minimum RSSI, and allow/deny
//! lists per id family (iBeacon UUID, Eddystone namespace, LINE hwid). An empty allow list
//! admits the whole family; a deny list always wins. Built once per config, checked per frame.

use std::collections::HashSet;

use omo_device_config::params::{Filters, FrameKind};

use crate::frames::{Eddystone, Frame};

/// A compiled [`Filters`].
#[derive(Debug, Clone, Default)]
pub struct FrameFilter {
    kinds: [bool; 7],
    min_rssi: f64,
    allow_uuid: HashSet<[u8; 16]>,
    deny_uuid: HashSet<[u8; 16]>,
    allow_ns: HashSet<[u8; 10]>,
    deny_ns: HashSet<[u8; 10]>,
    allow_hwid: HashSet<[u8; 5]>,
    deny_hwid: HashSet<[u8; 5]>,
}

fn kind_index(kind: FrameKind) -> usize {
    FrameKind::ALL
        .iter()
        .position(|k| *k == kind)
        .expect("FrameKind::ALL lists every kind")
}

/// Whether `id` passes one family's allow and deny lists.
fn passes<T: Eq + std::hash::Hash>(id: &T, allow: &HashSet<T>, deny: &HashSet<T>) -> bool {
    !deny.contains(id) && (allow.is_empty() || allow.contains(id))
}

impl FrameFilter {
    pub fn new(f: &Filters) -> FrameFilter {
        let mut kinds = [false; 7];
        for k in &f.kinds {
            kinds[kind_index(*k)] = true;
        }
        FrameFilter {
            kinds,
            min_rssi: f.min_rssi_dbm,
            allow_uuid: f.allow_ibeacon_uuids.iter().map(|u| u.0).collect(),
            deny_uuid: f.deny_ibeacon_uuids.iter().map(|u| u.0).collect(),
            allow_ns: f.allow_eddystone_namespaces.iter().map(|n| n.0).collect(),
            deny_ns: f.deny_eddystone_namespaces.iter().map(|n| n.0).collect(),
            allow_hwid: f.allow_line_hwids.iter().map(|h| h.0).collect(),
            deny_hwid: f.deny_line_hwids.iter().map(|h| h.0).collect(),
        }
    }

    /// Whether a frame heard at `rssi` dBm becomes presence.
    pub fn admits(&self, frame: &Frame, rssi: f64) -> bool {
        if rssi < self.min_rssi || !self.kinds[kind_index(frame.kind())] {
            return false;
        }
        match frame {
            Frame::IBeacon(b) => passes(&b.uuid, &self.allow_uuid, &self.deny_uuid),
            Frame::Eddystone(Eddystone::Uid(u)) => {
                passes(&u.namespace, &self.allow_ns, &self.deny_ns)
            }
            Frame::Line(b) => passes(&b.hwid, &self.allow_hwid, &self.deny_hwid),
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::{IBeacon, LineBeacon};
    use omo_device_config::params::{Hwid, Uuid};

    fn ibeacon(first: u8) -> Frame {
        Frame::IBeacon(IBeacon {
            uuid: [first; 16],
            major: 1,
            minor: 1,
            tx_power: -59,
        })
    }

    #[test]
    fn allow_deny_kinds_and_rssi() {
        let f = FrameFilter::new(&Filters {
            allow_ibeacon_uuids: vec![Uuid([1; 16]), Uuid([2; 16])],
            deny_ibeacon_uuids: vec![Uuid([2; 16])],
            deny_line_hwids: vec![Hwid([9; 5])],
            min_rssi_dbm: -90.0,
            ..Filters::default()
        });
        assert!(f.admits(&ibeacon(1), -60.0));
        assert!(!f.admits(&ibeacon(2), -60.0), "deny wins over allow");
        assert!(!f.admits(&ibeacon(3), -60.0), "not on the allow list");
        assert!(!f.admits(&ibeacon(1), -95.0), "too weak");
        let line = |h| Frame::Line(LineBeacon::new([h; 5], -60, &[]));
        assert!(f.admits(&line(8), -60.0), "LINE has no allow list");
        assert!(!f.admits(&line(9), -60.0));
        let no_ibeacons = FrameFilter::new(&Filters {
            kinds: vec![FrameKind::LineBeacon],
            ..Filters::default()
        });
        assert!(!no_ibeacons.admits(&ibeacon(1), -60.0));
    }
}
