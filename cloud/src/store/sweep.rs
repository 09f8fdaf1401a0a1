//! Walking a space in bounded batches, for the owners' data duties: retention's expiry
//! ([`crate::privacy::retention`]) and an erasure's forgetting ([`crate::privacy::finish_erasure`]).
//! The owners decide which rows go; this walks their keys and commits, each batch its own
//! commit, reporting what it did after each so the caller can count it and pause (retention's
//! commits take turns with ingest's).

use super::{scan_prefix_from, Commit, Space, Store, StoreError};

/// Rows read per page by [`each_row`] and [`delete_prefix`].
const PAGE: usize = 4096;

/// What one commit of a walk did: how many rows of each kind.
pub type Done<'a> = &'a [(&'static str, u64)];

/// A walk's limits and what it calls after each commit.
pub struct Sweeper<'a> {
    pub store: &'a dyn Store,
    /// Rows changed per commit at most.
    pub batch: usize,
    /// Rows read per call at most by the unordered walk ([`Sweeper::rolling`]).
    pub scan_per_sweep: usize,
    /// Called after every commit that changed something, with what it did by kind.
    pub after_commit: &'a mut dyn FnMut(Done),
}

/// Which rows a walk covers: the rows of `space` under `prefix`, counted as `kind`.
#[derive(Debug, Clone, Copy)]
pub struct Rows<'p> {
    pub kind: &'static str,
    pub space: Space,
    pub prefix: &'p str,
}

