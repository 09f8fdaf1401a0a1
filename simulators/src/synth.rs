//! Store visits synthesised from a scenario, and what the world senses of them (seeded: the
//! same scenario and seed give the same run, byte for byte).
//!
//! - [`shoppers`]: each persona's population with its phone (iOS, Android, other), the brand
//!   app, a LINE link, consent per channel, a member id, an Eddystone-EID identity key
//!   (Android app) and a push token (app).
//! - [`arrivals`]: a Poisson stream of arrivals per persona and store over the run's window,
//!   each a [`Visit`] walking the persona's path — a random spot in each area, a normally
//!   distributed dwell there.
//! - Physics, per visit: the EID adverts an Android phone sends every interval as each gateway
//!   hears them (log-distance path loss, shadowing, loss: [`crate::radio`]) as replay-file
//!   lines; the app's location reports (the fixed beacons it senses, the Wi-Fi APs in range, a
//!   GPS fix 5–30 m accurate outdoors and worse indoors); the LINE app's `beacon` webhook event
//!   when a LINE-linked phone comes in range of a store's LINE Beacon.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::radio::{Radio, RadioModel};
use crate::scenario::{Scenario, Xy};
use omo_device_config::BeaconId;

/// A shopper's phone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phone {
    Ios,
    Android,
    /// Reaches the system only through LINE.
    Other,
}

/// One shopper of a persona.
#[derive(Debug, Clone, PartialEq)]
pub struct Shopper {
    pub persona: usize,
    pub phone: Phone,
    /// The brand app is installed (iOS and Android only).
    pub app: bool,
    /// Linked to the brand's LINE account: the LINE user id.
    pub line_user: Option<String>,
    pub consent_line: bool,
    pub consent_push: bool,
    pub member_id: String,
    /// Android app: the Eddystone-EID identity key it advertises with.
    pub eid_key: Option<[u8; 16]>,
    pub push_token: Option<String>,
    /// The BLE address its adverts come from (random, as phones use).
    pub ble_addr: [u8; 6],
}

/// The EID rotation exponent the simulated app uses (a new EID every 2^10 s).
pub const EID_EXPONENT: u8 = 10;
/// Measured power at 1 m of a phone's advert, dBm.
pub const PHONE_POWER_DBM: f64 = -59.0;

fn rng_for(seed: u64, what: &str) -> StdRng {
    let mut h: u64 = seed ^ 0x9e37_79b9_7f4a_7c15;
    for b in what.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    StdRng::seed_from_u64(h)
}

/// `bytes` random bytes from `rng` as lower-case hex (secrets, passwords, ids of a run).
pub fn hex_of(rng: &mut impl Rng, bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}

/// Every persona's shoppers, in persona order.
pub fn shoppers(s: &Scenario) -> Vec<Shopper> {
    let mut rng = rng_for(s.run.seed, "shoppers");
    let mut out = Vec::new();
    for (p, persona) in s.personas.iter().enumerate() {
        for _ in 0..persona.population {
            let x: f64 = rng.random();
            let phone = if x < persona.platforms.ios {
                Phone::Ios
            } else if x < persona.platforms.ios + persona.platforms.android {
                Phone::Android
            } else {
                Phone::Other
            };
            let app = phone != Phone::Other && rng.random_bool(persona.app_share);
            let linked = rng.random_bool(persona.line_share);
            let consent_line = linked && rng.random_bool(persona.consent.line);
            let consent_push = app && rng.random_bool(persona.consent.push);
            let mut eid_key = [0u8; 16];
            rng.fill(&mut eid_key);
            let mut ble_addr = [0u8; 6];
            rng.fill(&mut ble_addr);
            // A random static address: the two top bits set.
            ble_addr[0] |= 0xc0;
            let member = hex_of(&mut rng, 6);
            let line = hex_of(&mut rng, 16);
            let token = hex_of(&mut rng, 20);
            out.push(Shopper {
                persona: p,
                phone,
                app,
                line_user: linked.then(|| format!("U{line}")),
                consent_line,
                consent_push,
                member_id: format!("m-{member}"),
                eid_key: (app && phone == Phone::Android).then_some(eid_key),
                push_token: app.then(|| format!("fcm-{token}")),
                ble_addr,
            });
        }
    }
    out
}

