//! App reports from outside end the visits they left (issue 29): a Wi-Fi scan without the
//! zone's BSSIDs, a precise fix wholly outside a fence and a list of other beacons end the
//! zone's visit and its store's `exit_grace_s` after the report; a straddling or vague fix
//! ends nothing early; and the stage restored mid-day judges the report alike.

use super::tests::save_located;
use super::*;
use crate::identity::new_customer;
use crate::ingest::record::{AppReport, BeaconSighting, GpsFix, WifiSighting};
use crate::registry::replace_site;
use crate::store::barrier::scan_all;
use crate::store::event_log::EventLog;
use crate::store::testing::{places, Place, TestStore};
use crate::store::Commit;
use crate::visits::visits_of_customer;
use omo_device_config::site::Site;

const SITE: &str = r#"
[[stores]]
id = "s1"
name = "S"
time_zone = "Asia/Tokyo"
location = { lat = 35.6, lon = 139.7 }

[[beacons]]
id = "ibeacon:E2C56DB5-DFFB-48D2-B060-D0F5A71096E0:100:1"
store = "s1"
name = "door"

[[beacon_zones]]
id = "door"
store = "s1"
name = "Door"
beacons = ["ibeacon:E2C56DB5-DFFB-48D2-B060-D0F5A71096E0:100:1"]

[[wifi_zones]]
id = "wifi"
store = "s1"
name = "Wi-Fi"
bssids = ["02:00:5e:10:00:01"]

[[geofences]]
id = "plaza"
store = "s1"
name = "Plaza"
circle = { lat = 35.6, lon = 139.7, radius_m = 100.0 }
"#;

const T0_S: i64 = 1_790_000_000;
const DOOR: &str = "ibeacon:E2C56DB5-DFFB-48D2-B060-D0F5A71096E0:100:1";
const OTHER: &str = "ibeacon:E2C56DB5-DFFB-48D2-B060-D0F5A71096E0:100:9";

/// A fix `metres` east of the plaza's centre.
fn fix(metres: f64, accuracy_m: f64) -> GpsFix {
    let kx = crate::zones::geofence::metres_per_degree() * 35.6f64.to_radians().cos();
    GpsFix {
        lat: 35.6,
        lon: 139.7 + metres / kx,
        accuracy_m,
    }
}

fn report(
    customer: &str,
    at_s: i64,
    gps: Option<GpsFix>,
    wifi: &[&str],
    beacons: &[&str],
) -> Record {
    let at = ts((T0_S + at_s) * 1000);
    Record::App(AppReport {
        install: "i_1".into(),
        customer: customer.into(),
        event_ts: at,
        received: at,
        gps,
        wifi: wifi
            .iter()
            .map(|b| WifiSighting {
                bssid: (*b).into(),
                rssi: -60.0,
            })
            .collect(),
        beacons: beacons
            .iter()
            .map(|b| BeaconSighting {
                id: b.parse().unwrap(),
                rssi: -60.0,
            })
            .collect(),
    })
}

/// A store with the site and two located customers; the stage's inputs.
fn setup(place: &Place) -> (TestStore, Inputs, [String; 2]) {
    let store = place.open();
    let site = Site::parse(SITE, false).unwrap();
    store
        .commit(replace_site(&Registry::default(), &site).unwrap())
        .unwrap();
    let t = ts(T0_S * 1000);
    let ids = [0, 1].map(|_| save_located(&store, new_customer(t), t).id);
    let inputs = Inputs {
        registry: Arc::new(RwLock::new(Registry::load(&store).unwrap())),
        eids: Arc::new(Mutex::new(EidResolver::new(Vec::new(), 300))),
        params: VisitParams::default(),
        profiles: Default::default(),
        id_key: [9; 32],
    };
    (store, inputs, ids)
}

/// The day's log over `range` (seconds from its start): `customers` inside (Wi-Fi, fix, door
/// beacon) every 30 s for 10 minutes; at 660 s the reports `then`; ticks every second.
fn day(customers: &[&str], then: &[Record], range: std::ops::Range<i64>) -> Vec<Record> {
    let mut out = Vec::new();
    for s in range {
        if s <= 600 && s % 30 == 0 {
            for c in customers {
                let inside = Some(fix(0.0, 10.0));
                out.push(report(c, s, inside, &["02:00:5e:10:00:01"], &[DOOR]));
            }
        }
        if s == 660 {
            out.extend(then.iter().cloned());
        }
        out.push(Record::Tick {
            received: ts((T0_S + s) * 1000),
        });
    }
    out
}

/// The main day, to 1,500 s: at 660 s `left` reports from outside (a far fix, a street scan,
/// another beacon) and `stayed` a fix straddling the fence's edge (and nothing else).
fn log(left: &str, stayed: &str, range: std::ops::Range<i64>) -> Vec<Record> {
    let then = [
        report(
            left,
            660,
            Some(fix(3000.0, 10.0)),
            &["0a:11:22:33:44:55"],
            &[OTHER],
        ),
        report(stayed, 660, Some(fix(110.0, 30.0)), &[], &[]),
    ];
    day(&[left, stayed], &then, range)
}

