//! The demo's report: what the cloud says of the day — store visits by source and platform,
//! deliveries, the store, tier and campaign reports — beside what the driver did, and the
//! scenario's expectations checked against it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use serde_json::Value;

use super::day::Driven;
use super::Outcome;
use crate::procs::Api;
use crate::scenario::Scenario;
use crate::synth::{self, Phone, Shopper};

/// Stays: a shopper's visits to one store, where a visit entered before the previous one's
/// exit is a piece of the same stay. The cloud never enters a new visit before the last one's
/// exit time (last evidence + the exit timeout), so such a piece only comes from evidence
/// reaching the cloud after it had decided the exit: on a loaded machine at ×600 a second of
/// delay is ten clock minutes. Counting stays makes a run comparable with its replay.
pub(super) fn stays(spans: HashMap<(String, String), Vec<(i64, i64)>>) -> usize {
    spans
        .into_values()
        .map(|mut v| {
            v.sort_unstable();
            let mut n = 0;
            let mut until = i64::MIN;
            for (entered, exited) in v {
                if entered >= until {
                    n += 1;
                }
                until = until.max(exited);
            }
            n
        })
        .sum()
}

/// The store visits the cloud recorded, counted.
struct Visits {
    total: u64,
    by_source: BTreeMap<String, u64>,
    by_phone: BTreeMap<&'static str, u64>,
    visitors: HashSet<String>,
    /// (customer, store) → every visit's (entered, exited) in ms, to count stays.
    spans: HashMap<(String, String), Vec<(i64, i64)>>,
}

/// Reads the cloud's view of the day, prints the report table and checks the expectations.
pub(super) async fn report(
    s: &Scenario,
    api: &Api,
    (shoppers, customer_of): (&[Shopper], &[String]),
    (start, end): (i64, i64),
    driven: Driven,
) -> anyhow::Result<Outcome> {
    let phone_of: HashMap<&str, Phone> = customer_of
        .iter()
        .zip(shoppers)
        .map(|(c, s)| (c.as_str(), s.phone))
        .collect();
    let mut visits = count_visits(s, api, &phone_of, (start, end)).await?;
    let mut out = String::new();
    let mut failures = Vec::new();
    let stays = stays(std::mem::take(&mut visits.spans));
    summary((&mut out, &mut failures), s, (&visits, stays), &driven);
    deliveries(&mut out, api).await?;
    let reported_purchases = store_reports((&mut out, &mut failures), s, api, (start, end)).await?;
    tiers(&mut out, api, start).await?;
    if reported_purchases == 0 {
        failures.push("no purchase reached the store reports".into());
    }
    let mut delivered_total = 0u64;
    for c in &s.campaigns {
        delivered_total += campaign((&mut out, &mut failures), s, api, c, driven.replayed).await?;
    }
    expectations(
        (&mut out, &mut failures),
        s,
        (visits.total, delivered_total),
        &visits.by_phone,
    );
    if failures.is_empty() {
        out.push_str("\nEvery expectation held.\n");
    } else {
        out.push_str("\nExpectations that failed:\n");
        for f in &failures {
            out.push_str(&format!("  - {f}\n"));
        }
    }
    Ok(Outcome {
        report: out,
        failures,
    })
}

