//! Backups (DESIGN.md, "Operations"): `omo-cloud backup DIR` asks the running service for a
//! consistent snapshot (the admin API takes it behind a short write barrier) and writes it to
//! `DIR/snapshot.ndjson`; `omo-cloud restore DIR` builds a fresh data dir from it offline and
//! then compares every space entry by entry.
//!
//! The file: a header line `{"omo_backup":1,"created":…,"counts":{space: n}}`, then one line
//! per entry `{"space":…,"key":base64,"value":base64}`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Deserialize;

use crate::store::barrier::scan_all;
use crate::store::sled_store::SledStore;
use crate::store::{Commit, Entry, Space, Store};

pub const FILE: &str = "snapshot.ndjson";

#[derive(Deserialize)]
struct Header {
    omo_backup: u32,
    counts: BTreeMap<String, usize>,
}

#[derive(Deserialize)]
struct Line {
    space: String,
    key: String,
    value: String,
}

/// Checks a snapshot body and writes it to `dir/snapshot.ndjson` (`dir` is created; it must
/// not hold a snapshot already). Returns the entry count per space.
pub fn write_snapshot(dir: &Path, body: &[u8]) -> anyhow::Result<BTreeMap<String, usize>> {
    let entries = parse(body)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(FILE);
    if path.exists() {
        bail!("{} exists; back up into an empty directory", path.display());
    }
    let tmp = dir.join(format!("{FILE}.partial"));
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(body)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(entries
        .iter()
        .map(|(s, e)| (s.name().to_owned(), e.len()))
        .collect())
}

/// Reads a snapshot, checking every line and the header's counts.
pub fn parse(body: &[u8]) -> anyhow::Result<BTreeMap<Space, Vec<Entry>>> {
    let mut lines = BufReader::new(body).lines();
    let header: Header = serde_json::from_str(&lines.next().context("snapshot is empty")??)
        .context("line 1: not a snapshot header")?;
    if header.omo_backup != 1 {
        bail!(
            "line 1: snapshot version {} is not one this build reads",
            header.omo_backup
        );
    }
    let mut out: BTreeMap<Space, Vec<Entry>> =
        Space::ALL.into_iter().map(|s| (s, Vec::new())).collect();
    for (i, line) in lines.enumerate() {
        let n = i + 2;
        let line = line?;
        let l: Line =
            serde_json::from_str(&line).with_context(|| format!("line {n}: not an entry"))?;
        let space = Space::from_name(&l.space)
            .with_context(|| format!("line {n}: unknown space {:?}", l.space))?;
        let key = STANDARD
            .decode(&l.key)
            .with_context(|| format!("line {n}: key is not base64"))?;
        let value = STANDARD
            .decode(&l.value)
            .with_context(|| format!("line {n}: value is not base64"))?;
        out.get_mut(&space).expect("every space").push((key, value));
    }
    for (space, entries) in &out {
        let expected = header.counts.get(space.name()).copied().unwrap_or(0);
        if entries.len() != expected {
            bail!(
                "space {}: {} entries, the header says {expected}: the snapshot is truncated",
                space.name(),
                entries.len()
            );
        }
    }
    Ok(out)
}

/// Builds a fresh sled data dir at `data_dir` from `dir/snapshot.ndjson`, then compares every
/// space with the snapshot. Returns the entry count per space.
pub fn restore(
    dir: &Path,
    data_dir: &Path,
    cache_bytes: u64,
) -> anyhow::Result<BTreeMap<String, usize>> {
    if data_dir.exists() && std::fs::read_dir(data_dir)?.next().is_some() {
        bail!(
            "{} is not empty: restore builds a fresh data dir",
            data_dir.display()
        );
    }
    let store = SledStore::open(data_dir, cache_bytes)?;
    restore_into(dir, &store)
}

/// Loads `dir/snapshot.ndjson` into `store`, which must hold nothing yet (a fresh sled dir, an
/// empty PostgreSQL database), then compares every space with the snapshot. Returns the entry
/// count per space.
pub fn restore_into(dir: &Path, store: &dyn Store) -> anyhow::Result<BTreeMap<String, usize>> {
    let path = dir.join(FILE);
    let body = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let snapshot = parse(&body).with_context(|| path.display().to_string())?;
    ensure_empty(store, "restore")?;
    for (space, entries) in &snapshot {
        for chunk in entries.chunks(1000) {
            let mut c = Commit::new();
            for (k, v) in chunk {
                c.put(*space, k.clone(), v.clone());
            }
            store.commit(c)?;
        }
    }
    store.flush()?;
    verify(store, &snapshot)?;
    Ok(snapshot
        .iter()
        .map(|(s, e)| (s.name().to_owned(), e.len()))
        .collect())
}

/// Refuses a target that holds anything: `what` fills an empty store.
fn ensure_empty(store: &dyn Store, what: &str) -> anyhow::Result<()> {
    for space in Space::ALL {
        if !store.scan(space, b"", 1)?.is_empty() {
            bail!(
                "the target already holds data (space {}): {what} fills an empty store",
                space.name()
            );
        }
    }
    Ok(())
}

/// Entries copied or compared at a time.
const PAGE: usize = 1000;

