//! What identity forgets beyond an erasure's first step ([`super::begin_erasure`]): LINE
//! account-link nonces past their expiry (retention), and the `erasing/` record once the
//! erasure's other steps are done.

use super::keys;
use crate::store::sweep::{Rows, Sweeper};
use crate::store::{Commit, Space, Store, StoreError};

/// Deletes the LINE account-link nonces that expired before `now_ms`, never used, walking on
/// from `cursor`; answers how many went.
pub fn expire_line_nonces(
    sw: &mut Sweeper,
    cursor: &mut Vec<u8>,
    now_ms: i64,
) -> Result<u64, StoreError> {
    let rows = Rows {
        kind: "line_nonces",
        space: Space::Identity,
        prefix: keys::LINE_NONCES,
    };
    sw.rolling(rows, cursor, |_, v| {
        let expires = serde_json::from_slice::<serde_json::Value>(v)
            .ok()?
            .get("expires_ms")?
            .as_i64()?;
        (expires < now_ms).then(Vec::new)
    })
}

/// Ends the erasure of customer `id`: its `erasing/` record goes, the last thing an erasure
/// removes.
pub fn end_erasure(store: &dyn Store, id: &str) -> Result<(), StoreError> {
    let mut c = Commit::new();
    c.delete(Space::Identity, keys::erasing(id));
    store.commit(c)
}
