//! A brand app's installs: registered for a member (with the app's consent), authenticated by
//! their token, revoked, and their push token dropped when FCM says it is dead.

use super::*;

/// Forgets an install's push token that FCM answered `UNREGISTERED` for (the app was removed
/// or the token rotated), unless the install has registered another token since.
pub fn invalidate_push_token(
    store: &dyn Store,
    install_id: &str,
    token: &str,
) -> Result<Commit, StoreError> {
    let mut c = Commit::new();
    if let Some((mut install, bytes)) = read::<Install>(store, &keys::install(install_id))? {
        if install.push_token.as_deref() == Some(token) {
            install.push_token = None;
            c.expect(Space::Identity, keys::install(install_id), Some(bytes));
            c.put(Space::Identity, keys::install(install_id), json(&install));
        }
    }
    Ok(c)
}

/// What an app sends to register an install.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallRequest {
    pub platform: Platform,
    #[serde(default)]
    pub push_token: Option<String>,
    #[serde(default)]
    pub member_id: Option<String>,
    /// Proof of `member_id` from the brand's backend (checked by the HTTP layer).
    #[serde(default)]
    pub member_sig: Option<String>,
    /// Android: the EID identity key the app advertises with.
    #[serde(default)]
    pub eid: Option<EidKey>,
    /// What the customer agreed to in the app (recorded with source `app`).
    #[serde(default)]
    pub consent: Option<AppConsent>,
}

/// Consents given in the app, with the version of the text shown.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConsent {
    #[serde(default)]
    pub push: Option<bool>,
    #[serde(default)]
    pub location: Option<bool>,
    pub text_version: String,
}

/// A new install: its record, its secret token (shown once), and the commit that stores it
/// (creating the customer, or joining the member's existing one).
pub fn register_install(
    store: &dyn Store,
    req: &InstallRequest,
    now: Timestamp,
) -> Result<(Install, String, Commit), IdentityError> {
    if let Some(t) = &req.push_token {
        if t.is_empty() || t.len() > 4096 {
            return Err(IdentityError::Invalid {
                field: "push_token".into(),
                message: "must be 1..=4096 characters".into(),
            });
        }
    }
    let existing = match &req.member_id {
        Some(m) => lookup(store, &keys::member(m))?,
        None => None,
    };
    let (old, mut customer) = match existing {
        Some(id) => {
            let (c, bytes) = customer_for_update(store, &id)?;
            (Some((c.clone(), bytes)), c)
        }
        None => {
            let mut c = new_customer(now);
            c.member_id = req.member_id.clone();
            (None, c)
        }
    };
    let token = secrets::new_token();
    let install = Install {
        id: random_id("i_"),
        customer: customer.id.clone(),
        platform: req.platform,
        push_token: req.push_token.clone(),
        token_sha256: secrets::sha256_hex(token.as_bytes()),
        created: now,
        revoked: None,
    };
    customer.installs.push(install.id.clone());
    if let Some(given) = &req.consent {
        let mut wanted = customer.consent;
        wanted.push = given.push.unwrap_or(wanted.push);
        wanted.location = given.location.unwrap_or(wanted.location);
        customer.set_consent(wanted, ConsentSource::App, Some(&given.text_version), now);
    }
    if let Some(k) = &req.eid {
        if !customer.eid_keys.contains(k) {
            customer.eid_keys.push(k.clone());
        }
    }
    let mut commit = save_customer(
        store,
        old.as_ref().map(|(c, b)| (c, b.as_slice())),
        &customer,
    )
    .map_err(|e| match e {
        IdentityError::Invalid { field, message } if field.starts_with("eid_keys") => {
            IdentityError::Invalid {
                field: field
                    .replacen("eid_keys[0]", "eid", 1)
                    .replace("eid_keys", "eid"),
                message,
            }
        }
        other => other,
    })?;
    commit.expect(Space::Identity, keys::install(&install.id), None);
    commit.put(Space::Identity, keys::install(&install.id), json(&install));
    let bearer = format!("{}.{token}", install.id);
    Ok((install, bearer, commit))
}

/// The install a bearer token (`{install id}.{secret}`) belongs to, if the token is right.
pub fn authenticate_install(
    store: &dyn Store,
    bearer: &str,
) -> Result<Option<Install>, StoreError> {
    let Some((id, secret)) = bearer.split_once('.') else {
        return Ok(None);
    };
    if !id.starts_with("i_") || id.len() > 64 {
        return Ok(None);
    }
    Ok(install(store, id)?
        .filter(|i| i.revoked.is_none() && secrets::token_matches(secret, &i.token_sha256)))
}

/// Revokes an install (a lost or compromised phone): its token stops authenticating and its
/// push token is forgotten. The commit that does it, or `NotFound`; revoking twice keeps the
/// first time.
pub fn revoke_install(
    store: &dyn Store,
    install_id: &str,
    now: Timestamp,
) -> Result<(Install, Commit), IdentityError> {
    let (mut install, bytes) = read::<Install>(store, &keys::install(install_id))?
        .ok_or_else(|| IdentityError::NotFound(install_id.to_owned()))?;
    let mut c = Commit::new();
    if install.revoked.is_none() {
        install.revoked = Some(now);
        install.push_token = None;
        c.expect(Space::Identity, keys::install(install_id), Some(bytes));
        c.put(Space::Identity, keys::install(install_id), json(&install));
    }
    Ok((install, c))
}
