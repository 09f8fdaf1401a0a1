//! The one-command demo, shortened for CI: `omo-sim demo` with the bundled scenario cut to three
//! hours and a thousand shoppers starts the fakes, the cloud and the gateways as processes,
//! drives the day through the scenario's faults at the fake servers, prints the report and exits
//! 0 because the (relaxed) expectations hold; the run record it writes replays to the same
//! visits. The first run logs at debug level (`--logs`), and no log line of the cloud or a
//! gateway at info level or above carries a LINE user id, member id, push token, EID key or
//! GPS coordinate of the scenario's shoppers.

use std::collections::HashSet;

use omo_tests::{binary, cloud::cloud_binary, gateway_binary, run_demo, short_saturday};

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
