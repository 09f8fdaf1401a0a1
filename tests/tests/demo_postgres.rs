//! The demo with its cloud on PostgreSQL as two instances behind Mosquitto (`omo-sim demo
//! --postgres URL --instances 2`): every expectation of the shortened day holds. A file of its
//! own, so it never runs beside the other demo (two on two cores starve each other).

use omo_tests::{
    binary, cloud::cloud_binary, gateway_binary, mosquitto_path, run_demo, short_saturday,
};

/// The demo with its cloud on PostgreSQL, as two instances behind Mosquitto (the driver's calls
/// to each in turn): every expectation holds, and the instances shared the pipeline's
/// partitions.
#[test]
fn the_demo_runs_on_postgresql_as_two_instances_behind_mosquitto() -> anyhow::Result<()> {
    let Some(pg) = omo_tests::postgres::cluster()? else {
        return Ok(());
    };
    pg.create_database("demo").map_err(anyhow::Error::msg)?;
    cloud_binary()?;
    gateway_binary()?;
    mosquitto_path()?;
    let sim = binary("omo-sim", "omo-sim")?;
    // A fifth of the other run's speed: two debug-built instances, PostgreSQL, Mosquitto, four
    // gateways and the driver share two cores, and at ×120 about half the visits were pieces
    // of split stays (see the README).
    let text = short_saturday(1000, 60, (100, 20), 0.12);
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("short.toml");
    std::fs::write(&path, &text)?;
    let logs = dir.path().join("logs");
    let url = pg.url("demo");
    let stdout = run_demo(
        &sim,
        dir.path(),
        &[
            "--scenario",
            &path.display().to_string(),
            "--postgres",
            &url,
            "--instances",
            "2",
            "--logs",
            &logs.display().to_string(),
        ],
        &[("OMO_CLOUD_PG_PASSWORD", pg.password())],
    )?;
    assert!(stdout.contains("Every expectation held."), "{stdout}");
    for source in ["gateway", "line", "app"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.contains("by source") && l.contains(source)),
            "no visits from {source}:\n{stdout}"
        );
    }
    // Each instance ran some of the visit stage's partitions through the day.
    let run = std::fs::read_dir(&logs)?
        .next()
        .ok_or_else(|| anyhow::anyhow!("no run directory under {}", logs.display()))??
        .path();
    for log in ["cloud.log", "cloud-2.log"] {
        let text = std::fs::read_to_string(run.join(log))?;
        assert!(
            text.contains("visit stage partition taken on"),
            "{log}:\n{text}"
        );
    }
    Ok(())
}
