//! The identity side of LINE's account link: a one-time nonce issued for a member, and its
//! use by LINE's `accountLink` event, which joins the LINE user to the member's customer
//! ([`super::join_line_user`]). The event's id is recorded by ingest in the same commit
//! ([`crate::ingest::account_link`]).

use omo_device_config::Timestamp;
use serde::{Deserialize, Serialize};

use super::{join_line_user, keys, IdentityError};
use crate::store::{Commit, Space, Store, StoreError};

/// How long a nonce may wait for LINE's `accountLink` event.
pub const NONCE_TTL_MS: i64 = 10 * 60_000;

/// A nonce waiting for its `accountLink` event.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    member_id: String,
    expires_ms: i64,
}

/// A new nonce for `member_id`, valid [`NONCE_TTL_MS`] from `now_ms`: the nonce, when it
/// expires (ms) and the commit that stores it.
pub fn new_link_nonce(member_id: &str, now_ms: i64) -> (String, i64, Commit) {
    let nonce = crate::secrets::new_token();
    let expires_ms = now_ms + NONCE_TTL_MS;
    let pending = Pending {
        member_id: member_id.to_owned(),
        expires_ms,
    };
    let mut c = Commit::new();
    c.expect(Space::Identity, keys::line_nonce(&nonce), None);
    c.put(
        Space::Identity,
        keys::line_nonce(&nonce),
        serde_json::to_vec(&pending).expect("nonces serialise"),
    );
    (nonce, expires_ms, c)
}

/// What using a nonce came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Linked {
    Joined,
    /// LINE reported the link failed (the nonce is spent).
    Failed,
    /// The nonce is unknown, used or expired: nothing changed.
    Refused(&'static str),
    /// This event was handled before (a redelivery).
    Again,
}

/// Uses `nonce` for LINE user `user` (`ok`: LINE says the link succeeded): the commit that
/// spends it and, when it is valid and `ok`, joins the user to its member, with what it came
/// to; `None` if the nonce is unknown or used.
pub fn use_link_nonce(
    store: &dyn Store,
    nonce: &str,
    (ok, user): (bool, &str),
    now: Timestamp,
) -> Result<Option<(Commit, Linked)>, IdentityError> {
    let key = keys::line_nonce(nonce);
    let Some(bytes) = store.get(Space::Identity, key.as_bytes())? else {
        return Ok(None);
    };
    let pending: Pending = serde_json::from_slice(&bytes)
        .map_err(|e| StoreError::Backend(format!("LINE link nonce: {e}")))?;
    let mut c = Commit::new();
    c.expect(Space::Identity, key.clone(), Some(bytes));
    c.delete(Space::Identity, key);
    let linked = if pending.expires_ms < now.millis() {
        Linked::Refused("expired nonce")
    } else if !ok {
        Linked::Failed
    } else {
        let (_, join) = join_line_user(store, &pending.member_id, user, now)?;
        c.extend(join);
        Linked::Joined
    };
    Ok(Some((c, linked)))
}
