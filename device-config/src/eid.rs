//! Eddystone-EID: the rotating 8-byte ephemeral id computed from a 16-byte identity key, a
//! rotation exponent K (a new id every 2^K s) and a 32-bit beacon time counter, exactly as the
//! Eddystone "EID computation" document defines it, and resolution of an observed EID back to
//! the identity that made it within a clock-skew window.
//!
//! The Android brand app advertises an EID; the cloud, which holds each install's identity key,
//! resolves what gateways hear. This module is the maths only; caching tables of current EIDs
//! for many identities is the cloud's business.

use aes::cipher::{BlockEncrypt, KeyInit};
use aes::Aes128;

/// Largest rotation exponent the specification allows.
pub const MAX_EXPONENT: u8 = 15;
/// Largest clock-skew window searched, seconds (a day): beyond it a beacon needs re-registering,
/// and a larger window would make one resolution cost millions of AES blocks.
pub const MAX_SKEW_S: u32 = 86_400;

/// AES-128 of one block.
fn aes_block(key: &[u8; 16], block: [u8; 16]) -> [u8; 16] {
    let cipher = Aes128::new(key.into());
    let mut b = block.into();
    cipher.encrypt_block(&mut b);
    b.into()
}

/// Step 1: the temporary key for the 65536-second block that `time` falls in.
pub fn temporary_key(identity_key: &[u8; 16], time: u32) -> [u8; 16] {
    let mut block = [0u8; 16];
    block[11] = 0xFF;
    block[14..16].copy_from_slice(&((time >> 16) as u16).to_be_bytes());
    aes_block(identity_key, block)
}

/// `time` with its `exponent` lowest bits cleared: the start of its rotation period.
pub fn period_start(exponent: u8, time: u32) -> u32 {
    let k = u32::from(exponent.min(MAX_EXPONENT));
    time & !((1u32 << k) - 1)
}

/// Step 2: the EID from a temporary key.
fn eid_with_temporary_key(temporary_key: &[u8; 16], exponent: u8, time: u32) -> [u8; 8] {
    let mut block = [0u8; 16];
    block[11] = exponent;
    block[12..16].copy_from_slice(&period_start(exponent, time).to_be_bytes());
    let out = aes_block(temporary_key, block);
    let mut eid = [0u8; 8];
    eid.copy_from_slice(&out[..8]);
    eid
}

/// The EID a beacon with this key and exponent broadcasts at beacon time `time`.
/// `exponent` above 15 is treated as 15.
pub fn eid(identity_key: &[u8; 16], exponent: u8, time: u32) -> [u8; 8] {
    let exponent = exponent.min(MAX_EXPONENT);
    eid_with_temporary_key(&temporary_key(identity_key, time), exponent, time)
}

/// One registered EID advertiser.
#[derive(Clone, PartialEq, Eq)]
pub struct EidIdentity {
    pub identity_key: [u8; 16],
    pub exponent: u8,
    /// The beacon's time counter minus Unix time, seconds, learnt at registration.
    pub clock_offset_s: i64,
}

impl std::fmt::Debug for EidIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "EidIdentity(key …, K={}, offset {} s)",
            self.exponent, self.clock_offset_s
        )
    }
}

impl EidIdentity {
    /// The beacon's counter at Unix time `unix_s`, if it is within the 32-bit counter.
    pub fn beacon_time(&self, unix_s: i64) -> Option<u32> {
        u32::try_from(unix_s.checked_add(self.clock_offset_s)?).ok()
    }

