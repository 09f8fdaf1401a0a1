//! The one-command demo, shortened for CI: `omo-sim demo` with the bundled scenario cut to three
//! hours and a thousand shoppers starts the fakes, the cloud and the gateways as processes,
//! drives the day through the scenario's faults at the fake servers, prints the report and exits
//! 0 because the (relaxed) expectations hold; the run record it writes replays to the same
//! visits. The first run logs at debug level (`--logs`), and no log line of the cloud or a
//! gateway at info level or above carries a LINE user id, member id, push token, EID key or
//! GPS coordinate of the scenario's shoppers. The data dir that run leaves migrates into
//! PostgreSQL (`omo-cloud migrate`), and a cloud on it serves the same customers, visits and
//! reports as one on the sled dir.

use std::collections::HashSet;

use omo_tests::cloud::{cloud_binary, CloudUnderTest};
use omo_tests::instances::{held, until_caught_up};
use omo_tests::{binary, gateway_binary, run_demo, short_saturday};
use serde_json::Value;

#[test]
fn a_shortened_demo_runs_end_to_end_and_meets_its_expectations() -> anyhow::Result<()> {
    // The demo finds omo-cloud and omo-gateway beside itself.
    cloud_binary()?;
    gateway_binary()?;
    let sim = binary("omo-sim", "omo-sim")?;
    // Half the demo's speed: at ×600 a second of a loaded machine (the first run also
    // synthesises every advert while it drives) is ten clock minutes, longer than the
    // cloud's exit timeout.
    let text = short_saturday(1000, 300, (100, 20), 0.12);
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("short.toml");
    std::fs::write(&path, &text)?;
    let scenario = omo_sim::scenario::Scenario::parse(&text).map_err(|e| anyhow::anyhow!("{e}"))?;
    let record = dir.path().join("run.ndjson");
    let logs = dir.path().join("logs");
    let stdout = demo(
        &sim,
        dir.path(),
        &[
            "--scenario",
            &path.display().to_string(),
            "--record",
            &record.display().to_string(),
            "--logs",
            &logs.display().to_string(),
        ],
    )?;
    check_logs_keep_personal_data(&logs, &scenario, &record)?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(the_day_migrates_into_postgresql(&logs, &record))?;
    assert!(stdout.contains("Every expectation held."), "{stdout}");
    assert!(stdout.contains("Campaign welcome-coffee"), "{stdout}");
    assert!(stdout.contains("lift of a over holdout"), "{stdout}");
    for source in ["gateway", "line", "app"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.contains("by source") && l.contains(source)),
            "no visits from {source}:\n{stdout}"
        );
    }
    // The scenario's LINE 429 burst and FCM 503s both fall in the three hours; the cloud
    // retried through them and every delivery of both stores ended delivered.
    assert!(
        stdout.contains("Faults injected at the fake servers: 2 of 2 scheduled"),
        "{stdout}"
    );
    let by_store: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("Deliveries by store and channel"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .collect();
    for store in ["shibuya", "umeda"] {
        assert!(
            by_store.iter().any(|l| l.contains(store)),
            "no deliveries at {store}:\n{stdout}"
        );
    }
    // Every delivery ended (a push that met 429s until its offer's hour was up expires, with
    // its reason), and most were delivered.
    let (mut delivered, mut all) = (0u64, 0u64);
    for l in &by_store {
        assert!(
            !l.contains("pending") && !l.contains("sending"),
            "a delivery never ended:\n{stdout}"
        );
        let outcomes = l.split_whitespace().skip(2).collect::<Vec<_>>().join(" ");
        for part in outcomes.split(", ") {
            let mut words = part.split_whitespace();
            let n: u64 = words.next().and_then(|n| n.parse().ok()).unwrap_or(0);
            all += n;
            if words.next() == Some("delivered") {
                delivered += n;
            }
        }
    }
    assert!(
        all > 0 && delivered * 10 >= all * 9,
        "{delivered} of {all} delivered:\n{stdout}"
    );
    // The cloud's store reports show each store's day with its purchases (at the till and
    // online), and the tiers hold every registered shopper.
    let section = |title: &str| -> Vec<&str> {
        stdout
            .lines()
            .skip_while(|l| !l.starts_with(title))
            .skip(2)
            .take_while(|l| l.starts_with("  "))
            .collect()
    };
    let stores = section("Stores (");
    eprintln!("{}", stores.join("\n"));
    for store in ["shibuya", "umeda", "online"] {
        let line = stores
            .iter()
            .find(|l| l.split_whitespace().next() == Some(store))
            .unwrap_or_else(|| panic!("no report line for {store}:\n{stdout}"));
        let purchases: u64 = line
            .split_whitespace()
            .nth(7)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(purchases > 0, "no purchases at {store}: {line}\n{stdout}");
    }
    let tiers = section("Loyalty tiers at the day's end");
    eprintln!("{}", tiers.join("\n"));
    let customers: u64 = tiers
        .iter()
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum();
    assert_eq!(customers, 1000, "{stdout}");
    // The run record replays: the same visits come from the same inputs at the same times
    // (offers may differ: the new cloud assigns the holdout afresh), and the expectations hold.
    let replayed = demo(
        &sim,
        dir.path(),
        &["--replay", &record.display().to_string()],
    )?;
    assert!(
        replayed.contains("Replayed from a run record"),
        "{replayed}"
    );
    assert!(replayed.contains("Every expectation held."), "{replayed}");
    let figure = |report: &str, name: &str| -> f64 {
        report
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0.0)
    };
    // The same shoppers visit, and stay as often. The cloud's visits can differ more: a
    // visit whose sightings reach the cloud later than its exit timeout splits in pieces
    // (CI saw 305 then 232 at ×600), which the demo counts as one stay.
    for (name, tolerance) in [("Store visitors: ", 0.05), ("Store stays: ", 0.1)] {
        let (first, again) = (figure(&stdout, name), figure(&replayed, name));
        eprintln!("{name}{first} in the run, {again} in its replay");
        assert!(
            first > 0.0 && (again - first).abs() <= first * tolerance,
            "{name}{first} then {again}\n--- first run:\n{stdout}\n--- replay:\n{replayed}"
        );
    }
    Ok(())
}