/// Where a shopper stands for a while.
#[derive(Debug, Clone, PartialEq)]
pub struct Leg {
    pub area: String,
    pub from_ms: i64,
    pub to_ms: i64,
    pub at: Xy,
}

/// One shopper's trip to one store.
#[derive(Debug, Clone, PartialEq)]
pub struct Visit {
    pub shopper: usize,
    pub store: usize,
    pub legs: Vec<Leg>,
}

impl Visit {
    pub fn start_ms(&self) -> i64 {
        self.legs.first().map_or(0, |l| l.from_ms)
    }

    pub fn end_ms(&self) -> i64 {
        self.legs.last().map_or(0, |l| l.to_ms)
    }

    /// Where the shopper is at `t_ms`, if inside.
    pub fn position_at(&self, t_ms: i64) -> Option<Xy> {
        self.legs
            .iter()
            .find(|l| l.from_ms <= t_ms && t_ms < l.to_ms)
            .map(|l| l.at)
    }
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A visit of `shopper` to store `store` starting at `start_ms`: the persona's path, a random
/// spot in each area, a normal dwell there (at least 30 s).
pub fn plan_visit(
    s: &Scenario,
    (shopper, persona): (usize, usize),
    store: usize,
    start_ms: i64,
    rng: &mut StdRng,
) -> Visit {
    let p = &s.personas[persona];
    let st = &s.stores[store];
    let mut t = start_ms;
    let mut legs = Vec::new();
    for area in &p.path {
        let Some(a) = st.areas.iter().find(|a| &a.id == area) else {
            continue;
        };
        let [x0, y0, x1, y1] = a.rect;
        let at = [rng.random_range(x0..=x1), rng.random_range(y0..=y1)];
        let minutes = (p.dwell.mean + p.dwell.sd * normal(rng)).clamp(0.5, p.dwell.mean * 4.0);
        let to = t + (minutes * 60_000.0) as i64;
        legs.push(Leg {
            area: area.clone(),
            from_ms: t,
            to_ms: to,
            at,
        });
        t = to;
    }
    Visit {
        shopper,
        store,
        legs,
    }
}

/// The run's window, Unix ms.
pub fn window(s: &Scenario) -> (i64, i64) {
    let start = s.run.start.timestamp_millis();
    (start, start + (s.run.hours * 3_600_000.0) as i64)
}

/// Every arrival of the run's window, by start time: per persona and store a Poisson stream at
/// the persona's rate, each arrival one of the persona's shoppers at random.
pub fn arrivals(s: &Scenario, shoppers: &[Shopper]) -> Vec<Visit> {
    let (start, end) = window(s);
    arrivals_in(s, shoppers, (start, end), false)
}

/// Arrivals in `[start, end)`; with `first_only`, each shopper arrives at most once (a
/// persona's stream stops when every shopper has come).
pub fn arrivals_in(
    s: &Scenario,
    shoppers: &[Shopper],
    (start, end): (i64, i64),
    first_only: bool,
) -> Vec<Visit> {
    let mut rng = rng_for(s.run.seed, "arrivals");
    let mut out = Vec::new();
    for (p, persona) in s.personas.iter().enumerate() {
        let mut members: Vec<usize> = (0..shoppers.len())
            .filter(|i| shoppers[*i].persona == p)
            .collect();
        if members.is_empty() {
            continue;
        }
        for store_id in &persona.stores {
            let Some(store) = s.stores.iter().position(|st| &st.id == store_id) else {
                continue;
            };
            let mean_gap_ms = 3_600_000.0 / persona.arrivals_per_hour;
            let mut t = start as f64;
            loop {
                let u: f64 = rng.random_range(f64::EPSILON..1.0);
                t += -u.ln() * mean_gap_ms;
                if t >= end as f64 || members.is_empty() {
                    break;
                }
                let pick = rng.random_range(0..members.len());
                let who = if first_only {
                    members.swap_remove(pick)
                } else {
                    members[pick]
                };
                out.push(plan_visit(s, (who, p), store, t as i64, &mut rng));
            }
        }
    }
    out.sort_by_key(|v| (v.start_ms(), v.shopper));
    out
}

fn distance(a: Xy, b: Xy) -> f64 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt()
}