    /// Every (period start, EID) whose period overlaps `unix_s ± skew_s` (`skew_s` capped at
    /// [`MAX_SKEW_S`]), oldest first.
    pub fn eids_in_window(&self, unix_s: i64, skew_s: u32) -> Vec<(u32, [u8; 8])> {
        let skew_s = skew_s.min(MAX_SKEW_S);
        let exponent = self.exponent.min(MAX_EXPONENT);
        let lo = self.beacon_time(unix_s.saturating_sub(i64::from(skew_s)));
        let hi = self.beacon_time(unix_s.saturating_add(i64::from(skew_s)));
        let (lo, hi) = match (lo, hi) {
            (Some(lo), Some(hi)) => (lo, hi),
            (None, Some(hi)) => (0, hi),
            (Some(lo), None) => (lo, u32::MAX),
            (None, None) => return Vec::new(),
        };
        let step = 1u64 << exponent;
        let mut out = Vec::new();
        let mut cached: Option<(u16, [u8; 16])> = None;
        let mut t = u64::from(period_start(exponent, lo));
        while t <= u64::from(hi) {
            let time = t as u32;
            let block = (time >> 16) as u16;
            let tk = match cached {
                Some((b, k)) if b == block => k,
                _ => {
                    let k = temporary_key(&self.identity_key, time);
                    cached = Some((block, k));
                    k
                }
            };
            out.push((time, eid_with_temporary_key(&tk, exponent, time)));
            t += step;
        }
        out
    }
}

/// A resolved EID: which identity and which rotation period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EidMatch {
    /// Index into the identities given to [`resolve`].
    pub index: usize,
    /// Start of the matching period on the beacon's counter.
    pub period_start: u32,
}

/// Finds the identity that broadcast `observed` around Unix time `unix_s`, allowing the
/// beacon's clock to be `skew_s` seconds off. Linear in identities × periods in the window.
pub fn resolve(
    identities: &[EidIdentity],
    observed: [u8; 8],
    unix_s: i64,
    skew_s: u32,
) -> Option<EidMatch> {
    identities.iter().enumerate().find_map(|(index, id)| {
        id.eids_in_window(unix_s, skew_s)
            .into_iter()
            .find(|(_, e)| *e == observed)
            .map(|(period_start, _)| EidMatch {
                index,
                period_start,
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn period_start_clears_low_bits() {
        assert_eq!(period_start(0, 12345), 12345);
        assert_eq!(period_start(10, 65535), 64512);
        assert_eq!(period_start(15, u32::MAX), 0xFFFF_8000);
    }

    fn identity(exponent: u8, clock_offset_s: i64) -> EidIdentity {
        EidIdentity {
            identity_key: *b"0123456789abcdef",
            exponent,
            clock_offset_s,
        }
    }

    #[test]
    fn resolves_within_skew_only() {
        let ids = [identity(10, -1_700_000_000), identity(4, -1_600_000_000)];
        let now = 1_700_100_000i64;
        let seen = eid(&ids[1].identity_key, 4, ids[1].beacon_time(now).unwrap());
        let m = resolve(&ids, seen, now + 30, 60).unwrap();
        assert_eq!(m.index, 1);
        assert_eq!(
            m.period_start,
            period_start(4, ids[1].beacon_time(now).unwrap())
        );
        assert_eq!(resolve(&ids, seen, now + 600, 60), None);
        assert_eq!(resolve(&ids, [0; 8], now, 60), None);
    }

    #[test]
    fn window_spans_a_temporary_key_roll_over() {
        let id = identity(0, 0);
        let window = id.eids_in_window(65536, 2);
        let times: Vec<u32> = window.iter().map(|w| w.0).collect();
        assert_eq!(times, [65534, 65535, 65536, 65537, 65538]);
        for (t, e) in window {
            assert_eq!(e, eid(&id.identity_key, 0, t));
        }
    }

    #[test]
    fn windows_at_the_counter_edges() {
        assert_eq!(identity(0, 0).eids_in_window(0, 1).len(), 2);
        assert_eq!(
            identity(0, 0).eids_in_window(i64::from(u32::MAX), 1).len(),
            2
        );
        assert!(identity(0, 0).eids_in_window(-10, 1).is_empty());
    }

    proptest! {
        #[test]
        fn the_current_eid_always_resolves(key in any::<[u8; 16]>(), k in 0u8..=15, t in 0u32..u32::MAX, skew in 0u32..300) {
            let id = EidIdentity { identity_key: key, exponent: k, clock_offset_s: 0 };
            let m = resolve(std::slice::from_ref(&id), eid(&key, k, t), i64::from(t), skew).unwrap();
            prop_assert_eq!(m.period_start, period_start(k, t));
        }
    }
}
