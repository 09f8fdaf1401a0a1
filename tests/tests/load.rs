//! `omo-sim load`, small: twenty gateways and 2,000 customers against the real cloud and its
//! embedded broker. Every event is stored and acknowledged, every first visit the cloud could
//! enter gets exactly one offer at the fake LINE server, and the figures and curves are
//! printed. (The rate it sustains is a benchmark: `omo-sim load` with its defaults, not this
//! test.)

use std::time::Duration;

use omo_tests::{binary, cloud::cloud_binary, run_bounded};

#[test]
fn a_small_load_loses_nothing_and_offers_each_entered_customer_once() -> anyhow::Result<()> {
    // The load generator finds omo-cloud beside itself.
    cloud_binary()?;
    let sim = binary("omo-sim", "omo-sim")?;
    let dir = tempfile::tempdir()?;
    let (status, stdout, stderr) = run_bounded(
        &sim,
        &[
            "load",
            "--gateways",
            "20",
            "--customers",
            "2000",
            "--rate",
            "300",
            "--seconds",
            "10",
            "--visit-s",
            "30",
        ],
        dir.path(),
        Duration::from_secs(300),
    )?;
    assert!(
        status.success(),
        "load failed ({status:?}):\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains(", 0 rejected, 0 never acknowledged,"),
        "{stdout}"
    );
    assert!(
        stdout.contains(" 0 missing, 0 customers offered twice"),
        "{stdout}"
    );
    // First visits start over the 40 s cycle, so about half of the 2,000 customers reach the
    // stay that enters their visit before the 40 s of events end.
    let entered: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("offers: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(entered > 600, "{stdout}");
    assert!(
        stdout.contains("CPU, cores over the window: load generator"),
        "{stdout}"
    );
    // The pipeline's own delay, and the curves sampled every 10 s: the stages' lag and the
    // cloud's memory.
    assert!(
        stdout.contains("the pipeline's own delay: from the later of the sighting's arrival"),
        "{stdout}"
    );
    for curve in [
        "visit stage lag, records: 10s ",
        "decision stage lag, transitions: 10s ",
        "omo-cloud RSS, MB: 10s ",
    ] {
        assert!(stdout.contains(curve), "no {curve:?} in:\n{stdout}");
    }
    Ok(())
}