/// Runs the stage over everything logged.
fn run(store: &TestStore, inputs: &Inputs) {
    let mut stage = VisitStage::open(store, inputs).unwrap();
    while stage.step(store, inputs).unwrap() > 0 {}
}

/// Every scope of the day: the three zones and their store, each with `exit`.
fn all_exit_at(exit: i64) -> BTreeMap<Scope, i64> {
    ["door", "wifi", "plaza"]
        .map(|z| Scope::Zone(z.into()))
        .into_iter()
        .chain([Scope::Store("s1".into())])
        .map(|s| (s, exit))
        .collect()
}

fn append(store: &TestStore, records: &[Record]) {
    let mut log = EventLog::open(store).unwrap();
    let mut c = Commit::new();
    for r in records {
        log.append(&mut c, &r.encode());
    }
    store.commit(c).unwrap();
}

/// Each visit's scope and exit (seconds from the day's start).
fn exits(store: &TestStore, customer: &str) -> BTreeMap<Scope, i64> {
    visits_of_customer(store, customer, 10)
        .unwrap()
        .into_iter()
        .map(|v| {
            let exited = v.exited.expect("every visit ended").millis() / 1000 - T0_S;
            (v.scope, exited)
        })
        .collect()
}

#[test]
fn an_app_report_from_outside_ends_its_visits_after_the_grace() {
    for place in places() {
        an_app_report_from_outside_ends_its_visits_after_the_grace_on(&place);
    }
}

fn an_app_report_from_outside_ends_its_visits_after_the_grace_on(place: &Place) {
    let (store, inputs, [left, stayed]) = setup(place);
    append(&store, &log(&left, &stayed, 0..1500));
    run(&store, &inputs);
    let grace = i64::from(inputs.params.exit_grace_s);
    let timeout = i64::from(inputs.params.exit_timeout_s);
    assert_eq!(exits(&store, &left), all_exit_at(660 + grace));
    // A fix across the fence's edge is no evidence: every visit runs to its timeout.
    assert_eq!(exits(&store, &stayed), all_exit_at(600 + timeout));

    // Restored from its commit just before the report and run on, the stage judges the
    // report against the same open visits (its live scopes come back with the states).
    let place2 = place.fresh_like();
    let (again, _, _) = setup(&place2);
    // The second store's customers have other ids: it takes the first one's identities.
    let mut c = Commit::new();
    for (k, v) in scan_all(&store, Space::Identity).unwrap() {
        c.put(Space::Identity, k, v);
    }
    again.commit(c).unwrap();
    append(&again, &log(&left, &stayed, 0..655));
    run(&again, &inputs);
    append(&again, &log(&left, &stayed, 655..1500));
    run(&again, &inputs);
    assert_eq!(exits(&again, &left), exits(&store, &left));
    assert_eq!(exits(&again, &stayed), exits(&store, &stayed));
}

/// A report that is only a list of other beacons: outside the door by the beacon rule, and
/// with it the store and every zone of it (the list says nothing of the Wi-Fi and the plaza);
/// with the rule off, nothing.
#[test]
fn a_beacon_list_alone_leaves_the_store_by_the_beacon_rule() {
    for place in places() {
        a_beacon_list_alone_leaves_the_store_by_the_beacon_rule_on(&place);
    }
}

fn a_beacon_list_alone_leaves_the_store_by_the_beacon_rule_on(place: &Place) {
    for min_others in [1, 0] {
        let fresh = place.fresh_like();
        let (store, mut inputs, [moved, _]) = setup(&fresh);
        inputs.params.beacon_outside_min_others = min_others;
        let then = [report(&moved, 660, None, &[], &[OTHER])];
        append(&store, &day(&[&moved], &then, 0..1500));
        run(&store, &inputs);
        let exit = if min_others == 1 {
            660 + i64::from(inputs.params.exit_grace_s)
        } else {
            600 + i64::from(inputs.params.exit_timeout_s)
        };
        assert_eq!(exits(&store, &moved), all_exit_at(exit), "{min_others}");
    }
}

#[test]
fn a_report_inside_another_zone_of_the_store_holds_the_store() {
    for place in places() {
        a_report_inside_another_zone_of_the_store_holds_the_store_on(&place);
    }
}

fn a_report_inside_another_zone_of_the_store_holds_the_store_on(place: &Place) {
    let (store, inputs, [moved, _]) = setup(place);
    // Out of the Wi-Fi's reach, still at the door and in the plaza.
    let street = &["0a:11:22:33:44:55"];
    let then = [report(&moved, 660, Some(fix(0.0, 10.0)), street, &[DOOR])];
    append(&store, &day(&[&moved], &then, 0..1500));
    run(&store, &inputs);
    let grace = i64::from(inputs.params.exit_grace_s);
    let timeout = i64::from(inputs.params.exit_timeout_s);
    let mut held = all_exit_at(660 + timeout);
    held.insert(Scope::Zone("wifi".into()), 660 + grace);
    assert_eq!(exits(&store, &moved), held);
}
