//! What a scenario looks like to the system: the site file the cloud imports (stores, gateways
//! with credentials, store-fixed beacons, a beacon, gateway and Wi-Fi zone per store, the
//! geofences) and the gateways' logins; and the files of a generated run (`omo-sim generate`):
//! one replay file per gateway, the app's reports, the LINE webhook events and the shoppers to
//! register, all in time order.

use std::fmt::Write as _;
use std::path::Path;

use omo_device_config::broker_auth::PasswordHash;
use omo_device_config::SigningKey;
use rand::Rng;
use serde_json::{json, Value};

use crate::scenario::Scenario;
use crate::synth::{self, Phone};

/// A gateway's login, as the demo hands it to the gateway's config.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayLogin {
    pub store: String,
    pub gateway: String,
    pub password: String,
    /// 64 hex digits.
    pub signing_key: String,
}

/// A new login for `gateway` of `store`: a random password and signing key from `rng`.
pub fn gateway_login(rng: &mut impl Rng, store: &str, gateway: &str) -> GatewayLogin {
    let password = synth::hex_of(rng, 24);
    let mut key = [0u8; 32];
    rng.fill(&mut key);
    GatewayLogin {
        store: store.to_owned(),
        gateway: gateway.to_owned(),
        password,
        signing_key: SigningKey::from_bytes(key).to_hex(),
    }
}

impl GatewayLogin {
    /// The gateway's `[[gateways]]` entry of a site file (the password only as its hash).
    pub fn site_entry(&self) -> String {
        format!(
            "[[gateways]]\nid = \"{}\"\nstore = \"{}\"\npassword_hash = \"{}\"\nsigning_key = \"{}\"\n\n",
            self.gateway,
            self.store,
            PasswordHash::new(&self.password),
            self.signing_key
        )
    }
}

/// The middle of a store's floor plan as (lat, lon): its site location and geofence centre.
fn centre(st: &crate::scenario::Store) -> (f64, f64) {
    let (north, east) = synth::metres_to_degrees(st.anchor.lat);
    (
        st.anchor.lat + st.size_m[1] / 2.0 * north,
        st.anchor.lon + st.size_m[0] / 2.0 * east,
    )
}

/// Where a point of a store's floor plan (metres east and north of its south-west corner) is,
/// as (lat, lon).
fn on_plan(st: &crate::scenario::Store, at: &crate::scenario::Xy) -> (f64, f64) {
    let (north, east) = synth::metres_to_degrees(st.anchor.lat);
    (st.anchor.lat + at[1] * north, st.anchor.lon + at[0] * east)
}