/// One advert as one gateway heard it: a line of the gateway's replay file.
#[derive(Debug, Clone, PartialEq)]
pub struct Heard {
    pub gateway: String,
    pub ts_ms: i64,
    pub addr: [u8; 6],
    pub rssi: i16,
    pub adv: Vec<u8>,
}

impl Heard {
    /// The replay source's JSON line.
    pub fn replay_line(&self) -> String {
        let addr = self
            .addr
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        json!({
            "ts": ts_text(self.ts_ms),
            "addr": addr,
            "rssi": self.rssi,
            "adv": hex::encode(&self.adv),
        })
        .to_string()
    }
}

/// A Unix-ms time as RFC 3339 with milliseconds (what the payloads carry).
pub fn ts_text(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The EID advert an Android app sends at Unix time `unix_s`.
pub fn eid_advert(key: &[u8; 16], unix_s: i64) -> Vec<u8> {
    use omo_gateway::frames::{encode, Eddystone, EddystoneEid, Frame};
    let time = u32::try_from(unix_s.max(0)).unwrap_or(u32::MAX);
    let eid = omo_device_config::eid::eid(key, EID_EXPONENT, time);
    // Eddystone carries the power at 0 m: 41 dB above the power at 1 m.
    let tx_power = (PHONE_POWER_DBM + 41.0) as i8;
    encode(&[Frame::Eddystone(Eddystone::Eid(EddystoneEid {
        tx_power,
        eid,
    }))])
}

/// What the store's gateways hear of `visit` (an Android phone with the app advertises its EID
/// every `interval_ms`, with a little jitter); nothing for other phones.
pub fn heard(
    s: &Scenario,
    shopper: &Shopper,
    visit: &Visit,
    interval_ms: i64,
    radio: &mut Radio,
    rng: &mut StdRng,
) -> Vec<Heard> {
    let Some(key) = shopper.eid_key else {
        return Vec::new();
    };
    let store = &s.stores[visit.store];
    let mut out = Vec::new();
    let mut t = visit.start_ms() + rng.random_range(0..interval_ms.max(1));
    while t < visit.end_ms() {
        if let Some(at) = visit.position_at(t) {
            let adv = eid_advert(&key, t.div_euclid(1000));
            for g in &store.gateways {
                if let Some(rssi) = radio.receive(PHONE_POWER_DBM, distance(at, g.at)) {
                    out.push(Heard {
                        gateway: g.id.to_string(),
                        ts_ms: t,
                        addr: shopper.ble_addr,
                        rssi,
                        adv: adv.clone(),
                    });
                }
            }
        }
        t += interval_ms + rng.random_range(0..=interval_ms / 10);
    }
    out
}

/// Metres to degrees near `lat` (north, east).
pub fn metres_to_degrees(lat: f64) -> (f64, f64) {
    let north = 1.0 / 111_320.0;
    let east = 1.0 / (111_320.0 * lat.to_radians().cos().max(0.01));
    (north, east)
}

/// Walking pace outdoors, metres per second.
const WALK_M_PER_S: f64 = 1.2;
/// How long before a visit the app reports the shopper's approach.
const APPROACH_MS: i64 = 150_000;
/// How long after a visit the app reports the shopper walking away: long enough to leave a
/// store's block-sized geofence (a few hundred metres), so its fixes end the visit.
const DEPART_MS: i64 = 300_000;

/// A GPS fix near `at` (metres east and north of the store's anchor) whose error matches its
/// accuracy radius (within it about two times in three).
fn gps_fix(store: &crate::scenario::Store, at: Xy, accuracy: f64, rng: &mut StdRng) -> Value {
    let (north, east) = metres_to_degrees(store.anchor.lat);
    let (dx, dy) = (normal(rng) * accuracy / 1.5, normal(rng) * accuracy / 1.5);
    json!({
        "lat": store.anchor.lat + (at[1] + dy) * north,
        "lon": store.anchor.lon + (at[0] + dx) * east,
        "accuracy_m": (accuracy * 10.0).round() / 10.0,
    })
}

/// The app's location reports around `visit`, one every `interval_ms`. Outdoors on the way
/// in (the last 2.5 minutes, walking straight at the store from a random direction): a GPS fix
/// of 5–30 m accuracy. Inside: the fixed beacons it senses (not LINE Beacons: only the LINE app
/// reads those), the Wi-Fi APs it sees, and a GPS fix of 20–60 m. Outdoors on the way out
/// (5 minutes, walking away): a fix of 5–30 m and a Wi-Fi scan of the street.
pub fn app_reports(
    s: &Scenario,
    shopper: &Shopper,
    visit: &Visit,
    interval_ms: i64,
    radio: &mut Radio,
    rng: &mut StdRng,
) -> Vec<Value> {
    if !shopper.app {
        return Vec::new();
    }
    let store = &s.stores[visit.store];
    let mut out: Vec<Value> = Vec::new();
    let key = format!("{}-{}", shopper.member_id, visit.start_ms());
    let centre = [store.size_m[0] / 2.0, store.size_m[1] / 2.0];
    let edge = centre[0].hypot(centre[1]);
    let bearing: f64 = rng.random_range(0.0..std::f64::consts::TAU);
    let mut t = visit.start_ms() - APPROACH_MS + rng.random_range(0..interval_ms.max(1));
    while t < visit.start_ms() {
        let at = outdoors(centre, edge, bearing, visit.start_ms() - t);
        let accuracy: f64 = rng.random_range(5.0..=30.0);
        push_report(&mut out, &key, t, gps_fix(store, at, accuracy, rng));
        t += interval_ms;
    }
    while t < visit.end_ms() {
        let Some(at) = visit.position_at(t) else {
            break;
        };
        let beacons: Vec<Value> = store
            .beacons
            .iter()
            .filter(|b| !matches!(b.id, BeaconId::Line { .. }))
            .filter_map(|b| {
                let rssi = radio.receive(b.power_dbm, distance(at, b.at))?;
                Some(json!({"id": b.id.to_string(), "rssi": rssi}))
            })
            .collect();
        let wifi = store_aps(store, at, radio);
        let accuracy: f64 = rng.random_range(20.0..=60.0);
        let r = push_report(&mut out, &key, t, gps_fix(store, at, accuracy, rng));
        r["wifi"] = json!(wifi);
        r["beacons"] = json!(beacons);
        t += interval_ms;
    }
    // Outdoors on the way out (5 minutes, walking straight away in another direction): a
    // GPS fix of 5–30 m and a Wi-Fi scan of the street's APs, with the store's own while
    // still near enough to hear them — the reports that tell the cloud the visit is over.
    let street = street_aps(store, rng);
    let bearing: f64 = rng.random_range(0.0..std::f64::consts::TAU);
    while t < visit.end_ms() + DEPART_MS {
        let at = outdoors(centre, edge, bearing, t - visit.end_ms());
        let mut wifi = store_aps(store, at, radio);
        wifi.extend(
            street
                .iter()
                .map(|b| json!({"bssid": b, "rssi": rng.random_range(-85..=-55)})),
        );
        let accuracy: f64 = rng.random_range(5.0..=30.0);
        push_report(&mut out, &key, t, gps_fix(store, at, accuracy, rng))["wifi"] = json!(wifi);
        t += interval_ms;
    }
    out
}

/// Appends the visit's next app report, at `t` with its fix, numbered after `key` for its
/// idempotency key; returns it for the rest of what it says.
fn push_report<'a>(out: &'a mut Vec<Value>, key: &str, t: i64, gps: Value) -> &'a mut Value {
    let n = out.len() + 1;
    out.push(json!({"ts": ts_text(t), "idempotency_key": format!("{key}-{n}"), "gps": gps}));
    out.last_mut().expect("just pushed")
}