/// The shoppers' personal ids and every GPS coordinate the run reported, as they would
/// appear in text.
fn personal_data(
    scenario: &omo_sim::scenario::Scenario,
    record: &std::path::Path,
) -> anyhow::Result<HashSet<String>> {
    let mut out = HashSet::new();
    for sh in omo_sim::synth::shoppers(scenario) {
        out.insert(sh.member_id.clone());
        out.extend(sh.line_user.clone());
        out.extend(sh.push_token.clone());
        out.extend(sh.eid_key.map(hex::encode));
    }
    for line in std::fs::read_to_string(record)?.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let Some(body) = v["body"].as_str() else {
            continue;
        };
        let report: serde_json::Value = serde_json::from_str(body)?;
        for k in ["lat", "lon"] {
            if let Some(n) = report["gps"].get(k) {
                out.insert(n.to_string());
            }
        }
    }
    Ok(out)
}

/// Scans every cloud and gateway log under `logs`: no line at info level or above may
/// contain any of [`personal_data`] anywhere (an id inside an idempotency key counts too).
fn check_logs_keep_personal_data(
    logs: &std::path::Path,
    scenario: &omo_sim::scenario::Scenario,
    record: &std::path::Path,
) -> anyhow::Result<()> {
    let personal = personal_data(scenario, record)?;
    anyhow::ensure!(
        personal.len() > 1000,
        "only {} ids and coordinates",
        personal.len()
    );
    let mut files = Vec::new();
    let mut dirs = vec![logs.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "log")
                && p.file_name().is_some_and(|n| {
                    let n = n.to_string_lossy();
                    n.starts_with("cloud") || n == "gateway.log"
                })
            {
                files.push(p);
            }
        }
    }
    anyhow::ensure!(files.len() >= 3, "logs: {files:?}");
    let (mut lines, mut debug) = (0u64, 0u64);
    for f in &files {
        for line in std::fs::read_to_string(f)?.lines() {
            lines += 1;
            if line.contains("DEBUG") || line.contains("TRACE") {
                debug += 1;
                continue;
            }
            let leak = personal.iter().find(|p| line.contains(p.as_str()));
            anyhow::ensure!(leak.is_none(), "{}: {leak:?} in: {line}", f.display());
        }
    }
    anyhow::ensure!(
        debug > 0,
        "the run did not log at debug level ({lines} lines)"
    );
    eprintln!(
        "{lines} log lines ({debug} at debug) hold none of {} personal ids and coordinates",
        personal.len()
    );
    Ok(())
}

/// Runs `omo-sim demo ARGS` (10 minutes at most) and returns its report; fails unless it
/// exits 0.
fn demo(sim: &std::path::Path, dir: &std::path::Path, args: &[&str]) -> anyhow::Result<String> {
    run_demo(sim, dir, args, &[])
}

