//! What every [`Store`] engine must do, checked the same way on each (sled always, PostgreSQL
//! whenever a cluster can be started): `store_conformance!` writes one test per check into
//! the engine's test module.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::{Commit, Space, Store, StoreError};

/// A place one engine's store lives, which can be opened again.
pub trait Fixture {
    fn open(&self) -> Arc<dyn Store>;
}

/// Writes the conformance tests for the engine whose fixture `$fixture` makes (an expression
/// giving `Option<impl Fixture>`: `None` skips, for an engine that cannot run here).
macro_rules! store_conformance {
    ($fixture:expr) => {
        $crate::store::conformance::store_conformance!(@tests $fixture;
            commits_are_atomic_across_spaces_and_checked,
            the_last_write_of_a_key_in_a_commit_wins,
            many_keys_read_at_once_come_back_in_their_order,
            commits_are_counted_per_space_they_write_once_applied,
            scans_keep_byte_order_limits_and_ranges,
            every_space_keeps_its_own_keys,
            commits_survive_reopening,
            racing_commits_on_one_expectation_apply_once_each,
            racing_inserts_of_one_absent_key_apply_once,
        );
    };
    (@tests $fixture:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                if let Some(f) = $fixture {
                    $crate::store::conformance::$name(&f);
                }
            }
        )*
    };
}
pub(crate) use store_conformance;

fn put(store: &dyn Store, space: Space, key: &[u8], value: &[u8]) {
    let mut c = Commit::new();
    c.put(space, key.to_vec(), value.to_vec());
    store.commit(c).unwrap();
}

pub fn commits_are_atomic_across_spaces_and_checked(f: &dyn Fixture) {
    let s = f.open();
    let mut c = Commit::new();
    c.put(Space::EventLog, b"k1".to_vec(), b"v1".to_vec());
    c.put(Space::Offsets, b"stage".to_vec(), b"1".to_vec());
    c.expect(Space::Offsets, b"stage".to_vec(), None);
    s.commit(c).unwrap();
    assert_eq!(s.get(Space::EventLog, b"k1").unwrap(), Some(b"v1".to_vec()));
    // A stale expectation writes nothing at all.
    let mut c = Commit::new();
    c.put(Space::EventLog, b"k2".to_vec(), b"v2".to_vec());
    c.put(Space::Offsets, b"stage".to_vec(), b"2".to_vec());
    c.expect(Space::Offsets, b"stage".to_vec(), None);
    let err = s.commit(c).unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::Conflict {
                space: Space::Offsets,
                key
            } if key.0 == b"stage"
        ),
        "{err}"
    );
    assert_eq!(s.get(Space::EventLog, b"k2").unwrap(), None);
    assert_eq!(
        s.get(Space::Offsets, b"stage").unwrap(),
        Some(b"1".to_vec())
    );
    // The first expectation that fails is the one reported.
    let mut c = Commit::new();
    c.expect(Space::Offsets, b"stage".to_vec(), Some(b"1".to_vec()));
    c.expect(Space::Visits, b"a".to_vec(), Some(b"x".to_vec()));
    c.expect(Space::Offsets, b"stage".to_vec(), Some(b"9".to_vec()));
    let err = s.commit(c).unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::Conflict {
                space: Space::Visits,
                ..
            }
        ),
        "{err}"
    );
    let mut c = Commit::new();
    c.delete(Space::EventLog, b"k1".to_vec());
    c.expect(Space::Offsets, b"stage".to_vec(), Some(b"1".to_vec()));
    s.commit(c).unwrap();
    assert_eq!(s.get(Space::EventLog, b"k1").unwrap(), None);
    // An empty commit, and deleting what is not there, are fine.
    s.commit(Commit::new()).unwrap();
    let mut c = Commit::new();
    c.delete(Space::EventLog, b"never".to_vec());
    s.commit(c).unwrap();
}

pub fn the_last_write_of_a_key_in_a_commit_wins(f: &dyn Fixture) {
    let s = f.open();
    put(s.as_ref(), Space::Meta, b"gone", b"0");
    let mut c = Commit::new();
    c.put(Space::Meta, b"k".to_vec(), b"1".to_vec());
    c.put(Space::Meta, b"k".to_vec(), b"2".to_vec());
    c.put(Space::Meta, b"gone".to_vec(), b"1".to_vec());
    c.delete(Space::Meta, b"gone".to_vec());
    c.delete(Space::Meta, b"back".to_vec());
    c.put(Space::Meta, b"back".to_vec(), b"3".to_vec());
    // Expectations see the state before the commit's writes.
    c.expect(Space::Meta, b"k".to_vec(), None);
    s.commit(c).unwrap();
    assert_eq!(s.get(Space::Meta, b"k").unwrap(), Some(b"2".to_vec()));
    assert_eq!(s.get(Space::Meta, b"gone").unwrap(), None);
    assert_eq!(s.get(Space::Meta, b"back").unwrap(), Some(b"3".to_vec()));
}

