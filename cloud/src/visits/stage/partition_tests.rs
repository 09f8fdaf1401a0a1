//! The stage split in partitions (issue 32): partitions decide the visits one partition
//! decides, and instances sharing a store's partitions — handing one over mid-day — write
//! what one instance holding them all writes.

use super::tests::{g1_event, store_of};
use super::*;
use crate::store::barrier::scan_all;
use crate::store::event_log::EventLog;
use crate::store::testing::{places, Place, TestStore};
use crate::store::Commit;
use omo_device_config::payload::Sighting;
use omo_device_config::BeaconId;

const CUSTOMERS: usize = 12;
const SECONDS: i64 = 240;
const T0: i64 = 1_790_000_000_000;

/// Second `s` of a day: a tick and the sightings of the customers about then (each comes for
/// a while, stays, and leaves; some come back), some of them late.
fn second(s: i64, beacons: &[BeaconId], seq: &mut u64) -> Vec<Record> {
    let received = ts(T0 + s * 1000);
    let mut records = vec![Record::Tick { received }];
    for (i, beacon) in beacons.iter().enumerate() {
        let i = i as i64;
        let arrives = (i * 13) % 90;
        let here = (s >= arrives && s < arrives + 40 + i * 3) || (s >= 170 + i && s < 200);
        if !here || (s + i) % 3 != 0 {
            continue;
        }
        *seq += 1;
        let at = ts(received.millis() - (i % 4) * 700);
        let sighting = Sighting {
            seq: *seq,
            ts: at,
            beacon: *beacon,
            rssi: -60.0,
            distance_m: 3.0,
            seen_s: 0.0,
        };
        records.push(g1_event(PresenceEvent::Stay(sighting), at, received));
    }
    records
}

fn append(store: &TestStore, log: &mut EventLog, records: &[Record]) {
    let mut c = Commit::new();
    for r in records {
        log.append(&mut c, &r.encode());
    }
    store.commit(c).unwrap();
}

/// The visits stored, by id.
fn visits(store: &TestStore) -> Vec<(Vec<u8>, Vec<u8>)> {
    scan_all(store, Space::Visits)
        .unwrap()
        .into_iter()
        .filter(|(k, _)| k.starts_with(b"visit/"))
        .collect()
}

/// The transitions stored, each as JSON without when it was decided (which depends on the
/// engine's other customers), sorted.
fn transitions(store: &TestStore) -> Vec<String> {
    let mut out: Vec<String> = scan_all(store, Space::Transitions)
        .unwrap()
        .into_iter()
        .map(|(_, v)| {
            let mut t: serde_json::Value = serde_json::from_slice(&v).unwrap();
            t.as_object_mut().unwrap().remove("decided_ms");
            t.to_string()
        })
        .collect();
    out.sort();
    out
}

#[test]
fn partitions_decide_the_visits_one_partition_decides() {
    for place in places() {
        partitions_decide_as_one_on(&place);
    }
}

fn partitions_decide_as_one_on(place: &Place) {
    let (one, inputs_one, beacons) = store_of(place, CUSTOMERS, None);
    let other = place.fresh_like();
    let (four, inputs_four, _) = store_of(&other, CUSTOMERS, Some(4));
    let mut stage_one = VisitStage::open(&one, &inputs_one).unwrap();
    let mut stage_four = VisitStage::open(&four, &inputs_four).unwrap();
    assert_eq!(stage_four.held().len(), 4);
    let (mut log_one, mut log_four) = (
        EventLog::open(&one).unwrap(),
        EventLog::open(&four).unwrap(),
    );
    let mut seq = 0;
    for s in 0..SECONDS {
        let records = second(s, &beacons, &mut seq);
        append(&one, &mut log_one, &records);
        append(&four, &mut log_four, &records);
        while stage_one.step(&one, &inputs_one).unwrap() > 0 {}
        while stage_four.step(&four, &inputs_four).unwrap() > 0 {}
    }
    let stored = visits(&one);
    assert!(stored.len() >= CUSTOMERS, "{} visits", stored.len());
    assert_eq!(visits(&four), stored);
    assert_eq!(transitions(&four), transitions(&one));
    // Each partition numbers its own, from 1, and is read to its end.
    let end = log_four.next_offset();
    assert_eq!(stage_four.lag(end), 0);
    assert_eq!(cluster::positions(&four, CONSUMER).unwrap(), vec![end; 4]);
    for p in Partition::all(4) {
        let n = transitions_end(&four, p).unwrap() - 1;
        assert!(n > 0, "partition {p} has customers");
        let prefix = p.key_prefix();
        let keys: Vec<u64> = scan_all(&four, Space::Transitions)
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| keys::transition_seq(p, k).unwrap())
            .collect();
        assert_eq!(keys, (1..=n).collect::<Vec<_>>(), "partition {p}");
    }
}

