//! The lives of gateway epochs (DESIGN.md, "Event identity"): when each epoch's batches
//! arrived, and how it ended. An epoch is born with a gateway's outbox, so a newer epoch from
//! the same gateway means the old outbox is gone: the gateway was reinstalled or its disk was
//! replaced. Whatever the old outbox still held is lost, and the cloud says so: it ends the old
//! epoch with the last seq it settled, the seqs missing below it, and whether the gateway had
//! reported an empty outbox when it stopped (a clean end). Without that report the end is not
//! clean: events may have been outstanding, and the cloud cannot count them.
//!
//! Kept beside the seq ledger in [`Space::SeqRanges`] under [`PREFIX`], which no gateway id
//! can start with.

use omo_device_config::payload::{Epoch, GatewayState, Status};
use omo_device_config::{GatewayId, SeqRanges, Timestamp};
use serde::{Deserialize, Serialize};

use crate::store::{scan_prefix_from, Space, Store, StoreError};

/// Key prefix of epoch records (`~` is not allowed in gateway ids).
pub const PREFIX: &str = "~epoch/";
/// Key prefix of the seqs acked as rejected, beside the stored ones.
pub const REJECTED_PREFIX: &str = "rejected/";

/// What the cloud knows of one epoch besides its seqs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochInfo {
    /// When its first batch was received (cloud clock).
    pub first_received: Timestamp,
    /// When its last batch was received.
    pub last_received: Timestamp,
    /// The highest `last_seq` its heartbeats reported writing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_written: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<EpochEnd>,
}

/// How an epoch ended: a newer epoch of the same gateway arrived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochEnd {
    /// When the newer epoch's first batch was received.
    pub at: Timestamp,
    pub next_epoch: Epoch,
    /// The highest seq stored, dropped or rejected.
    pub last_seq: u64,
    /// Seqs below `last_seq` never received.
    pub missing: u64,
    /// The last seq the gateway's heartbeats said this outbox had written, if they said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_written: Option<u64>,
    /// Events the gateway reported writing beyond `last_seq`: lost with the outbox. More may
    /// have been written after its last heartbeat that got through.
    #[serde(default)]
    pub outstanding_at_least: u64,
    /// Nothing was outstanding: no seq is missing, none reported beyond the last, and the
    /// gateway's last `offline` heartbeat after its last batch was a clean stop's, for this
    /// outbox, with the outbox empty.
    pub clean: bool,
}

impl EpochEnd {
    /// Ends `epoch`, whose settled (stored, dropped or rejected) seqs are `settled`, when
    /// `next_epoch` arrived at `at`, given the gateway's last `offline` heartbeat (and when it
    /// arrived).
    pub fn new(
        (epoch, info): (Epoch, &EpochInfo),
        (at, next_epoch): (Timestamp, Epoch),
        settled: &SeqRanges,
        last_offline: Option<&(Timestamp, Status)>,
    ) -> EpochEnd {
        let reported_written = info.reported_written;
        let (last_seq, missing) = last_and_missing(settled);
        let outstanding_at_least = reported_written.map_or(0, |w| w.saturating_sub(last_seq));
        // A last will is sealed when the gateway connects, so it says nothing of the outbox at
        // the end; a clean stop's heartbeat is sent after the final flush (uptime > 0). A
        // heartbeat naming another outbox (the new disk's) says nothing of this one.
        let stopped_empty = last_offline.is_some_and(|(received, s)| {
            *received >= info.last_received
                && s.state == GatewayState::Offline
                && s.outbox_depth == 0
                && s.uptime_s > 0
                && s.epoch.is_none_or(|e| e == epoch)
        });
        EpochEnd {
            at,
            next_epoch,
            last_seq,
            missing,
            reported_written,
            outstanding_at_least,
            clean: missing == 0 && outstanding_at_least == 0 && stopped_empty,
        }
    }
}

