//! LINE's `accountLink` webhook event, taken once: one commit records the event id and uses
//! the nonce it carries ([`crate::identity::use_link_nonce`]).

use omo_device_config::Timestamp;
use serde_json::json;

use super::keys::{line_event, processed_id_value};
use crate::identity::{self, IdentityError, Linked};
use crate::store::{Space, Store};

/// Handles an `accountLink` event (`event_id`, LINE `user`; `ok` and the `nonce`): one commit
/// consumes the nonce, records the event id and, when LINE says ok, joins the LINE user to the
/// nonce's member. A conflict means another instance took it meanwhile: try again.
pub fn account_link(
    store: &dyn Store,
    (event_id, user): (&str, &str),
    (ok, nonce): (bool, &str),
    now: Timestamp,
) -> Result<Linked, IdentityError> {
    let dedup = line_event(event_id);
    if store.get(Space::Dedup, &dedup)?.is_some() {
        return Ok(Linked::Again);
    }
    let Some((mut c, linked)) = identity::use_link_nonce(store, nonce, (ok, user), now)? else {
        return Ok(Linked::Refused("unknown or used nonce"));
    };
    c.expect(Space::Dedup, dedup.clone(), None);
    c.put(
        Space::Dedup,
        dedup,
        processed_id_value(json!({}), now.millis()),
    );
    store.commit(c)?;
    Ok(linked)
}