/// The site file (TOML) for the scenario and each gateway's login (seeded: the same run gets
/// the same credentials).
pub fn site(s: &Scenario) -> (String, Vec<GatewayLogin>) {
    let mut rng = synth::rng(s.run.seed, "credentials");
    let mut t = String::new();
    let mut logins = Vec::new();
    for st in &s.stores {
        let (lat, lon) = centre(st);
        let _ = writeln!(
            t,
            "[[stores]]\nid = \"{}\"\nname = {:?}\ntime_zone = {:?}\nlocation = {{ lat = {lat:.7}, lon = {lon:.7} }}\n",
            st.id, st.name, st.time_zone
        );
    }
    for st in &s.stores {
        for g in &st.gateways {
            let login = gateway_login(&mut rng, st.id.as_str(), g.id.as_str());
            let (lat, lon) = on_plan(st, &g.at);
            t.push_str(login.site_entry().trim_end());
            let _ = writeln!(t, "\nlocation = {{ lat = {lat:.7}, lon = {lon:.7} }}\n");
            logins.push(login);
        }
    }
    for st in &s.stores {
        for b in &st.beacons {
            let (lat, lon) = on_plan(st, &b.at);
            let _ = writeln!(
                t,
                "[[beacons]]\nid = \"{}\"\nstore = \"{}\"\nlocation = {{ lat = {lat:.7}, lon = {lon:.7} }}\n",
                b.id, st.id
            );
        }
        if !st.beacons.is_empty() {
            let ids: Vec<String> = st.beacons.iter().map(|b| format!("\"{}\"", b.id)).collect();
            let _ = writeln!(
                t,
                "[[beacon_zones]]\nid = \"{0}-beacons\"\nstore = \"{0}\"\nname = \"{1} (beacons)\"\nbeacons = [{2}]\n",
                st.id,
                st.name,
                ids.join(", ")
            );
        }
        let gws: Vec<String> = st
            .gateways
            .iter()
            .map(|g| format!("\"{}\"", g.id))
            .collect();
        let _ = writeln!(
            t,
            "[[gateway_zones]]\nid = \"{0}-floor\"\nstore = \"{0}\"\nname = \"{1} (floor)\"\ngateways = [{2}]\nmax_distance_m = 25.0\n",
            st.id,
            st.name,
            gws.join(", ")
        );
        if !st.wifi.is_empty() {
            let aps: Vec<String> = st.wifi.iter().map(|w| format!("\"{}\"", w.bssid)).collect();
            let _ = writeln!(
                t,
                "[[wifi_zones]]\nid = \"{0}-wifi\"\nstore = \"{0}\"\nname = \"{1} (Wi-Fi)\"\nbssids = [{2}]\nmin_matches = 1\nmin_rssi_dbm = -85.0\n",
                st.id,
                st.name,
                aps.join(", ")
            );
        }
    }
    for g in &s.geofences {
        let Some(st) = s.stores.iter().find(|st| st.id == g.store) else {
            continue;
        };
        let (lat, lon) = centre(st);
        let _ = writeln!(
            t,
            "[[geofences]]\nid = \"{}\"\nstore = \"{}\"\ncircle = {{ lat = {lat:.7}, lon = {lon:.7}, radius_m = {} }}\n",
            g.id, g.store, g.radius_m
        );
    }
    (t, logins)
}

/// A shopper as the run registers them: the customer record and, with the app, the install.
pub fn shopper_record(sh: &synth::Shopper) -> Value {
    json!({
        "member_id": sh.member_id,
        "phone": match sh.phone { Phone::Ios => "ios", Phone::Android => "android", Phone::Other => "other" },
        "app": sh.app,
        "line_user": sh.line_user,
        "consent": {"line": sh.consent_line, "push": sh.consent_push, "location": true},
        "push_token": sh.push_token,
        "eid": sh.eid_key.map(|k| json!({"identity_key": hex::encode(k), "exponent": synth::EID_EXPONENT})),
    })
}

/// How many lines of each kind a generated run wrote.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Generated {
    pub visits: usize,
    pub adverts: usize,
    pub app_reports: usize,
    pub line_events: usize,
}