/// The highest settled seq, and how many seqs below it are not settled (seqs start at 1).
pub fn last_and_missing(settled: &SeqRanges) -> (u64, u64) {
    let last = settled.last().unwrap_or(0);
    let missing = u128::from(last)
        .saturating_sub(settled.count())
        .min(u128::from(u64::MAX)) as u64;
    (last, missing)
}

impl EpochInfo {
    /// Epoch `gw`/`epoch`'s record as stored (at [`info_key`]).
    pub fn decode(gw: &GatewayId, epoch: Epoch, bytes: &[u8]) -> Result<EpochInfo, StoreError> {
        serde_json::from_slice(bytes)
            .map_err(|e| StoreError::Backend(format!("epoch record {gw}/{epoch}: {e}")))
    }
}

pub fn info_key(gw: &GatewayId, epoch: Epoch) -> Vec<u8> {
    format!("{PREFIX}{gw}/{epoch}").into_bytes()
}

pub fn ledger_key(gw: &GatewayId, epoch: Epoch) -> Vec<u8> {
    format!("{gw}/{epoch}").into_bytes()
}

/// The seqs of an epoch the cloud rejected: [`ledger_key`] under [`REJECTED_PREFIX`].
pub fn rejected_key(gw: &GatewayId, epoch: Epoch) -> Vec<u8> {
    let mut key = REJECTED_PREFIX.as_bytes().to_vec();
    key.extend(ledger_key(gw, epoch));
    key
}

pub fn parse_ledger_key(key: &[u8]) -> Option<(GatewayId, Epoch)> {
    let text = std::str::from_utf8(key).ok()?;
    let (gw, epoch) = text.rsplit_once('/')?;
    Some((GatewayId::new(gw).ok()?, epoch.parse().ok()?))
}

/// One epoch of a gateway as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct EpochReport {
    pub epoch: Epoch,
    /// Seqs stored or counted as dropped by the gateway.
    pub stored: SeqRanges,
    /// Seqs acked as rejected (never stored), with the reason logged.
    pub rejected: SeqRanges,
    pub last_seq: u64,
    /// Seqs below `last_seq` neither stored nor rejected (yet).
    pub missing: u64,
    #[serde(flatten)]
    pub info: Option<EpochInfo>,
}