pub fn many_keys_read_at_once_come_back_in_their_order(f: &dyn Fixture) {
    let s = f.open();
    put(s.as_ref(), Space::Identity, b"a", b"1");
    put(s.as_ref(), Space::Identity, b"c", b"");
    put(s.as_ref(), Space::Visits, b"b", b"other space");
    let keys: Vec<Vec<u8>> = [&b"c"[..], b"b", b"a", b"a", b"zz"]
        .iter()
        .map(|k| k.to_vec())
        .collect();
    assert_eq!(
        s.get_many(Space::Identity, &keys).unwrap(),
        [
            Some(vec![]),
            None,
            Some(b"1".to_vec()),
            Some(b"1".to_vec()),
            None
        ]
    );
    assert!(s.get_many(Space::Identity, &[]).unwrap().is_empty());
}

pub fn commits_are_counted_per_space_they_write_once_applied(f: &dyn Fixture) {
    let s = f.open();
    let mut c = Commit::new();
    c.put(Space::Identity, b"a".to_vec(), b"1".to_vec());
    c.put(Space::Identity, b"b".to_vec(), b"2".to_vec());
    c.expect(Space::Visits, b"v".to_vec(), None);
    s.commit(c).unwrap();
    assert_eq!(s.commits_to(Space::Identity), 1);
    assert_eq!(
        s.commits_to(Space::Visits),
        0,
        "an expectation writes nothing"
    );
    let mut c = Commit::new();
    c.delete(Space::Identity, b"a".to_vec());
    c.expect(Space::Identity, b"b".to_vec(), None);
    assert!(s.commit(c).is_err());
    assert_eq!(
        s.commits_to(Space::Identity),
        1,
        "a refused commit wrote nothing"
    );
    let mut c = Commit::new();
    c.delete(Space::Identity, b"a".to_vec());
    s.commit(c).unwrap();
    assert_eq!(s.commits_to(Space::Identity), 2);
}

pub fn scans_keep_byte_order_limits_and_ranges(f: &dyn Fixture) {
    let s = f.open();
    let keys: [&[u8]; 8] = [
        b"",
        &[0],
        &[1],
        &[1, 0],
        &[1, 0xff],
        &[2],
        &[0x7f, 0x80],
        &[0xff, 0xff],
    ];
    let mut c = Commit::new();
    for (i, k) in keys.iter().enumerate().rev() {
        c.put(Space::Registry, k.to_vec(), vec![i as u8]);
    }
    s.commit(c).unwrap();
    let all = s.scan(Space::Registry, b"", 100).unwrap();
    let got: Vec<&[u8]> = all.iter().map(|(k, _)| k.as_slice()).collect();
    assert_eq!(
        got, keys,
        "unsigned byte order, a prefix before its extensions"
    );
    assert!(all.iter().enumerate().all(|(i, (_, v))| v == &[i as u8]));
    let from_one: Vec<Vec<u8>> = s
        .scan(Space::Registry, &[1], 2)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(from_one, [vec![1], vec![1, 0]]);
    let range: Vec<Vec<u8>> = s
        .scan_range(Space::Registry, &[1], &[2], 100)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(range, [vec![1], vec![1, 0], vec![1, 0xff]], "end excluded");
    assert!(s
        .scan_range(Space::Registry, &[2], &[2], 10)
        .unwrap()
        .is_empty());
    assert!(s
        .scan_range(Space::Registry, &[3], &[2], 10)
        .unwrap()
        .is_empty());
    assert!(s.scan(Space::Registry, &[1], 0).unwrap().is_empty());
    assert_eq!(
        s.scan(Space::Registry, &[0xff, 0xff, 0], usize::MAX)
            .unwrap(),
        []
    );
    assert_eq!(
        s.last(Space::Registry).unwrap(),
        Some((vec![0xff, 0xff], vec![7]))
    );
    assert_eq!(s.last(Space::Stats).unwrap(), None);
    assert_eq!(
        s.last_before(Space::Registry, &[0xff, 0xff]).unwrap(),
        Some((vec![0x7f, 0x80], vec![6]))
    );
    assert_eq!(
        s.last_before(Space::Registry, &[0]).unwrap(),
        Some((vec![], vec![0]))
    );
    assert_eq!(s.last_before(Space::Registry, &[]).unwrap(), None);
    assert_eq!(
        super::last_with_prefix(s.as_ref(), Space::Registry, &[1]).unwrap(),
        Some((vec![1, 0xff], vec![4]))
    );
    assert_eq!(
        super::last_with_prefix(s.as_ref(), Space::Registry, &[0xff]).unwrap(),
        Some((vec![0xff, 0xff], vec![7]))
    );
    assert_eq!(
        super::last_with_prefix(s.as_ref(), Space::Registry, &[4]).unwrap(),
        None
    );
    assert_eq!(s.get(Space::Registry, &[1, 0]).unwrap(), Some(vec![3]));
    assert_eq!(s.get(Space::Registry, &[1, 1]).unwrap(), None);
}