/// The sled data dir the demo kept under `logs` migrates into a fresh PostgreSQL database; a
/// cloud on each, their clocks two hours after the run's last action (every visit over),
/// serves the same customers, visits, store and tier reports, campaign reports and ingest
/// statistics. Skipped where PostgreSQL cannot run (required in CI).
async fn the_day_migrates_into_postgresql(
    logs: &std::path::Path,
    record: &std::path::Path,
) -> anyhow::Result<()> {
    let Some(pg) = omo_tests::postgres::cluster()? else {
        return Ok(());
    };
    let kept = std::fs::read_dir(logs)?
        .filter_map(Result::ok)
        .map(|e| e.path().join("data"))
        .find(|d| d.is_dir())
        .ok_or_else(|| anyhow::anyhow!("no data dir under {}", logs.display()))?;
    let last = std::fs::read_to_string(record)?
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok()?["at"].as_i64())
        .max()
        .unwrap_or_default();
    let at = chrono::DateTime::from_timestamp_millis(last + 2 * 3_600_000)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);

    let mut cloud = CloudUnderTest::empty(Vec::new(), None)?;
    cloud.share_clock(&at, 1, &now);
    // A copy: the cloud on sled writes to its dir, and the migration reads the day as it
    // ended.
    copy_dir(&kept, &cloud.dir.path().join("data"))?;
    cloud.start()?;
    let on_sled = served(&cloud).await?;
    cloud.stop()?;

    pg.create_database("demo").map_err(anyhow::Error::msg)?;
    cloud.use_postgres(&pg.url("demo"), pg.password())?;
    let config = cloud.path("cloud.toml");
    let out = cloud.command(&[
        "migrate",
        "--from-dir",
        &kept.display().to_string(),
        "--config",
        &config,
    ])?;
    assert!(out.contains("every entry compared"), "{out}");
    cloud.start()?;
    let on_postgres = served(&cloud).await?;
    cloud.stop()?;
    assert_eq!(
        on_sled.keys().collect::<Vec<_>>(),
        on_postgres.keys().collect::<Vec<_>>(),
        "the two clouds were asked different things"
    );
    for (path, sled) in &on_sled {
        if let Some(at) = difference(sled, &on_postgres[path]) {
            panic!("GET {path} differs at {at}");
        }
    }
    let count = |prefix: &str| -> usize {
        on_sled
            .iter()
            .filter(|(p, _)| p.starts_with(prefix))
            .map(|(_, v)| v["items"].as_array().map_or(0, Vec::len))
            .sum()
    };
    let (customers, visits) = (count("/v1/admin/customers"), count("/v1/admin/visits"));
    let campaigns = count("/v1/admin/campaigns");
    anyhow::ensure!(
        on_sled
            .keys()
            .filter(|p| p.starts_with("/v1/admin/reports/campaigns/"))
            .count()
            == campaigns,
        "a campaign report is missing: {:?}",
        on_sled.keys()
    );
    eprintln!(
        "migrated: {} answers the same on sled and on PostgreSQL ({customers} customers, {visits} visits, {campaigns} campaigns)",
        on_sled.len()
    );
    anyhow::ensure!(
        customers > 0 && visits > 0 && campaigns > 0,
        "nothing to compare"
    );
    Ok(())
}

/// Where `a` and `b` first differ: a JSON pointer and the two values there.
fn difference(a: &Value, b: &Value) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys()) {
                let (u, v) = (
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                );
                if let Some(d) = difference(u, v) {
                    return Some(format!("/{k}{d}"));
                }
            }
            None
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (u, v))| Some(format!("/{i}{}", difference(u, v)?))),
        _ if a == b => None,
        _ => Some(format!(": sled {a}, postgres {b}")),
    }
}

/// What `cloud` serves once its stages have caught up: each GET path and its answer.
async fn served(
    cloud: &CloudUnderTest,
) -> anyhow::Result<std::collections::BTreeMap<String, Value>> {
    // The demo's instance held the leases; they run out within a lease time.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while held(cloud, "visits").await? < 8 || held(cloud, "decide").await? < 8 {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "partitions not held:\n{}",
            cloud.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    for stage in ["visits", "decide"] {
        until_caught_up(cloud, stage).await?;
    }
    let mut paths = vec![
        "/v1/admin/stats".to_owned(),
        "/v1/admin/reports/tiers".to_owned(),
        "/v1/admin/campaigns".to_owned(),
    ];
    for store in ["shibuya", "umeda", "online"] {
        paths.push(format!("/v1/admin/reports/stores/{store}"));
        paths.push(format!("/v1/admin/visits?store={store}&limit=1000"));
    }
    let campaigns = cloud.admin("/v1/admin/campaigns").await?;
    for c in campaigns["items"].as_array().into_iter().flatten() {
        if let Some(id) = c["campaign"]["id"].as_str() {
            paths.push(format!("/v1/admin/reports/campaigns/{id}"));
        }
    }
    let mut out = std::collections::BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            None => "/v1/admin/customers?limit=1000".to_owned(),
            Some(a) => format!("/v1/admin/customers?limit=1000&after={a}"),
        };
        let page = cloud.admin(&path).await?;
        after = page["next"].as_str().map(str::to_owned);
        out.insert(path, page);
        if after.is_none() {
            break;
        }
    }
    for path in paths {
        let mut answer = cloud.admin(&path).await?;
        if let Some(stats) = answer.as_object_mut() {
            // Where the log ends, and the statistics stage with it, depends on how long the
            // cloud ran: its ingest writes a clock tick into the log every second.
            stats.remove("log_end");
            stats.remove("stats_position");
        }
        out.insert(path, answer);
    }
    Ok(out)
}

/// Copies the directory `from` (files and directories) to `to`.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()))?;
        } else {
            std::fs::copy(e.path(), to.join(e.file_name()))?;
        }
    }
    Ok(())
}