/// Every epoch of `gw` in the store, oldest first (epochs stored before their arrival times
/// were kept come first).
pub fn report(store: &dyn Store, gw: &GatewayId) -> Result<Vec<EpochReport>, StoreError> {
    let read = |prefix: String| -> Result<Vec<(Epoch, Vec<u8>)>, StoreError> {
        let entries = scan_prefix_from(
            store,
            Space::SeqRanges,
            prefix.as_bytes(),
            prefix.as_bytes(),
            100_000,
        )?;
        Ok(entries
            .into_iter()
            .filter_map(|(k, v)| {
                let epoch = std::str::from_utf8(&k[prefix.len()..]).ok()?.parse().ok()?;
                Some((epoch, v))
            })
            .collect())
    };
    let ranges = |v: &[u8]| -> Result<SeqRanges, StoreError> {
        serde_json::from_slice(v)
            .map_err(|e| StoreError::Backend(format!("seq ranges of {gw}: {e}")))
    };
    let mut out: Vec<EpochReport> = Vec::new();
    for (epoch, v) in read(format!("{gw}/"))? {
        out.push(EpochReport {
            epoch,
            stored: ranges(&v)?,
            rejected: SeqRanges::new(),
            last_seq: 0,
            missing: 0,
            info: None,
        });
    }
    let entry = |out: &mut Vec<EpochReport>, epoch: Epoch| -> usize {
        match out.iter().position(|r| r.epoch == epoch) {
            Some(i) => i,
            None => {
                out.push(EpochReport {
                    epoch,
                    stored: SeqRanges::new(),
                    rejected: SeqRanges::new(),
                    last_seq: 0,
                    missing: 0,
                    info: None,
                });
                out.len() - 1
            }
        }
    };
    for (epoch, v) in read(format!("{REJECTED_PREFIX}{gw}/"))? {
        let i = entry(&mut out, epoch);
        out[i].rejected = ranges(&v)?;
    }
    for (epoch, v) in read(format!("{PREFIX}{gw}/"))? {
        let i = entry(&mut out, epoch);
        out[i].info = Some(
            serde_json::from_slice(&v)
                .map_err(|e| StoreError::Backend(format!("epoch {epoch} of {gw}: {e}")))?,
        );
    }
    for r in &mut out {
        let mut settled = r.stored.clone();
        settled.merge(&r.rejected);
        (r.last_seq, r.missing) = last_and_missing(&settled);
    }
    out.sort_by_key(|r| r.info.as_ref().map(|i| i.first_received));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms).unwrap()
    }

    fn offline(depth: u64, uptime_s: u64) -> Status {
        offline_of(depth, uptime_s, None)
    }

    fn offline_of(depth: u64, uptime_s: u64, epoch: Option<Epoch>) -> Status {
        Status {
            state: GatewayState::Offline,
            ts: ts(0),
            uptime_s,
            outbox_depth: depth,
            adverts_per_s: 0.0,
            config_version: 0,
            dropped: 0,
            sw_version: "t".into(),
            accepts_v: vec![1],
            clock_synced: true,
            epoch,
            last_seq: None,
        }
    }

    fn seqs(a: u64, b: u64) -> SeqRanges {
        let mut r = SeqRanges::new();
        for s in a..=b {
            r.insert(s);
        }
        r
    }

    #[test]
    fn an_epoch_ends_clean_only_after_a_clean_stop_with_an_empty_outbox() {
        let info = EpochInfo {
            first_received: ts(1_000),
            last_received: ts(5_000),
            reported_written: None,
            ended: None,
        };
        let end = |settled: &SeqRanges, off: Option<(Timestamp, Status)>| {
            EpochEnd::new(
                (Epoch(1), &info),
                (ts(9_000), Epoch(2)),
                settled,
                off.as_ref(),
            )
        };
        let all = seqs(1, 40);
        assert!(end(&all, Some((ts(6_000), offline(0, 30)))).clean);
        // No heartbeat at all, a last will (uptime 0), a heartbeat before the last batch, or
        // one with events still in the outbox: outstanding events cannot be ruled out.
        assert!(!end(&all, None).clean);
        assert!(!end(&all, Some((ts(6_000), offline(0, 0)))).clean);
        assert!(!end(&all, Some((ts(4_000), offline(0, 30)))).clean);
        assert!(!end(&all, Some((ts(6_000), offline(3, 30)))).clean);
        let mut holed = seqs(1, 10);
        holed.merge(&seqs(15, 40));
        let e = end(&holed, Some((ts(6_000), offline(0, 30))));
        assert_eq!((e.last_seq, e.missing, e.clean), (40, 4, false));
        // A clean stop of the new outbox (before it sent anything) is not this one's.
        let newer = offline_of(0, 30, Some(Epoch(2)));
        assert!(!end(&all, Some((ts(6_000), newer))).clean);
        let own = offline_of(0, 30, Some(Epoch(1)));
        assert!(end(&all, Some((ts(6_000), own.clone()))).clean);
        // Heartbeats said seq 55 was written: 15 events were outstanding.
        let info = EpochInfo {
            reported_written: Some(55),
            ..info
        };
        let e = EpochEnd::new(
            (Epoch(1), &info),
            (ts(9_000), Epoch(2)),
            &all,
            Some(&(ts(6_000), own)),
        );
        assert_eq!((e.outstanding_at_least, e.clean), (15, false));
    }

    #[test]
    fn keys_of_epochs_and_ledgers_never_collide() {
        let gw = GatewayId::new("epoch").unwrap();
        let key = ledger_key(&gw, Epoch(7));
        assert_eq!(parse_ledger_key(&key), Some((gw.clone(), Epoch(7))));
        assert!(info_key(&gw, Epoch(7)).starts_with(PREFIX.as_bytes()));
        assert!(parse_ledger_key(&info_key(&gw, Epoch(7))).is_none());
    }
}