/// Where a shopper walking straight at (or away from) the store along `bearing` is, `ms`
/// from its door (`edge` metres from the store's `centre`).
fn outdoors(centre: Xy, edge: f64, bearing: f64, ms: i64) -> Xy {
    let away = edge + WALK_M_PER_S * ms as f64 / 1000.0;
    [
        centre[0] + away * bearing.cos(),
        centre[1] + away * bearing.sin(),
    ]
}

/// The store's access points a Wi-Fi scan at `at` sees (an AP is about -40 dBm at 1 m).
fn store_aps(store: &crate::scenario::Store, at: Xy, radio: &mut Radio) -> Vec<Value> {
    store
        .wifi
        .iter()
        .filter_map(|w| {
            let rssi = radio.receive(-40.0, distance(at, w.at))?;
            (rssi >= -90).then(|| json!({"bssid": w.bssid, "rssi": rssi}))
        })
        .collect()
}

/// One to three street access points: random locally administered BSSIDs, none of the
/// store's.
fn street_aps(store: &crate::scenario::Store, rng: &mut StdRng) -> Vec<String> {
    (0..rng.random_range(1..=3))
        .map(|_| {
            let b: [u8; 5] = rng.random();
            format!(
                "0e:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                b[0], b[1], b[2], b[3], b[4]
            )
        })
        .filter(|b| !store.wifi.iter().any(|w| w.bssid.eq_ignore_ascii_case(b)))
        .collect()
}