/// Copies every entry of every space of `from` into `to` (which must hold nothing yet), a
/// page at a time, then compares the two space by space, entry by entry: how a sled data dir
/// moves into PostgreSQL (`omo-cloud migrate`). Returns the entry count per space.
pub fn copy_into(from: &dyn Store, to: &dyn Store) -> anyhow::Result<BTreeMap<String, usize>> {
    ensure_empty(to, "migrate")?;
    let mut counts = BTreeMap::new();
    for space in Space::ALL {
        let mut after = Vec::new();
        let mut n = 0;
        loop {
            let page = from.scan(space, &after, PAGE)?;
            let Some((last, _)) = page.last() else {
                break;
            };
            after = last.clone();
            after.push(0);
            n += page.len();
            let mut c = Commit::new();
            for (k, v) in page {
                c.put(space, k, v);
            }
            to.commit(c)?;
        }
        counts.insert(space.name().to_owned(), n);
    }
    to.flush()?;
    compare(from, to)?;
    Ok(counts)
}

/// Compares two stores space by space, entry by entry; names the first entry that differs.
fn compare(a: &dyn Store, b: &dyn Store) -> anyhow::Result<()> {
    for space in Space::ALL {
        let mut after = Vec::new();
        loop {
            let (pa, pb) = (a.scan(space, &after, PAGE)?, b.scan(space, &after, PAGE)?);
            if let Some(i) = (0..pa.len().max(pb.len())).find(|&i| pa.get(i) != pb.get(i)) {
                let key = pa
                    .get(i)
                    .or(pb.get(i))
                    .map(|(k, _)| k.clone())
                    .unwrap_or_default();
                bail!(
                    "space {} differs after copying, at key {}",
                    space.name(),
                    crate::store::Hex(key)
                );
            }
            let Some((last, _)) = pa.last() else {
                break;
            };
            after = last.clone();
            after.push(0);
        }
    }
    Ok(())
}

/// Compares every space of `store` with `snapshot`, entry by entry.
fn verify(store: &dyn Store, snapshot: &BTreeMap<Space, Vec<Entry>>) -> anyhow::Result<()> {
    for (space, entries) in snapshot {
        let stored = scan_all(store, *space)?;
        if &stored != entries {
            bail!(
                "space {} differs from the snapshot after restoring",
                space.name()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn snapshot_body(entries: &[(Space, &[u8], &[u8])]) -> Vec<u8> {
        let mut counts = BTreeMap::new();
        for (s, _, _) in entries {
            *counts.entry(s.name()).or_insert(0) += 1;
        }
        let mut out =
            json!({"omo_backup": 1, "created": "2026-01-01T00:00:00.000Z", "counts": counts})
                .to_string();
        out.push('\n');
        for (s, k, v) in entries {
            out +=
                &json!({"space": s.name(), "key": STANDARD.encode(k), "value": STANDARD.encode(v)})
                    .to_string();
            out.push('\n');
        }
        out.into_bytes()
    }

    #[test]
    fn restores_every_space_and_refuses_damage() {
        let dir = tempfile::tempdir().unwrap();
        let body = snapshot_body(&[
            (Space::Registry, b"store/a", b"{}"),
            (
                Space::EventLog,
                &1u64.to_be_bytes(),
                b"{\"source\":\"tick\"}",
            ),
            (Space::Offsets, b"stats", &2u64.to_be_bytes()),
        ]);
        let counts = write_snapshot(&dir.path().join("b"), &body).unwrap();
        assert_eq!(counts["registry"], 1);
        assert!(
            write_snapshot(&dir.path().join("b"), &body).is_err(),
            "never overwrites"
        );
        let data = dir.path().join("data");
        let restored = restore(&dir.path().join("b"), &data, 1 << 20).unwrap();
        assert_eq!(restored, counts);
        let s = SledStore::open(&data, 1 << 20).unwrap();
        assert_eq!(
            s.get(Space::Registry, b"store/a").unwrap(),
            Some(b"{}".to_vec())
        );
        drop(s);
        let err = restore(&dir.path().join("b"), &data, 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not empty"), "{err}");
        // A truncated snapshot is refused before anything is written.
        let cut = &body[..body.len() - 20];
        let err = format!(
            "{:#}",
            write_snapshot(&dir.path().join("c"), cut).unwrap_err()
        );
        assert!(err.contains("line 4") || err.contains("truncated"), "{err}");
    }

    #[test]
    fn a_store_copies_into_an_empty_one_on_each_engine_entry_by_entry() {
        let source = crate::store::testing::Place::sled();
        let from = source.open();
        let mut c = Commit::new();
        for i in 0..2500u32 {
            c.put(Space::EventLog, i.to_be_bytes().to_vec(), vec![1; 40]);
        }
        c.put(Space::Registry, b"store/s1".to_vec(), b"{}".to_vec());
        c.put(Space::Meta, vec![0xff, 0], vec![]);
        from.commit(c).unwrap();
        for place in crate::store::testing::places() {
            let to = place.open();
            let counts = copy_into(&from, &to).unwrap();
            assert_eq!(counts["event_log"], 2500);
            assert_eq!(
                (counts["registry"], counts["meta"], counts["visits"]),
                (1, 1, 0)
            );
            assert_eq!(
                scan_all(&to, Space::EventLog).unwrap(),
                scan_all(&from, Space::EventLog).unwrap()
            );
            let again = copy_into(&from, &to).unwrap_err().to_string();
            assert!(again.contains("already holds data"), "{again}");
        }
    }
}
