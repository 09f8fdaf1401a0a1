//! Provisioning: everything a new gateway needs, generated together so the pieces match —
//! its `gateway.toml` with a random password and signing key, the broker's password line and
//! ACL block for it, and the cloud registry entry (same password hash, the signing key); and
//! the cloud's own broker credentials and ACL for an external broker.

use crate::broker_auth::{cloud_acl, gateway_acl, generate_password, password_line, PasswordHash};
use crate::envelope::SigningKey;
use crate::ids::{GatewayId, StoreId};

/// What `omo-config provision` produces for one gateway.
#[derive(Debug, Clone)]
pub struct ProvisionedGateway {
    /// The ready `gateway.toml` (holds the password and signing key: keep it 0600).
    pub config_toml: String,
    /// `gateway:$7$…` for Mosquitto's password file.
    pub password_line: String,
    /// The Mosquitto ACL block confining the gateway to its own topics.
    pub acl: String,
    /// A `[[gateways]]` block for the site file the cloud imports.
    pub registry_entry: String,
}

/// Options for [`provision_gateway`].
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    pub store: StoreId,
    pub gateway: GatewayId,
    pub broker_url: String,
    pub data_dir: String,
}

/// Generates fresh credentials and every file for one gateway.
pub fn provision_gateway(opts: &GatewayOptions) -> ProvisionedGateway {
    let password = generate_password();
    let hash = PasswordHash::new(&password);
    let key = SigningKey::generate();
    let GatewayOptions {
        store,
        gateway,
        broker_url,
        data_dir,
    } = opts;
    let config_toml = format!(
        r#"# omo gateway {gateway} of store {store}, written by `omo-config provision`.
# Every key is described in device-config/examples/gateway.toml. This file holds secrets:
# keep it readable by the gateway's user only.

[identity]
store = "{store}"
gateway = "{gateway}"

[broker]
url = {broker_url}
# Also settable as OMO_GATEWAY_PASSWORD and OMO_GATEWAY_SIGNING_KEY.
password = "{password}"
signing_key = "{key}"

[scan]
source = "bluez"

[data]
dir = {data_dir}
"#,
        broker_url = toml_string(broker_url),
        data_dir = toml_string(data_dir),
        key = key.to_hex(),
    );
    let registry_entry = format!(
        "[[gateways]]\nid = \"{gateway}\"\nstore = \"{store}\"\nenabled = true\npassword_hash = \"{hash}\"\nsigning_key = \"{}\"\n",
        key.to_hex()
    );
    ProvisionedGateway {
        config_toml,
        password_line: password_line(gateway.as_str(), &hash),
        acl: gateway_acl(store, gateway),
        registry_entry,
    }
}

/// The cloud's own credentials for an external broker.
#[derive(Debug, Clone)]
pub struct ProvisionedCloud {
    pub username: String,
    pub password: String,
    pub password_line: String,
    pub acl: String,
}

/// Generates the cloud's broker password, its password line and its ACL block.
pub fn provision_cloud(username: &str) -> ProvisionedCloud {
    let password = generate_password();
    let hash = PasswordHash::new(&password);
    ProvisionedCloud {
        username: username.to_owned(),
        password_line: password_line(username, &hash),
        acl: cloud_acl(username),
        password,
    }
}

/// A TOML basic string with the characters TOML requires escaped.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway_config::GatewayConfig;
    use crate::site::Site;

    #[test]
    fn provisioned_files_fit_together() {
        let p = provision_gateway(&GatewayOptions {
            store: StoreId::new("s1").unwrap(),
            gateway: GatewayId::new("g1").unwrap(),
            broker_url: "mqtts://broker.example:8883".into(),
            data_dir: "/var/lib/omo \"gw\"".into(),
        });
        let config = GatewayConfig::from_toml(&p.config_toml, |_| None).unwrap();
        assert_eq!(config.data.dir.to_str(), Some("/var/lib/omo \"gw\""));
        let site = Site::parse(
            &format!(
                "[[stores]]\nid = \"s1\"\nname = \"S\"\ntime_zone = \"Asia/Tokyo\"\nlocation = {{ lat = 35.0, lon = 139.0 }}\n{}",
                p.registry_entry
            ),
            false,
        )
        .unwrap();
        let entry = &site.gateways[0];
        let hash: PasswordHash = entry.password_hash.parse().unwrap();
        assert!(hash.verify(config.broker.password.as_deref().unwrap()));
        assert_eq!(p.password_line, format!("g1:{}", entry.password_hash));
        assert_eq!(config.signing_key().unwrap().to_hex(), entry.signing_key);
        assert!(p.acl.starts_with("user g1\n"));
    }

    #[test]
    fn cloud_credentials_verify() {
        let c = provision_cloud("omo-cloud");
        let (user, hash) = c.password_line.split_once(':').unwrap();
        assert_eq!(user, "omo-cloud");
        assert!(hash.parse::<PasswordHash>().unwrap().verify(&c.password));
    }
}