/// The LINE app's `beacon` webhook events during `visit` for a LINE-linked shopper, as the LINE
/// platform posts them: `enter` when the phone first hears one of the store's LINE Beacons
/// (sampled every 5 s), then `stay` every minute while it still hears it.
pub fn line_beacon_events(
    s: &Scenario,
    shopper: &Shopper,
    visit: &Visit,
    radio: &mut Radio,
) -> Vec<Value> {
    let Some(user) = shopper.line_user.as_ref() else {
        return Vec::new();
    };
    let store = &s.stores[visit.store];
    let mut out = Vec::new();
    let mut last: Option<i64> = None;
    let mut t = visit.start_ms();
    while t < visit.end_ms() {
        let heard = visit.position_at(t).and_then(|at| {
            store.beacons.iter().find_map(|b| {
                let BeaconId::Line { hwid } = b.id else {
                    return None;
                };
                radio
                    .receive(b.power_dbm, distance(at, b.at))
                    .filter(|rssi| *rssi >= -90)
                    .map(|_| hwid)
            })
        });
        if let Some(hwid) = heard {
            let kind = match last {
                None => Some("enter"),
                Some(l) if t - l >= 60_000 => Some("stay"),
                _ => None,
            };
            if let Some(kind) = kind {
                last = Some(t);
                let hwid: String = hwid.iter().map(|x| format!("{x:02x}")).collect();
                out.push(json!({
                    "type": "beacon",
                    "mode": "active",
                    "timestamp": t,
                    "webhookEventId": format!("sim-{user}-{t}"),
                    "deliveryContext": {"isRedelivery": false},
                    "source": {"type": "user", "userId": user},
                    "replyToken": format!("rt-{t}"),
                    "beacon": {"hwid": hwid, "type": kind},
                }));
            }
        }
        t += 5_000;
    }
    out
}

/// The phones' radio environment indoors, and a seeded radio for one purpose.
pub fn indoor_radio(seed: u64, what: &str) -> Radio {
    Radio::new(
        RadioModel {
            exponent: 2.2,
            sigma_db: 4.0,
            loss: 0.15,
            floor_dbm: -98.0,
        },
        rng_for(seed, what).random(),
    )
}