#[test]
fn instances_sharing_the_partitions_write_what_one_instance_writes() {
    for place in places() {
        instances_sharing_on(&place);
    }
}

fn instances_sharing_on(place: &Place) {
    let (alone, inputs_alone, beacons) = store_of(place, CUSTOMERS, Some(4));
    let other = place.fresh_like();
    let (shared, inputs, _) = store_of(&other, CUSTOMERS, Some(4));
    let mut stage_alone = VisitStage::open(&alone, &inputs_alone).unwrap();
    let p = |i| Partition::new(i, 4);
    let mut x = VisitStage::open_partitions(&shared, &inputs, [p(0), p(1)]).unwrap();
    let mut y = VisitStage::open_partitions(&shared, &inputs, [p(2), p(3)]).unwrap();
    let (mut log_alone, mut log_shared) = (
        EventLog::open(&alone).unwrap(),
        EventLog::open(&shared).unwrap(),
    );
    let mut seq = 0;
    for s in 0..SECONDS {
        let records = second(s, &beacons, &mut seq);
        append(&alone, &mut log_alone, &records);
        append(&shared, &mut log_shared, &records);
        while stage_alone.step(&alone, &inputs_alone).unwrap() > 0 {}
        if s == 100 {
            // x lets partition 1 go; y takes it on some seconds later, from what x committed.
            x.release(p(1));
        }
        if s == 130 {
            y.hold(&shared, &inputs, p(1)).unwrap();
        }
        while x.step(&shared, &inputs).unwrap() > 0 {}
        while y.step(&shared, &inputs).unwrap() > 0 {}
    }
    assert_eq!(x.held(), [p(0)]);
    assert_eq!(y.held(), [p(1), p(2), p(3)]);
    assert_eq!(visits(&shared), visits(&alone));
    // The stores' hour tallies: a row per partition (instances running other partitions
    // never write the same one), as one instance holding them all writes them.
    let tallies = |s: &TestStore| -> Vec<(Vec<u8>, Vec<u8>)> {
        scan_all(s, Space::Visits)
            .unwrap()
            .into_iter()
            .filter(|(k, _)| k.starts_with(b"tally/"))
            .collect()
    };
    let rows = tallies(&shared);
    assert!(!rows.is_empty());
    assert_eq!(rows, tallies(&alone));
    for (k, _) in &rows {
        let key = String::from_utf8_lossy(k);
        let shard = key
            .rsplit('/')
            .next()
            .and_then(|s| u16::from_str_radix(s, 16).ok());
        assert!(shard.is_some_and(|s| s < 4), "{key}");
    }
    assert_eq!(
        scan_all(&shared, Space::Transitions).unwrap(),
        scan_all(&alone, Space::Transitions).unwrap()
    );
    // A customer is erased by the instance that runs their partition.
    let customer = "c3";
    let theirs = Partition::of(customer, 4);
    let (runs, other) = if x.held().contains(&theirs) {
        (&mut x, &mut y)
    } else {
        (&mut y, &mut x)
    };
    let refused = other.erase(&shared, &inputs, customer).unwrap_err();
    assert!(
        refused
            .to_string()
            .contains(&format!("partition {theirs} is not run by this instance")),
        "{refused}"
    );
    // Its identity step done and its asker gone before the visit stage did its part: the
    // sweeper asks the stage; the instance that does not run it does nothing, the one that
    // does erases once and says what it removed in the request.
    let (_, c) = crate::identity::begin_erasure(&shared, customer)
        .unwrap()
        .unwrap();
    shared.commit(c).unwrap();
    let outcome = || crate::visits::erasure_outcome(&shared, customer).unwrap();
    assert_eq!(
        crate::privacy::finish_waiting_erasures(&shared, 0).unwrap(),
        0
    );
    assert_eq!(other.take_erasures(&shared, &inputs).unwrap(), 0);
    assert_eq!(outcome(), None);
    assert_eq!(runs.take_erasures(&shared, &inputs).unwrap(), 1);
    let erased = outcome().expect("done");
    assert!(erased.visits > 0, "{erased:?}");
    assert_eq!(runs.take_erasures(&shared, &inputs).unwrap(), 0);
    // Asking again after it was done changes nothing.
    crate::visits::request_erasure(&shared, customer).unwrap();
    assert_eq!(outcome(), Some(erased));
    // The sweeper finishes it: the erasure record and the request go.
    assert_eq!(
        crate::privacy::finish_waiting_erasures(&shared, 0).unwrap(),
        1
    );
    assert!(crate::identity::erasing(&shared, customer)
        .unwrap()
        .is_none());
    assert_eq!(outcome(), None);
    // A stage erasing again (it read the request before it was finished) writes no request
    // back.
    runs.erase(&shared, &inputs, customer).unwrap();
    assert_eq!(outcome(), None);
    let left = visits(&shared);
    assert!(left.len() < visits(&alone).len());
    assert!(left
        .iter()
        .all(|(_, v)| !String::from_utf8_lossy(v).contains("\"customer\":\"c3\"")));
}