/// Store visits by source and platform, read per store (the API answers 1,000 at most).
async fn count_visits(
    s: &Scenario,
    api: &Api,
    phone_of: &HashMap<&str, Phone>,
    (start, end): (i64, i64),
) -> anyhow::Result<Visits> {
    let mut by_source: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_phone: BTreeMap<&str, u64> = BTreeMap::new();
    let mut total = 0u64;
    let mut visitors: HashSet<String> = HashSet::new();
    // (customer, store) → every visit's (entered, exited) in ms, to count stays.
    let mut spans: HashMap<(String, String), Vec<(i64, i64)>> = HashMap::new();
    for st in &s.stores {
        // Window by window; a window that fills a page is read again as two halves.
        let mut windows = vec![(start, end + 3_600_000)];
        while let Some((from, to)) = windows.pop() {
            let v = api
                .admin(
                    reqwest::Method::GET,
                    &format!(
                        "/v1/admin/visits?store={}&from={}&to={}&limit=1000",
                        st.id,
                        synth::ts_text(from),
                        synth::ts_text(to)
                    ),
                    None,
                )
                .await?;
            let items = v["items"].as_array().cloned().unwrap_or_default();
            if items.len() >= 1000 && to - from > 60_000 {
                let mid = from + (to - from) / 2;
                windows.push((from, mid));
                windows.push((mid, to));
                continue;
            }
            for visit in &items {
                total += 1;
                if let Some(c) = visit["customer"].as_str() {
                    visitors.insert(c.to_owned());
                    let at = |field: &str| {
                        visit[field]
                            .as_str()
                            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                            .map(|t| t.timestamp_millis())
                    };
                    if let Some(entered) = at("entered") {
                        spans
                            .entry((c.to_owned(), st.id.to_string()))
                            .or_default()
                            .push((entered, at("exited").unwrap_or(i64::MAX)));
                    }
                }
                let sources: Vec<String> = visit["sources"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect();
                *by_source.entry(sources.join("+")).or_default() += 1;
                let phone = match visit["customer"].as_str().and_then(|c| phone_of.get(c)) {
                    Some(Phone::Ios) => "ios",
                    Some(Phone::Android) => "android",
                    Some(Phone::Other) => "other",
                    None => "unknown",
                };
                *by_phone.entry(phone).or_default() += 1;
            }
        }
    }
    Ok(Visits {
        total,
        by_source,
        by_phone,
        visitors,
        spans,
    })
}

/// The visits and what the driver did, with the shortfalls that fail the run.
fn summary(
    (out, failures): (&mut String, &mut Vec<String>),
    s: &Scenario,
    (visits, stays): (&Visits, usize),
    driven: &Driven,
) {
    let Visits {
        total,
        by_source,
        by_phone,
        visitors,
        ..
    } = visits;
    let visitors = visitors.len();
    let Driven {
        returns,
        redeemed,
        offers_by_channel,
        lost,
        faults_started,
        replayed,
        redeem_skipped,
    } = driven;
    out.push_str(&format!(
        "\n{}\n\nStore visits: {total}\nStore stays: {}\nStore visitors: {}\n",
        s.run.name, stays, visitors
    ));
    for (k, n) in by_source {
        out.push_str(&format!("  by source   {k:<24} {n:>6}\n"));
    }
    for (k, n) in by_phone {
        out.push_str(&format!("  by platform {k:<24} {n:>6}\n"));
    }
    if *replayed {
        out.push_str(&format!(
            "Replayed from a run record: lift is shown, not checked; {redeem_skipped} recorded redemptions had no offer in this run\n"
        ));
    }
    out.push_str(&format!(
        "Return visits simulated: {returns}; redemptions at the till: {redeemed}\n"
    ));
    out.push_str(&format!(
        "Not handed over: {} adverts (a stalled gateway), {} app reports, {} LINE webhooks, {} purchases and {} QR check-ins refused or unanswered\n",
        lost.adverts, lost.reports, lost.webhooks, lost.purchases, lost.checkins
    ));
    if lost.adverts + lost.reports + lost.webhooks + lost.purchases + lost.checkins > 0 {
        failures.push("the driver could not hand everything over (see above)".into());
    }
    for (channel, n) in offers_by_channel {
        out.push_str(&format!("  offers accepted by {channel:<14} {n:>6}\n"));
    }
    out.push_str(&format!(
        "Faults injected at the fake servers: {faults_started} of {} scheduled\n",
        s.faults.len()
    ));
}

/// Every delivery row the cloud wrote, by store, channel and how it ended.
async fn deliveries(out: &mut String, api: &Api) -> anyhow::Result<()> {
    let mut by_store: BTreeMap<(String, String), BTreeMap<String, u64>> = BTreeMap::new();
    let mut retried = 0u64;
    api.each_delivery(|d| {
        let key = (
            d["store"].as_str().unwrap_or("?").to_owned(),
            d["channel"].as_str().unwrap_or("?").to_owned(),
        );
        let status = d["status"].as_str().unwrap_or("?").to_owned();
        *by_store.entry(key).or_default().entry(status).or_default() += 1;
        if d["attempts"].as_u64().unwrap_or(0) > 1 {
            retried += 1;
        }
        true
    })
    .await?;
    out.push_str(&format!(
        "Deliveries by store and channel ({retried} needed more than one attempt):\n"
    ));
    for ((store, channel), statuses) in &by_store {
        let text: Vec<String> = statuses.iter().map(|(k, n)| format!("{n} {k}")).collect();
        out.push_str(&format!("  {store:<12} {channel:<8} {}\n", text.join(", ")));
    }
    Ok(())
}

/// The cloud's store reports for the day (local dates in each store's zone), each checked
/// against its stored rows; answers the purchases they count.
async fn store_reports(
    (out, failures): (&mut String, &mut Vec<String>),
    s: &Scenario,
    api: &Api,
    (start, end): (i64, i64),
) -> anyhow::Result<u64> {
    out.push_str(&format!(
        "\nStores ({}):\n  {:<10} {:>7} {:>8} {:>7} {:>7} {:>8} {:>8} {:>9} {:>11} {:>11}\n",
        "the cloud's store reports for the day",
        "store",
        "visits",
        "visitors",
        "dwell",
        "offers",
        "clicked",
        "redeemed",
        "purchases",
        "revenue ¥",
        "by offers ¥"
    ));
    let mut reported_purchases = 0u64;
    let mut places: Vec<(String, String)> = s
        .stores
        .iter()
        .map(|st| (st.id.to_string(), st.time_zone.clone()))
        .collect();
    places.push(("online".into(), "Asia/Tokyo".into()));
    for (id, tz) in &places {
        let tz: chrono_tz::Tz = tz.parse().unwrap_or(chrono_tz::Tz::UTC);
        let local = |ms: i64| {
            chrono::DateTime::from_timestamp_millis(ms)
                .unwrap_or_default()
                .with_timezone(&tz)
                .date_naive()
        };
        let path = format!(
            "/v1/admin/reports/stores/{id}?from={}&to={}",
            local(start),
            local(end)
        );
        let r = api.admin(reqwest::Method::GET, &path, None).await?;
        rows_agree(api, id, &path, failures).await?;
        let n = |v: &Value| v.as_u64().unwrap_or(0);
        let yen = |v: &Value| v["JPY"].as_f64().unwrap_or(0.0);
        reported_purchases += n(&r["purchases"]["count"]);
        out.push_str(&format!(
            "  {:<10} {:>7} {:>8} {:>7} {:>7} {:>8} {:>8} {:>9} {:>11.0} {:>11.0}\n",
            id,
            n(&r["visits"]),
            n(&r["unique_visitors"]),
            r["median_dwell_min"]
                .as_f64()
                .map_or("-".to_owned(), |m| format!("{m:.0}min")),
            n(&r["offers"]["decided"]),
            n(&r["offers"]["clicked"]),
            n(&r["offers"]["redeemed"]),
            n(&r["purchases"]["count"]),
            yen(&r["purchases"]["revenue"]),
            yen(&r["purchases"]["revenue_attributed"]),
        ));
    }
    Ok(reported_purchases)
}

/// Whether the tallies a store report reads say what its stored rows say (read before and
/// after, so a figure still moving is read again); a difference or a report that kept
/// changing is a failure.
async fn rows_agree(
    api: &Api,
    id: &str,
    path: &str,
    failures: &mut Vec<String>,
) -> anyhow::Result<()> {
    let mut agreed = false;
    for _ in 0..10 {
        let rows_path = format!("{path}&source=rows");
        let before = api.admin(reqwest::Method::GET, &rows_path, None).await?;
        let tallies = api.admin(reqwest::Method::GET, path, None).await?;
        if before == tallies {
            agreed = true;
            break;
        }
        if before == api.admin(reqwest::Method::GET, &rows_path, None).await? {
            failures.push(format!(
                "the store report of {id} differs from its stored rows:\n  tallies {tallies}\n  rows    {before}"
            ));
            agreed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if !agreed {
        failures.push(format!(
            "the store report of {id} kept changing: its tallies were never compared with its rows"
        ));
    }
    Ok(())
}

/// The loyalty tiers at the day's end.
async fn tiers(out: &mut String, api: &Api, start: i64) -> anyhow::Result<()> {
    let day = chrono::DateTime::from_timestamp_millis(start)
        .unwrap_or_default()
        .with_timezone(&chrono_tz::Tz::Asia__Tokyo)
        .date_naive();
    let tiers = api
        .admin(
            reqwest::Method::GET,
            &format!("/v1/admin/reports/tiers?from={day}&to={day}"),
            None,
        )
        .await?;
    out.push_str(&format!(
        "Loyalty tiers at the day's end:\n  {:<10} {:>9} {:>14} {:>12} {:>18}\n",
        "tier", "customers", "spend to date ¥", "LTV avg ¥", "12-month proj. ¥"
    ));
    for t in tiers["tiers"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {:<10} {:>9} {:>14.0} {:>12.0} {:>18.0}\n",
            t["tier"].as_str().unwrap_or(""),
            t["customers"].as_u64().unwrap_or(0),
            t["spend_to_date"].as_f64().unwrap_or(0.0),
            t["ltv_average"].as_f64().unwrap_or(0.0),
            t["projected_12m"].as_f64().unwrap_or(0.0),
        ));
    }
    Ok(())
}

/// Campaign `c`'s report by group, with its lift checked (unless `replayed`); answers the
/// offers it delivered.
async fn campaign(
    (out, failures): (&mut String, &mut Vec<String>),
    s: &Scenario,
    api: &Api,
    c: &Value,
    replayed: bool,
) -> anyhow::Result<u64> {
    let mut delivered_total = 0u64;
    let id = c["id"].as_str().unwrap_or_default();
    let r = api
        .admin(
            reqwest::Method::GET,
            &format!("/v1/admin/reports/campaigns/{id}"),
            None,
        )
        .await?;
    out.push_str(&format!(
        "\nCampaign {id}\n  {:<8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}\n",
        "group", "customers", "sent", "delivered", "redeemed", "returned", "rate"
    ));
    for g in r["groups"].as_array().into_iter().flatten() {
        let f = |k: &str| g["funnel"][k].as_u64().unwrap_or(0);
        delivered_total += f("delivered");
        out.push_str(&format!(
            "  {:<8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7.1}%\n",
            g["group"].as_str().unwrap_or(""),
            g["customers"].as_u64().unwrap_or(0),
            f("sent"),
            f("delivered"),
            f("redeemed"),
            g["returned"].as_u64().unwrap_or(0),
            g["return_rate"].as_f64().unwrap_or(0.0) * 100.0
        ));
    }
    lifts((out, failures), s, (id, &r), replayed);
    Ok(delivered_total)
}

/// The lift of each variant of campaign `id` over its holdout (report `r`), checked against
/// the scenario's true effect.
fn lifts(
    (out, failures): (&mut String, &mut Vec<String>),
    s: &Scenario,
    (id, r): (&str, &Value),
    replayed: bool,
) {
    let truth = s
        .personas
        .first()
        .map(|p| p.effect.return_after_offer - p.effect.return_without_offer)
        .unwrap_or(0.0);
    let lifts = r["lift"].as_array().cloned().unwrap_or_default();
    let wants_lift = !replayed && (s.expect.lift_covers_truth || s.expect.lift_excludes_zero);
    if wants_lift && lifts.is_empty() {
        failures.push(format!(
            "campaign {id}: no lift to check (no variant measured)"
        ));
    }
    for l in &lifts {
        if wants_lift && l["too_small"] == true {
            failures.push(format!("campaign {id}: too few customers to read the lift"));
        }
        let (d, lo, hi) = (
            l["difference"].as_f64().unwrap_or(0.0),
            l["difference_ci95"]["low"].as_f64().unwrap_or(0.0),
            l["difference_ci95"]["high"].as_f64().unwrap_or(0.0),
        );
        out.push_str(&format!(
            "  lift of {} over holdout: {:+.1} points (95 % CI {:+.1} to {:+.1}); true effect {:+.1}{}\n",
            l["variant"].as_str().unwrap_or(""),
            d * 100.0,
            lo * 100.0,
            hi * 100.0,
            truth * 100.0,
            if l["too_small"] == true { " — too few customers to read" } else { "" }
        ));
        // The 95 % interval misses the truth one run in twenty by construction; the check
        // uses the 99.9 % interval (the same standard error), so a run fails only when the
        // measurement is off, not when it is merely unlucky.
        let se = (hi - lo) / (2.0 * 1.96);
        let (wide_lo, wide_hi) = (d - 3.29 * se, d + 3.29 * se);
        if wants_lift && s.expect.lift_covers_truth && !(wide_lo <= truth && truth <= wide_hi) {
            failures.push(format!("campaign {id}: the lift's 99.9 % interval [{wide_lo:.3}, {wide_hi:.3}] does not cover the true effect {truth:.3}"));
        }
        if wants_lift && s.expect.lift_excludes_zero && lo <= 0.0 && hi >= 0.0 {
            failures.push(format!(
                "campaign {id}: the lift interval [{lo:.3}, {hi:.3}] includes zero"
            ));
        }
    }
}

/// The scenario's expectations of the visits, the offers delivered and the platforms' shares.
fn expectations(
    (out, failures): (&mut String, &mut Vec<String>),
    s: &Scenario,
    (total, delivered_total): (u64, u64),
    by_phone: &BTreeMap<&'static str, u64>,
) {
    if total < s.expect.min_visits {
        failures.push(format!(
            "{total} store visits, expected at least {}",
            s.expect.min_visits
        ));
    }
    if delivered_total < s.expect.min_offers {
        failures.push(format!(
            "{delivered_total} offers delivered, expected at least {}",
            s.expect.min_offers
        ));
    }
    if let (Some(tol), Some(p)) = (s.expect.platform_share_tolerance, s.personas.first()) {
        // Who the system can see: iPhones and Android phones through the app or LINE, other
        // phones through LINE only.
        let seen_app_or_line = 1.0 - (1.0 - p.app_share) * (1.0 - p.line_share);
        let weights = [
            ("ios", p.platforms.ios * seen_app_or_line),
            ("android", p.platforms.android * seen_app_or_line),
            ("other", p.platforms.other * p.line_share),
        ];
        let sum: f64 = weights.iter().map(|(_, w)| w).sum();
        let known: u64 = ["ios", "android", "other"]
            .iter()
            .map(|k| by_phone.get(k).copied().unwrap_or(0))
            .sum();
        for (k, w) in weights {
            let want = w / sum.max(1e-9);
            let got = by_phone.get(k).copied().unwrap_or(0) as f64 / known.max(1) as f64;
            out.push_str(&format!(
                "  {k:<8} share of visits {:.3} (scenario {:.3})\n",
                got, want
            ));
            if (got - want).abs() > tol {
                failures.push(format!("{k} visits are {got:.3} of all, the scenario gives {want:.3} (tolerance {tol})"));
            }
        }
    }
}
