use super::*;
use crate::campaigns::definition::tests::example;
use chrono::NaiveDateTime;

fn campaign(edit: impl FnOnce(&mut serde_json::Value)) -> Campaign {
    let mut v = example();
    v["audience"] = serde_json::json!({});
    v["schedule"]["hours"] = serde_json::Value::Null;
    v["quiet_hours"] = serde_json::Value::Null;
    v["holdout_percent"] = serde_json::json!(0);
    edit(&mut v);
    let c: Campaign = serde_json::from_value(v).unwrap();
    c.validate(&[5, 10, 20, 30]).unwrap();
    c
}

fn utc(s: &str) -> i64 {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M")
        .unwrap()
        .and_utc()
        .timestamp_millis()
}

fn customer(reachable: &[DeliveryChannel]) -> CustomerView {
    CustomerView {
        id: "c_1".into(),
        reachable: reachable.iter().copied().collect(),
        ..CustomerView::default()
    }
}

fn trigger<'a>(c: &'a CustomerView, at: &str, tz: &str, history: &'a [PastSend]) -> Trigger<'a> {
    Trigger {
        customer: c,
        at_ms: utc(at),
        late: false,
        store_tz: tz.parse().unwrap(),
        history,
        budget_left: true,
    }
}

fn reason(o: Outcome) -> Option<Reason> {
    match o {
        Outcome::Suppressed { reason } => Some(reason),
        _ => None,
    }
}

#[test]
fn quiet_hours_follow_the_store_across_a_dst_change() {
    // New York leaves daylight time on 2026-11-01: 12:30 UTC is 08:30 before, 07:30 after.
    let c = campaign(|v| {
        v["quiet_hours"] = serde_json::json!({"from": "22:00:00", "to": "08:00:00"});
        v["schedule"]["from"] = serde_json::json!("2026-10-01");
    });
    let who = customer(&[DeliveryChannel::Line]);
    assert!(matches!(
        decide(
            &c,
            &trigger(&who, "2026-10-31 12:30", "America/New_York", &[])
        ),
        Outcome::Send { .. }
    ));
    assert_eq!(
        reason(decide(
            &c,
            &trigger(&who, "2026-11-02 12:30", "America/New_York", &[])
        )),
        Some(Reason::QuietHours)
    );
    // The repeated hour 01:00–02:00 on the change night is inside an 01:00–02:00 window both times.
    let night = campaign(|v| {
        v["schedule"]["hours"] = serde_json::json!({"from": "01:00:00", "to": "02:00:00"})
    });
    assert!(matches!(
        decide(
            &night,
            &trigger(&who, "2026-11-01 05:30", "America/New_York", &[])
        ),
        Outcome::Send { .. }
    ));
    assert!(matches!(
        decide(
            &night,
            &trigger(&who, "2026-11-01 06:30", "America/New_York", &[])
        ),
        Outcome::Send { .. }
    ));
}

#[test]
fn a_store_in_another_time_zone_than_the_server_uses_its_own_day() {
    // 23:30 UTC on Sunday is 08:30 on Monday in Tokyo.
    let mondays = campaign(|v| v["schedule"]["days"] = serde_json::json!(["mon"]));
    let who = customer(&[DeliveryChannel::Line]);
    assert!(matches!(
        decide(
            &mondays,
            &trigger(&who, "2026-11-22 23:30", "Asia/Tokyo", &[])
        ),
        Outcome::Send { .. }
    ));
    assert_eq!(
        reason(decide(
            &mondays,
            &trigger(&who, "2026-11-22 23:30", "Europe/London", &[])
        )),
        Some(Reason::Schedule)
    );
    // A schedule's own time zone overrides the store's.
    let national = campaign(|v| {
        v["schedule"]["days"] = serde_json::json!(["mon"]);
        v["schedule"]["time_zone"] = serde_json::json!("Asia/Tokyo");
    });
    assert!(matches!(
        decide(
            &national,
            &trigger(&who, "2026-11-22 23:30", "Europe/London", &[])
        ),
        Outcome::Send { .. }
    ));
}

#[test]
fn daily_caps_turn_over_at_local_midnight() {
    let c = campaign(|v| {
        v["caps"] =
            serde_json::json!({"per_customer": 5, "period_days": 1, "per_customer_daily_all": 1});
    });
    let who = customer(&[DeliveryChannel::Line]);
    // 23:59 in Tokyo (14:59 UTC), then 00:01 the next local day (15:01 UTC).
    let sent = [PastSend {
        campaign: "other".into(),
        at_ms: utc("2026-11-23 14:59"),
    }];
    assert_eq!(
        reason(decide(
            &c,
            &trigger(&who, "2026-11-23 14:59", "Asia/Tokyo", &sent)
        )),
        Some(Reason::DailyCap)
    );
    assert!(matches!(
        decide(&c, &trigger(&who, "2026-11-23 15:01", "Asia/Tokyo", &sent)),
        Outcome::Send { .. }
    ));
}