#[test]
fn a_partition_of_another_count_is_refused() {
    let place = Place::sled();
    let (store, inputs, _) = store_of(&place, 1, Some(4));
    let e = VisitStage::open_partitions(&store, &inputs, [Partition::new(0, 8)])
        .err()
        .unwrap();
    assert!(
        e.to_string().contains("0/8 is not one of this store's 4"),
        "{e}"
    );
}

/// Steps `stage` until it has read everything, a conflict (another instance committed the
/// partition first) read again.
fn drain(stage: &mut VisitStage, store: &TestStore, inputs: &Inputs) {
    loop {
        match stage.step(store, inputs) {
            Ok(0) => return,
            Ok(_) | Err(StoreError::Conflict { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
}

/// Two instances holding the same partitions (leases off): what one erased the other does not
/// write back from the engine it held before — its next commit conflicts and it reads again.
#[test]
fn an_erasure_is_not_written_back_by_another_instance_holding_the_partition() {
    for place in places() {
        erasure_not_written_back_on(&place);
    }
}

fn erasure_not_written_back_on(place: &Place) {
    let (store, inputs, beacons) = store_of(place, CUSTOMERS, Some(4));
    let mut x = VisitStage::open(&store, &inputs).unwrap();
    let mut y = VisitStage::open(&store, &inputs).unwrap();
    let mut log = EventLog::open(&store).unwrap();
    let mut seq = 0;
    let erased = "c3";
    let mut erased_at = None;
    for s in 0..SECONDS {
        let mut records = second(s, &beacons, &mut seq);
        if erased_at.is_some() {
            // Their identity is gone first: nothing more is about them.
            records.retain(|r| !matches!(r, Record::Gateway(g) if g.event.as_sighting().is_some_and(|(_, s)| s.beacon == beacons[3])));
        }
        append(&store, &mut log, &records);
        // After the erasure, y (which held c3 before it) commits first.
        drain(&mut y, &store, &inputs);
        drain(&mut x, &store, &inputs);
        if s == 60 {
            let e = x.erase(&store, &inputs, erased).unwrap();
            assert!(e.visits > 0 || e.visit_states > 0, "{e:?}");
            erased_at = Some(ts(T0 + s * 1000).millis());
        }
    }
    let after = erased_at.unwrap();
    assert!(
        visits(&store)
            .iter()
            .all(|(_, v)| !String::from_utf8_lossy(v).contains("\"customer\":\"c3\"")),
        "a visit of the erased written back"
    );
    for (_, v) in scan_all(&store, Space::Transitions).unwrap() {
        let t: serde_json::Value = serde_json::from_slice(&v).unwrap();
        assert!(
            !(t["customer"] == erased && t["decided_ms"].as_i64().unwrap() > after),
            "a transition of the erased decided after the erasure: {t}"
        );
    }
    let reopened = VisitStage::open(&store, &inputs).unwrap();
    assert!(reopened
        .engine_of(erased)
        .is_some_and(|e| e.live_scopes(erased).next().is_none()));
}