impl Sweeper<'_> {
    /// Commits `c` unless it is empty, then reports `done`.
    pub fn commit(&mut self, c: Commit, done: Done) -> Result<(), StoreError> {
        if !c.is_empty() {
            self.store.commit(c)?;
            (self.after_commit)(done);
        }
        Ok(())
    }

    /// Like [`Sweeper::commit`], but a conflict (a writer changed a row meanwhile) is not an
    /// error: answers whether it was committed, and the rows wait for a later walk.
    pub fn commit_unless_changed(&mut self, c: Commit, done: Done) -> Result<bool, StoreError> {
        match self.commit(c, done) {
            Ok(()) => Ok(true),
            Err(StoreError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes the keys `{prefix}{group}/{ms:016x}/{rest}` (a group is `group_parts`
    /// `/`-separated parts) whose time is before `cutoff`. Each group is in time order, so it
    /// is read up to the cutoff and then skipped. `with(rest, commit)` adds what goes with a
    /// key, or answers `false` to keep it. Answers how many keys went.
    pub fn time_ordered(
        &mut self,
        rows: Rows<'_>,
        group_parts: usize,
        cutoff: i64,
        mut with: impl FnMut(&str, &mut Commit) -> Result<bool, StoreError>,
    ) -> Result<u64, StoreError> {
        let Rows {
            kind,
            space,
            prefix,
        } = rows;
        let mut n = 0;
        let mut from = prefix.as_bytes().to_vec();
        loop {
            let page = scan_prefix_from(self.store, space, prefix.as_bytes(), &from, self.batch)?;
            let Some((last, _)) = page.last() else {
                return Ok(n);
            };
            let full = page.len() == self.batch;
            from = last.clone();
            from.push(0);
            let mut skipped = false;
            let before = n;
            let mut c = Commit::new();
            for (k, _) in &page {
                let text = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                let parts: Vec<&str> = text.splitn(group_parts + 2, '/').collect();
                let (Some(ms), Some(rest)) = (parts.get(group_parts), parts.get(group_parts + 1))
                else {
                    continue;
                };
                let Ok(at) = i64::from_str_radix(ms, 16) else {
                    continue;
                };
                if at >= cutoff && group_parts == 0 {
                    // One time order under the whole prefix: everything after is newer.
                    self.commit(c, &[(kind, n - before)])?;
                    return Ok(n);
                }
                if at >= cutoff {
                    // The rest of this group is newer: on to the next group.
                    from = format!("{prefix}{}/", parts[..group_parts].join("/")).into_bytes();
                    from.push(0xff);
                    skipped = true;
                    break;
                }
                if with(rest, &mut c)? {
                    c.delete(space, k.clone());
                    n += 1;
                }
            }
            self.commit(c, &[(kind, n - before)])?;
            if !full && !skipped {
                return Ok(n);
            }
        }
    }

    /// Reads up to `scan_per_sweep` rows from `cursor` (wrapping to the start at the end) and
    /// deletes, batch by batch, those `expired` picks; `expired` gives the extra keys of the
    /// same space to delete with a row. Answers how many rows went.
    pub fn rolling(
        &mut self,
        rows: Rows<'_>,
        cursor: &mut Vec<u8>,
        mut expired: impl FnMut(&[u8], &[u8]) -> Option<Vec<Vec<u8>>>,
    ) -> Result<u64, StoreError> {
        let Rows {
            kind,
            space,
            prefix,
        } = rows;
        let mut n = 0;
        self.pages(space, prefix, cursor, |sweeper, page| {
            let before = n;
            let mut c = Commit::new();
            for (k, v) in page {
                if let Some(extra) = expired(k, v) {
                    c.delete(space, k.clone());
                    for e in extra {
                        c.delete(space, e);
                    }
                    n += 1;
                }
            }
            sweeper.commit(c, &[(kind, n - before)])
        })?;
        Ok(n)
    }

    /// Calls `each` with the pages of up to `batch` rows of `space` under `prefix` from
    /// `cursor`, until `scan_per_sweep` rows were read or the rows end (then `cursor` goes
    /// back to the start).
    pub fn pages(
        &mut self,
        space: Space,
        prefix: &str,
        cursor: &mut Vec<u8>,
        mut each: impl FnMut(&mut Self, &[super::Entry]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let prefix = prefix.as_bytes();
        if !cursor.starts_with(prefix) {
            *cursor = prefix.to_vec();
        }
        let mut read = 0;
        while read < self.scan_per_sweep {
            let page = scan_prefix_from(self.store, space, prefix, cursor, self.batch)?;
            read += page.len().max(1);
            let Some((last, _)) = page.last() else {
                *cursor = prefix.to_vec();
                return Ok(());
            };
            *cursor = last.clone();
            cursor.push(0);
            each(self, &page)?;
            if page.len() < self.batch {
                *cursor = prefix.to_vec();
                return Ok(());
            }
        }
        Ok(())
    }
}

/// Calls `f` with every row of `space` under `prefix`, page by page.
pub fn each_row(
    store: &dyn Store,
    space: Space,
    prefix: &str,
    mut f: impl FnMut(&[u8], &[u8]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut from = prefix.as_bytes().to_vec();
    loop {
        let page = scan_prefix_from(store, space, prefix.as_bytes(), &from, PAGE)?;
        let Some((last, _)) = page.last() else {
            return Ok(());
        };
        from = last.clone();
        from.push(0);
        for (k, v) in &page {
            f(k, v)?;
        }
        if page.len() < PAGE {
            return Ok(());
        }
    }
}

/// Deletes every key of `space` under `prefix`, a page per commit; answers how many.
pub fn delete_prefix(store: &dyn Store, space: Space, prefix: &str) -> Result<usize, StoreError> {
    let mut n = 0;
    loop {
        let page = scan_prefix_from(store, space, prefix.as_bytes(), prefix.as_bytes(), PAGE)?;
        if page.is_empty() {
            return Ok(n);
        }
        let mut c = Commit::new();
        for (k, _) in page {
            c.delete(space, k);
            n += 1;
        }
        store.commit(c)?;
    }
}

/// Deletes the keys of `space` in `keys`, a page per commit.
pub fn delete_keys(store: &dyn Store, space: Space, keys: &[Vec<u8>]) -> Result<(), StoreError> {
    for page in keys.chunks(PAGE) {
        let mut c = Commit::new();
        for k in page {
            c.delete(space, k.clone());
        }
        store.commit(c)?;
    }
    Ok(())
}
