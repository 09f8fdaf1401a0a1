//! The example files DESIGN.md names are valid, document every key they hold with a comment,
//! and cover the whole schema (a key added to the schema but not to the example fails here).

use std::collections::BTreeSet;

use omo_device_config::gateway_config::GatewayConfig;
use omo_device_config::site::Site;

const GATEWAY: &str = include_str!("../examples/gateway.toml");
const SITE: &str = include_str!("../examples/site.toml");

/// `key = …` lines, whether active or commented out (`# key = …`).
fn is_key_line(line: &str) -> Option<(&str, bool)> {
    let (active, body) = match line.strip_prefix("# ") {
        Some(rest) => (false, rest),
        None => (true, line),
    };
    let (key, _) = body.split_once(" = ")?;
    key.chars()
        .all(|c| c.is_ascii_lowercase() || c == '_')
        .then_some((key, active))
}

/// Every active key line follows a comment (its documentation).
fn assert_every_key_commented(name: &str, text: &str) {
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if let Some((key, true)) = is_key_line(line) {
            let doc = i > 0 && lines[i - 1].starts_with('#') && is_key_line(lines[i - 1]).is_none();
            assert!(doc, "{name}:{}: key {key} has no comment above it", i + 1);
        }
    }
}

/// The text with every commented-out key enabled.
fn uncomment_all(text: &str) -> String {
    text.lines()
        .map(|l| match is_key_line(l) {
            Some((_, false)) => &l[2..],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn keys_of(value: &toml::Value, out: &mut BTreeSet<String>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                out.insert(k.clone());
                keys_of(v, out);
            }
        }
        toml::Value::Array(a) => a.iter().for_each(|v| keys_of(v, out)),
        _ => {}
    }
}

fn documented_keys(text: &str) -> BTreeSet<String> {
    let mut keys: BTreeSet<String> = text
        .lines()
        .filter_map(is_key_line)
        .map(|(k, _)| k.to_owned())
        .collect();
    // Keys of inline tables and table headers count as written too.
    let parsed: toml::Value = toml::from_str(&uncomment_all(text)).unwrap();
    keys_of(&parsed, &mut keys);
    keys
}

fn schema_keys<T: serde::Serialize>(value: &T) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    keys_of(&toml::Value::try_from(value).unwrap(), &mut keys);
    keys
}

#[test]
fn gateway_example_is_valid_and_documented() {
    let config = GatewayConfig::from_toml(GATEWAY, |_| None).expect("example validates");
    assert_every_key_commented("gateway.toml", GATEWAY);
    let all = uncomment_all(GATEWAY);
    // Enabling every commented-out key adds no unknown key and no bad value; the only
    // problems are the ones a commented-out alternative is expected to cause.
    if let Err(problems) = GatewayConfig::from_toml(&all, |_| None) {
        for p in &problems {
            assert!(
                ["broker.ca_file", "scan.replay_file"].contains(&p.key.as_str()),
                "uncommented example: {p}"
            );
        }
    }
    let everything: GatewayConfig = toml::from_str(&all).expect("uncommented example parses");
    let missing: Vec<_> = schema_keys(&everything)
        .union(&schema_keys(&config))
        .filter(|k| !documented_keys(GATEWAY).contains(*k))
        .cloned()
        .collect();
    assert!(
        missing.is_empty(),
        "keys missing from gateway.toml: {missing:?}"
    );
}

#[test]
fn site_example_is_valid_and_documented() {
    let site = Site::parse(SITE, false).expect("example validates");
    assert_every_key_commented("site.toml", SITE);
    let all = uncomment_all(SITE);
    Site::parse(&all, false).expect("uncommented example is valid too");
    let missing: Vec<_> = schema_keys(&site)
        .into_iter()
        .filter(|k| !documented_keys(SITE).contains(k))
        .collect();
    assert!(
        missing.is_empty(),
        "keys missing from site.toml: {missing:?}"
    );
    // Every zone kind and both geofence shapes are shown.
    assert!(!site.beacon_zones.is_empty() && !site.gateway_zones.is_empty());
    assert!(!site.wifi_zones.is_empty());
    assert!(site.geofences.iter().any(|g| g.circle.is_some()));
    assert!(site.geofences.iter().any(|g| g.geometry.is_some()));
}

#[test]
fn site_example_round_trips_through_json() {
    let site = Site::parse(SITE, false).unwrap();
    let json = serde_json::to_string_pretty(&site).unwrap();
    assert_eq!(Site::parse(&json, true).unwrap(), site);
}

#[test]
fn example_gateway_and_site_fit_together() {
    let config = GatewayConfig::from_toml(GATEWAY, |_| None).unwrap();
    let site = Site::parse(SITE, false).unwrap();
    let entry = site
        .gateways
        .iter()
        .find(|g| g.id == config.identity.gateway)
        .expect("the example gateway is in the example site");
    assert_eq!(entry.store, config.identity.store);
    let hash: omo_device_config::broker_auth::PasswordHash = entry.password_hash.parse().unwrap();
    assert!(hash.verify(config.broker.password.as_deref().unwrap()));
    assert_eq!(
        Some(entry.signing_key.as_str()),
        config.broker.signing_key.as_deref()
    );
}