pub fn every_space_keeps_its_own_keys(f: &dyn Fixture) {
    let s = f.open();
    let mut c = Commit::new();
    for space in Space::ALL {
        c.put(space, b"same".to_vec(), space.name().as_bytes().to_vec());
    }
    s.commit(c).unwrap();
    for space in Space::ALL {
        assert_eq!(
            s.scan(space, b"", 10).unwrap(),
            [(b"same".to_vec(), space.name().as_bytes().to_vec())],
            "{space:?}"
        );
    }
}

pub fn commits_survive_reopening(f: &dyn Fixture) {
    {
        let s = f.open();
        let mut c = Commit::new();
        for k in [3u8, 1, 2, 9] {
            c.put(Space::Registry, vec![k], vec![k * 10]);
        }
        s.commit(c).unwrap();
        s.flush().unwrap();
    }
    let s = f.open();
    let keys: Vec<u8> = s
        .scan(Space::Registry, &[2], 10)
        .unwrap()
        .iter()
        .map(|(k, _)| k[0])
        .collect();
    assert_eq!(keys, [2, 3, 9]);
    assert_eq!(s.last(Space::Registry).unwrap(), Some((vec![9], vec![90])));
}

/// Threads each add one to a counter many times, each add a commit that expects the value it
/// read: every commit that succeeds counts once, and none is lost or doubled.
pub fn racing_commits_on_one_expectation_apply_once_each(f: &dyn Fixture) {
    let s = f.open();
    put(s.as_ref(), Space::Offsets, b"n", &0u64.to_be_bytes());
    let applied = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (s, applied) = (s.clone(), applied.clone());
            std::thread::spawn(move || {
                for i in 0..25u32 {
                    let old = s.get(Space::Offsets, b"n").unwrap().unwrap();
                    let n = u64::from_be_bytes(old.as_slice().try_into().unwrap());
                    let mut c = Commit::new();
                    c.expect(Space::Offsets, b"n".to_vec(), Some(old));
                    c.put(
                        Space::Offsets,
                        b"n".to_vec(),
                        (n + 1).to_be_bytes().to_vec(),
                    );
                    c.put(Space::EventLog, format!("{t}/{i}"), b"x".to_vec());
                    match s.commit(c) {
                        Ok(()) => {
                            applied.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(StoreError::Conflict { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let applied = applied.load(Ordering::SeqCst);
    let n = s.get(Space::Offsets, b"n").unwrap().unwrap();
    assert_eq!(
        u64::from_be_bytes(n.as_slice().try_into().unwrap()),
        applied as u64
    );
    assert_eq!(
        s.scan(Space::EventLog, b"", 1000).unwrap().len(),
        applied,
        "a refused commit's other writes are not applied either"
    );
    assert!(applied >= 25, "at least one thread's commits went through");
}

/// Threads race to claim one absent key: exactly one claim applies.
pub fn racing_inserts_of_one_absent_key_apply_once(f: &dyn Fixture) {
    let s = f.open();
    for round in 0..10u8 {
        let key = vec![b'c', round];
        let won = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                let (s, won, key) = (s.clone(), won.clone(), key.clone());
                std::thread::spawn(move || {
                    let mut c = Commit::new();
                    c.expect(Space::Dedup, key.clone(), None);
                    c.put(Space::Dedup, key, vec![t]);
                    match s.commit(c) {
                        Ok(()) => {
                            won.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(StoreError::Conflict { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(won.load(Ordering::SeqCst), 1, "round {round}");
    }
}
