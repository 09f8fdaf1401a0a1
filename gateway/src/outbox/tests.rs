//! Outbox tests on a real sled directory.

use super::*;
use omo_device_config::payload::{Footfall, Rejected};
use omo_device_config::Timestamp;

fn limits() -> OutboxLimits {
    OutboxLimits {
        max_bytes: 1 << 20,
        max_age_ms: 3_600_000,
        cache_bytes: 1 << 20,
    }
}

fn footfall(seq: u64, ts_ms: i64) -> PresenceEvent {
    PresenceEvent::Footfall(Footfall {
        seq,
        ts: Timestamp::from_millis(ts_ms).unwrap(),
        devices: 3,
    })
}

fn ack(epoch: Epoch, seqs: SeqRanges) -> PresenceAck {
    PresenceAck {
        epoch,
        seqs,
        rejected: Vec::new(),
    }
}

#[test]
fn seq_and_epoch_survive_a_restart_and_never_repeat() {
    let dir = tempfile::tempdir().unwrap();
    let (epoch, last) = {
        let mut o = Outbox::open(dir.path(), limits()).unwrap();
        for _ in 0..5 {
            o.push(|seq| footfall(seq, 1_000)).unwrap();
        }
        o.settle(&ack(o.epoch(), SeqRanges::from_range(1, 5)))
            .unwrap();
        assert_eq!(o.depth(), 0);
        o.flush_blocking().unwrap();
        (o.epoch(), o.next_seq() - 1)
    };
    assert_eq!(last, 5);
    let mut o = Outbox::open(dir.path(), limits()).unwrap();
    assert_eq!(o.epoch(), epoch);
    assert_eq!(
        o.push(|seq| footfall(seq, 2_000)).unwrap(),
        6,
        "acked seqs are not reused"
    );
    let fresh = tempfile::tempdir().unwrap();
    assert_ne!(
        Outbox::open(fresh.path(), limits()).unwrap().epoch(),
        epoch,
        "a new outbox gets a new epoch"
    );
}

#[test]
fn unacked_events_survive_a_restart_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut o = Outbox::open(dir.path(), limits()).unwrap();
        for i in 0..10 {
            o.push(|seq| footfall(seq, 1_000 + i)).unwrap();
        }
        o.settle(&ack(o.epoch(), [2, 3, 7].into_iter().collect()))
            .unwrap();
        o.flush_blocking().unwrap();
    }
    let mut o = Outbox::open(dir.path(), limits()).unwrap();
    assert_eq!(o.depth(), 7);
    let seqs: Vec<u64> = o
        .events_after(None, 100)
        .unwrap()
        .iter()
        .map(|e| e.seq())
        .collect();
    assert_eq!(seqs, [1, 4, 5, 6, 8, 9, 10]);
    let seqs: Vec<u64> = o
        .events_after(Some(5), 2)
        .unwrap()
        .iter()
        .map(|e| e.seq())
        .collect();
    assert_eq!(seqs, [6, 8]);
    let resend = o.events_in(&SeqRanges::from_range(3, 6)).unwrap();
    assert_eq!(
        resend.iter().map(|e| e.seq()).collect::<Vec<_>>(),
        [4, 5, 6]
    );
}

#[test]
fn acks_for_another_epoch_and_rejections() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = Outbox::open(dir.path(), limits()).unwrap();
    for _ in 0..4 {
        o.push(|seq| footfall(seq, 1_000)).unwrap();
    }
    let other = Epoch(o.epoch().0.wrapping_add(1));
    assert_eq!(
        o.settle(&ack(other, SeqRanges::from_range(1, 4))).unwrap(),
        0
    );
    assert_eq!(o.depth(), 4);
    let with_rejection = PresenceAck {
        epoch: o.epoch(),
        seqs: SeqRanges::from_range(1, 2),
        rejected: vec![Rejected {
            seqs: SeqRanges::from_range(3, 3),
            reason: "ts in the future".into(),
        }],
    };
    assert_eq!(o.settle(&with_rejection).unwrap(), 3);
    assert_eq!(o.depth(), 1);
}

#[test]
fn full_outbox_drops_oldest_and_reports_them_until_acked() {
    let dir = tempfile::tempdir().unwrap();
    let one = serde_json::to_vec(&footfall(1, 1_000)).unwrap().len() as u64;
    let mut o = Outbox::open(
        dir.path(),
        OutboxLimits {
            max_bytes: one * 5,
            ..limits()
        },
    )
    .unwrap();
    for _ in 0..8 {
        o.push(|seq| footfall(seq, 1_000)).unwrap();
    }
    assert_eq!(o.enforce_limits(1_000).unwrap(), 3);
    assert_eq!(o.depth(), 5);
    assert_eq!(o.pending_dropped(), &SeqRanges::from_range(1, 3));
    assert_eq!(o.dropped_total(), 3);
    // Too old: everything before the age bound goes too.
    assert_eq!(o.enforce_limits(1_000 + 3_600_001).unwrap(), 5);
    assert_eq!(o.pending_dropped(), &SeqRanges::from_range(1, 8));
    o.flush_blocking().unwrap();
    drop(o);
    let mut o = Outbox::open(dir.path(), limits()).unwrap();
    assert_eq!(
        (o.dropped_total(), o.depth()),
        (8, 0),
        "dropped counts survive a restart"
    );
    o.settle(&ack(o.epoch(), SeqRanges::from_range(1, 8)))
        .unwrap();
    assert!(o.pending_dropped().is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn flush_makes_writes_durable() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = Outbox::open(dir.path(), limits()).unwrap();
    o.push(|seq| footfall(seq, 1_000)).unwrap();
    o.flush().await.unwrap();
    assert_eq!(
        o.bytes(),
        serde_json::to_vec(&footfall(1, 1_000)).unwrap().len() as u64
    );
}

#[test]
fn an_unreadable_record_is_dropped_and_reported_not_a_roadblock() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = Outbox::open(dir.path(), limits()).unwrap();
    for _ in 0..3 {
        o.push(|seq| footfall(seq, 1_000)).unwrap();
    }
    // What an incompatible software update could leave behind.
    o.tree
        .insert(&event_key(2)[..], &b"{not an event"[..])
        .unwrap();
    let seqs: Vec<u64> = o
        .events_after(None, 10)
        .unwrap()
        .iter()
        .map(|e| e.seq())
        .collect();
    assert_eq!(seqs, [1, 3]);
    assert_eq!(o.pending_dropped(), &SeqRanges::from_range(2, 2));
    assert_eq!((o.depth(), o.dropped_total()), (2, 1));
}
