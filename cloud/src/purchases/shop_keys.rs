//! The brand's e-commerce keys: the online shop sends its purchases with one
//! (`Bearer ek_….SECRET`). Only the SHA-256 of a key's secret is kept, in the meta space.

use super::keys::{shop_key, SHOP_KEYS};
use crate::store::{Commit, Space, Store, StoreError};

/// A new e-commerce key: its id, the key itself (`id.SECRET`, shown once) and the commit that
/// keeps it.
pub fn new_shop_key() -> (String, String, Commit) {
    let secret = crate::secrets::new_token();
    let hash = crate::secrets::sha256_hex(secret.as_bytes());
    let id = format!("ek_{}", &hash[..12]);
    let mut c = Commit::new();
    c.put(Space::Meta, shop_key(&id), hash);
    let key = format!("{id}.{secret}");
    (id, key, c)
}

/// The ids of the e-commerce keys.
pub fn shop_key_ids(store: &dyn Store) -> Result<Vec<String>, StoreError> {
    Ok(
        crate::store::barrier::scan_prefix(store, Space::Meta, SHOP_KEYS.as_bytes(), usize::MAX)?
            .into_iter()
            .map(|(k, _)| String::from_utf8_lossy(&k[SHOP_KEYS.len()..]).into_owned())
            .collect(),
    )
}

/// Whether `token` (`ek_….SECRET`) is an e-commerce key that is kept.
pub fn is_shop_key(store: &dyn Store, token: &str) -> Result<bool, StoreError> {
    let Some((id, secret)) = token.split_once('.') else {
        return Ok(false);
    };
    Ok(match store.get(Space::Meta, shop_key(id).as_bytes())? {
        Some(stored) => crate::secrets::token_matches(secret, &String::from_utf8_lossy(&stored)),
        None => false,
    })
}

/// The commit that revokes e-commerce key `id` (`None`: there is no such key).
pub fn revoke_shop_key(store: &dyn Store, id: &str) -> Result<Option<Commit>, StoreError> {
    let key = shop_key(id);
    let Some(stored) = store.get(Space::Meta, key.as_bytes())? else {
        return Ok(None);
    };
    let mut c = Commit::new();
    c.expect(Space::Meta, key.clone(), Some(stored));
    c.delete(Space::Meta, key);
    Ok(Some(c))
}