/// Writes a run of the scenario's first visits (no returns: those follow the offers a live run
/// delivers) into `dir`: `site.toml`, `gateways.json` (logins), `shoppers.jsonl`,
/// `replay/{gateway}.jsonl`, `app-reports.jsonl` (`{"member_id", "report"}`) and
/// `line-events.jsonl`, each in time order.
pub fn generate(s: &Scenario, dir: &Path) -> anyhow::Result<Generated> {
    std::fs::create_dir_all(dir.join("replay"))?;
    let (site, logins) = site(s);
    std::fs::write(dir.join("site.toml"), site)?;
    let logins: Vec<Value> = logins
        .iter()
        .map(|l| json!({"store": l.store, "gateway": l.gateway, "password": l.password, "signing_key": l.signing_key}))
        .collect();
    std::fs::write(
        dir.join("gateways.json"),
        serde_json::to_string_pretty(&logins)?,
    )?;
    let shoppers = synth::shoppers(s);
    let mut out = String::new();
    for sh in &shoppers {
        out.push_str(&shopper_record(sh).to_string());
        out.push('\n');
    }
    std::fs::write(dir.join("shoppers.jsonl"), out)?;
    let visits = synth::arrivals(s, &shoppers);
    let mut radio = synth::indoor_radio(s.run.seed, "radio");
    let mut rng = synth::rng(s.run.seed, "sensing");
    let mut heard = Vec::new();
    let mut reports: Vec<(i64, String)> = Vec::new();
    let mut events: Vec<(i64, String)> = Vec::new();
    for v in &visits {
        let sh = &shoppers[v.shopper];
        heard.extend(synth::heard(s, sh, v, 1000, &mut radio, &mut rng));
        for r in synth::app_reports(s, sh, v, 60_000, &mut radio, &mut rng) {
            let at = r["ts"]
                .as_str()
                .and_then(|t| t.parse::<omo_device_config::Timestamp>().ok())
                .map_or(0, |t| t.millis());
            reports.push((
                at,
                json!({"member_id": sh.member_id, "report": r}).to_string(),
            ));
        }
        for e in synth::line_beacon_events(s, sh, v, &mut radio) {
            events.push((e["timestamp"].as_i64().unwrap_or(0), e.to_string()));
        }
    }
    heard.sort_by_key(|h| h.ts_ms);
    reports.sort();
    events.sort();
    let mut per_gateway: std::collections::BTreeMap<String, String> = s
        .stores
        .iter()
        .flat_map(|st| {
            st.gateways
                .iter()
                .map(|g| (g.id.to_string(), String::new()))
        })
        .collect();
    for h in &heard {
        if let Some(f) = per_gateway.get_mut(&h.gateway) {
            f.push_str(&h.replay_line());
            f.push('\n');
        }
    }
    for (g, text) in &per_gateway {
        std::fs::write(dir.join("replay").join(format!("{g}.jsonl")), text)?;
    }
    let lines = |v: &[(i64, String)]| v.iter().map(|(_, l)| format!("{l}\n")).collect::<String>();
    std::fs::write(dir.join("app-reports.jsonl"), lines(&reports))?;
    std::fs::write(dir.join("line-events.jsonl"), lines(&events))?;
    Ok(Generated {
        visits: visits.len(),
        adverts: heard.len(),
        app_reports: reports.len(),
        line_events: events.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::SATURDAY;

    #[test]
    fn the_site_is_one_the_cloud_imports() {
        let s = Scenario::parse(SATURDAY).unwrap();
        let (text, logins) = site(&s);
        let site = omo_device_config::site::Site::parse(&text, false)
            .map_err(|p| format!("{p:?}\n{text}"))
            .unwrap();
        assert_eq!(site.stores.len(), 2);
        assert_eq!(site.gateways.len(), 4);
        assert_eq!(logins.len(), 4);
        assert!(site.gateways.iter().zip(&logins).all(|(g, l)| {
            g.password_hash
                .parse::<PasswordHash>()
                .is_ok_and(|h| h.verify(&l.password))
        }));
        assert_eq!(site.geofences.len(), 2);
        // The cloud's registry takes it as a whole (zones, references, geometry).
        omo_cloud::registry::replace_site(&omo_cloud::registry::Registry::default(), &site)
            .unwrap();
        // Same seed, same credentials.
        assert_eq!(site_logins(&s), logins);
    }

    fn site_logins(s: &Scenario) -> Vec<GatewayLogin> {
        site(s).1
    }

    #[test]
    fn a_generated_run_has_every_file_in_time_order() {
        let mut s = Scenario::parse(SATURDAY).unwrap();
        s.run.hours = 1.0;
        let dir = tempfile::tempdir().unwrap();
        let g = generate(&s, dir.path()).unwrap();
        assert!(
            g.visits > 20 && g.adverts > 100 && g.app_reports > 10 && g.line_events > 5,
            "{g:?}"
        );
        let replay = std::fs::read_to_string(dir.path().join("replay/shibuya-g1.jsonl")).unwrap();
        let mut last = 0;
        for (i, line) in replay.lines().enumerate() {
            let r = omo_gateway::scan::replay::parse_line(line, i as u64 + 1).unwrap();
            assert!(r.file_ts_ms >= last);
            last = r.file_ts_ms;
        }
        let shoppers = std::fs::read_to_string(dir.path().join("shoppers.jsonl")).unwrap();
        assert_eq!(shoppers.lines().count(), 4000);
    }
}