#[test]
fn two_campaigns_compete_for_the_daily_cap() {
    let a = campaign(|v| {
        v["id"] = serde_json::json!("a");
        v["caps"]["per_customer_daily_all"] = serde_json::json!(1);
    });
    let b = campaign(|v| {
        v["id"] = serde_json::json!("b");
        v["caps"]["per_customer_daily_all"] = serde_json::json!(1);
    });
    let who = customer(&[DeliveryChannel::Line]);
    let mut history = Vec::new();
    let first = decide(
        &a,
        &trigger(&who, "2026-11-23 03:00", "Asia/Tokyo", &history),
    );
    assert!(first.uses_caps());
    history.push(PastSend {
        campaign: "a".into(),
        at_ms: utc("2026-11-23 03:00"),
    });
    assert_eq!(
        reason(decide(
            &b,
            &trigger(&who, "2026-11-23 04:00", "Asia/Tokyo", &history)
        )),
        Some(Reason::DailyCap)
    );
}

#[test]
fn caps_cooldown_budget_consent_and_lateness_say_why() {
    let c = campaign(|v| {
        v["caps"] = serde_json::json!({"per_customer": 2, "period_days": 7, "cooldown_minutes": 60})
    });
    let who = customer(&[DeliveryChannel::Line]);
    let one = [PastSend {
        campaign: c.id.clone(),
        at_ms: utc("2026-11-20 03:00"),
    }];
    assert!(matches!(
        decide(&c, &trigger(&who, "2026-11-23 03:00", "Asia/Tokyo", &one)),
        Outcome::Send { .. }
    ));
    let recent = [PastSend {
        campaign: c.id.clone(),
        at_ms: utc("2026-11-23 02:30"),
    }];
    assert_eq!(
        reason(decide(
            &c,
            &trigger(&who, "2026-11-23 03:00", "Asia/Tokyo", &recent)
        )),
        Some(Reason::Cooldown)
    );
    let two = [
        one[0].clone(),
        PastSend {
            campaign: c.id.clone(),
            at_ms: utc("2026-11-21 03:00"),
        },
    ];
    assert_eq!(
        reason(decide(
            &c,
            &trigger(&who, "2026-11-23 03:00", "Asia/Tokyo", &two)
        )),
        Some(Reason::Cap)
    );
    // A week later the first send is out of the period.
    assert!(matches!(
        decide(&c, &trigger(&who, "2026-11-27 03:00", "Asia/Tokyo", &two)),
        Outcome::Send { .. }
    ));
    let mut spent = trigger(&who, "2026-11-23 03:00", "Asia/Tokyo", &[]);
    spent.budget_left = false;
    assert_eq!(reason(decide(&c, &spent)), Some(Reason::Budget));
    let nobody = customer(&[]);
    assert_eq!(
        reason(decide(
            &c,
            &trigger(&nobody, "2026-11-23 03:00", "Asia/Tokyo", &[])
        )),
        Some(Reason::Consent)
    );
    let app_only = customer(&[DeliveryChannel::Push]);
    assert_eq!(
        decide(
            &c,
            &trigger(&app_only, "2026-11-23 03:00", "Asia/Tokyo", &[])
        ),
        Outcome::Send {
            variant: "a".into(),
            channel: DeliveryChannel::Push
        },
        "LINE first, then app push"
    );
    let mut late = trigger(&who, "2026-11-23 03:00", "Asia/Tokyo", &[]);
    late.late = true;
    assert_eq!(reason(decide(&c, &late)), Some(Reason::Late));
    let staff = CustomerView {
        tags: BTreeSet::from(["staff".to_owned()]),
        ..customer(&[DeliveryChannel::Line])
    };
    let members_only = campaign(|v| v["audience"] = serde_json::json!({"exclude_tags": ["staff"]}));
    assert_eq!(
        reason(decide(
            &members_only,
            &trigger(&staff, "2026-11-23 03:00", "Asia/Tokyo", &[])
        )),
        Some(Reason::Audience)
    );
}

#[test]
fn holdout_is_stable_sized_and_uses_shadow_caps() {
    let c = campaign(|v| {
        v["holdout_percent"] = serde_json::json!(10);
        v["variants"] = serde_json::json!([
            {"id": "a", "weight": 3, "template": {"text": "A {coupon}"}},
            {"id": "b", "weight": 1, "template": {"text": "B {coupon}"}}
        ]);
    });
    let mut counts = std::collections::BTreeMap::new();
    for i in 0..10_000 {
        let id = format!("c_{i}");
        let arm = assign(&c, &id).unwrap_or("holdout").to_owned();
        assert_eq!(assign(&c, &id).unwrap_or("holdout"), arm, "stable");
        *counts.entry(arm).or_insert(0) += 1;
    }
    assert!((900..1100).contains(&counts["holdout"]), "{counts:?}");
    assert!((6400..7100).contains(&counts["a"]), "{counts:?}");
    assert!((2000..2500).contains(&counts["b"]), "{counts:?}");
    // A holdout customer: would have sent, and that shadow send counts toward the cap.
    let held = (0..)
        .map(|i| format!("c_{i}"))
        .find(|id| assign(&c, id).is_none())
        .unwrap();
    let who = CustomerView {
        id: held,
        ..customer(&[DeliveryChannel::Line])
    };
    assert!(matches!(
        decide(&c, &trigger(&who, "2026-11-23 03:00", "Asia/Tokyo", &[])),
        Outcome::WouldSend { .. }
    ));
    let shadow = [PastSend {
        campaign: c.id.clone(),
        at_ms: utc("2026-11-23 03:00"),
    }];
    assert_eq!(
        reason(decide(
            &c,
            &trigger(&who, "2026-11-24 03:00", "Asia/Tokyo", &shadow)
        )),
        Some(Reason::Cap)
    );
}