/// A seeded generator for one purpose of a run.
pub fn rng(seed: u64, what: &str) -> StdRng {
    rng_for(seed, what)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::SATURDAY;

    fn scenario() -> Scenario {
        Scenario::parse(SATURDAY).unwrap()
    }

    #[test]
    fn the_same_seed_gives_the_same_run() {
        let s = scenario();
        let a = shoppers(&s);
        assert_eq!(a, shoppers(&s));
        let va = arrivals(&s, &a);
        assert_eq!(va, arrivals(&s, &a));
        let mut other = s.clone();
        other.run.seed += 1;
        assert_ne!(arrivals(&other, &shoppers(&other)), va);
    }

    #[test]
    fn shares_and_arrivals_follow_the_scenario() {
        let s = scenario();
        let p = &s.personas[0];
        let all = shoppers(&s);
        let n = all.len() as f64;
        let share = |f: &dyn Fn(&Shopper) -> bool| all.iter().filter(|x| f(x)).count() as f64 / n;
        // Within four standard errors of a share over the population.
        let close = |got: f64, want: f64| {
            (got - want).abs() <= 4.0 * (want * (1.0 - want) / n).sqrt() + 1e-9
        };
        assert!(close(share(&|x| x.phone == Phone::Ios), p.platforms.ios));
        assert!(close(
            share(&|x| x.phone == Phone::Android),
            p.platforms.android
        ));
        assert!(close(share(&|x| x.line_user.is_some()), p.line_share));
        assert!(all.iter().all(|x| x.app || x.push_token.is_none()));
        assert!(all
            .iter()
            .all(|x| x.eid_key.is_none() || (x.app && x.phone == Phone::Android)));
        let visits = arrivals(&s, &all);
        // The persona's arrivals an hour at each of two stores for ten hours.
        let expected = p.arrivals_per_hour * s.run.hours * 2.0;
        assert!(
            (visits.len() as f64 - expected).abs() < 4.0 * expected.sqrt(),
            "{}",
            visits.len()
        );
        let v = &visits[0];
        assert_eq!(
            v.legs.iter().map(|l| l.area.as_str()).collect::<Vec<_>>(),
            ["entrance", "cafe", "checkout"]
        );
        assert!(v.legs.windows(2).all(|w| w[0].to_ms == w[1].from_ms));
    }

    #[test]
    fn gateways_hear_eid_adverts_the_cloud_can_resolve() {
        let s = scenario();
        let all = shoppers(&s);
        let visits = arrivals(&s, &all);
        let v = visits
            .iter()
            .find(|v| all[v.shopper].eid_key.is_some() && v.store == 0)
            .expect("an Android app shopper at Shibuya");
        let shopper = &all[v.shopper];
        let mut radio = indoor_radio(1, "test");
        let mut r = rng(1, "test");
        let heard = heard(&s, shopper, v, 1000, &mut radio, &mut r);
        assert!(!heard.is_empty());
        let first = &heard[0];
        let frames = omo_gateway::frames::decode(&first.adv).unwrap();
        let id = frames[0].beacon_id().unwrap();
        let key = shopper.eid_key.unwrap();
        let expected = omo_device_config::eid::eid(&key, EID_EXPONENT, (first.ts_ms / 1000) as u32);
        assert_eq!(id, BeaconId::EddystoneEid { eid: expected });
        // The gateway's replay source reads the line back as it was heard.
        let record = omo_gateway::scan::replay::parse_line(&first.replay_line(), 1).unwrap();
        assert_eq!(record.file_ts_ms, first.ts_ms);
        assert_eq!(record.advert.rssi, first.rssi);
        assert_eq!(record.advert.data, first.adv);
        assert_eq!(record.advert.addr, first.addr);
        // In the café the gateway at the back is nearer: heard stronger and more often.
        let cafe = v.legs.iter().find(|l| l.area == "cafe").unwrap();
        let stats = |g: &str| {
            let r: Vec<f64> = heard
                .iter()
                .filter(|h| h.gateway == g && (cafe.from_ms..cafe.to_ms).contains(&h.ts_ms))
                .map(|h| f64::from(h.rssi))
                .collect();
            (r.iter().sum::<f64>() / r.len().max(1) as f64, r.len())
        };
        let (near, far) = (stats("shibuya-g2"), stats("shibuya-g1"));
        assert!(
            distance(cafe.at, s.stores[0].gateways[1].at)
                < distance(cafe.at, s.stores[0].gateways[0].at)
        );
        assert!(near.1 >= 20, "{near:?}");
        assert!(near.0 > far.0 || far.1 == 0, "near {near:?}, far {far:?}");
    }

    #[test]
    fn app_reports_and_line_events_come_from_who_can_send_them() {
        let s = scenario();
        let all = shoppers(&s);
        let visits = arrivals(&s, &all);
        let mut radio = indoor_radio(2, "test");
        let mut r = rng(2, "test");
        let mut reports = 0;
        let mut events = 0;
        for v in visits.iter().take(100) {
            let shopper = &all[v.shopper];
            let rep = app_reports(&s, shopper, v, 60_000, &mut radio, &mut r);
            // Outdoor fixes on the way in (two or three in 2.5 minutes), then indoor reports.
            let outdoor = rep.iter().take_while(|x| x["beacons"].is_null()).count();
            assert_eq!(rep.is_empty(), !shopper.app);
            assert!(!shopper.app || (2..=3).contains(&outdoor), "{outdoor}");
            let st = &s.stores[v.store];
            let centre = [st.size_m[0] / 2.0, st.size_m[1] / 2.0];
            let mut last_away = f64::INFINITY;
            // The cloud's own parser takes every report, at the time it was made.
            for x in &rep {
                let at: omo_device_config::Timestamp = x["ts"].as_str().unwrap().parse().unwrap();
                let parsed = omo_cloud::http::app::parse_report(
                    x.to_string().as_bytes(),
                    at,
                    &omo_cloud::config::Ingest::default(),
                );
                assert!(parsed.is_ok(), "{x}: {:?}", parsed.err());
            }
            // How far a report's fix is from the store's centre, metres.
            let from_centre = |x: &Value| {
                let (north, east) = metres_to_degrees(st.anchor.lat);
                let dy = (x["gps"]["lat"].as_f64().unwrap() - st.anchor.lat) / north - centre[1];
                let dx = (x["gps"]["lon"].as_f64().unwrap() - st.anchor.lon) / east - centre[0];
                dx.hypot(dy)
            };
            for x in &rep[..outdoor] {
                let at: omo_device_config::Timestamp = x["ts"].as_str().unwrap().parse().unwrap();
                assert!(at.millis() < v.start_ms());
                let acc = x["gps"]["accuracy_m"].as_f64().unwrap();
                assert!((5.0..=30.0).contains(&acc), "{x}");
                // Nearer the store with every fix (the true position; the fix errs by ~acc).
                let away = from_centre(x);
                assert!(away < last_away + 3.0 * 30.0, "{away} after {last_away}");
                assert!(away > centre[0].hypot(centre[1]) - 3.0 * 30.0);
                last_away = away;
            }
            // Indoors until the visit ends, then outdoors on the way out (five minutes).
            let indoor = rep[outdoor..]
                .iter()
                .take_while(|x| !x["beacons"].is_null())
                .count();
            for x in &rep[outdoor..outdoor + indoor] {
                let acc = x["gps"]["accuracy_m"].as_f64().unwrap();
                assert!((20.0..=60.0).contains(&acc));
                assert!(x["beacons"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|b| !b["id"].as_str().unwrap().starts_with("line:")));
            }
            let leaving = &rep[outdoor + indoor..];
            assert!(
                !shopper.app || (4..=6).contains(&leaving.len()),
                "{leaving:?}"
            );
            let mut last_away = 0.0;
            for x in leaving {
                let at: omo_device_config::Timestamp = x["ts"].as_str().unwrap().parse().unwrap();
                assert!(at.millis() >= v.end_ms(), "{x}");
                let acc = x["gps"]["accuracy_m"].as_f64().unwrap();
                assert!((5.0..=30.0).contains(&acc), "{x}");
                let away = from_centre(x);
                assert!(away > last_away - 3.0 * 30.0, "{away} after {last_away}");
                last_away = away;
                // The street's APs, and the store's while still near.
                let wifi = x["wifi"].as_array().unwrap();
                assert!(wifi
                    .iter()
                    .any(|w| w["bssid"].as_str().unwrap().starts_with("0e:")));
            }
            reports += rep.len();
            let line_events = line_beacon_events(&s, shopper, v, &mut radio);
            if let Some(e) = line_events.first() {
                assert_eq!(e["beacon"]["type"], "enter");
                assert!(line_events[1..]
                    .iter()
                    .all(|e| e["beacon"]["type"] == "stay"));
                assert_eq!(e["source"]["userId"].as_str(), shopper.line_user.as_deref());
                let at =
                    omo_device_config::Timestamp::from_millis(e["timestamp"].as_i64().unwrap())
                        .unwrap();
                let body = json!({"destination": "Ubrand", "events": [e]}).to_string();
                let parsed = omo_cloud::http::line::parse_webhook(
                    body.as_bytes(),
                    at,
                    &omo_cloud::config::Ingest::default(),
                );
                assert_eq!(parsed.map(|p| p.len()).ok(), Some(1), "{body}");
                events += 1;
            }
        }
        assert!(
            reports > 0 && events > 0,
            "{reports} reports, {events} LINE events"
        );
    }
}
