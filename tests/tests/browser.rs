//! The dashboard in headless Chromium: `omo-sim demo --keep-running` plays a short store day
//! (the cloud with its embedded broker, gateways, fake LINE and FCM), then
//! `tests/browser/dashboard.test.mjs` (Node's test runner with playwright-core driving
//! Debian's `chromium`) logs in, checks the overview against the API, opens a campaign's lift
//! interval and sample sizes, pushes a gateway config and sees its ack, and checks that a
//! wrong token reaches only the login form; then opens every page in Japanese and English on a
//! phone and a desktop: no horizontal overflow, no console error or failed request, no word
//! left untranslated, chart text of 11 px or more, and no serious or critical axe-core
//! violation. Screenshots of every page go to `target/dashboard-screenshots/`.
//!
//! Needs `node`, `chromium` and `npm ci --prefix tests/browser`; `.ci/run` installs them and
//! sets `OMO_BROWSER_TESTS=required`. Without them, and not required, the test says so and
//! passes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use omo_tests::{
    binary, cloud::cloud_binary, gateway_binary, run_bounded_with, short_saturday, Process,
};

fn chromium() -> PathBuf {
    std::env::var_os("OMO_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// What is missing to run the browser tests, if anything.
fn missing(browser_dir: &Path) -> Option<String> {
    if !chromium().exists() {
        return Some(format!(
            "{} (apt-get install chromium)",
            chromium().display()
        ));
    }
    if std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_err()
    {
        return Some("node".into());
    }
    if !browser_dir.join("node_modules/playwright-core").exists() {
        return Some("playwright-core (npm ci --prefix tests/browser)".into());
    }
    None
}

#[test]
fn the_dashboard_in_headless_chromium_during_a_short_store_day() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let browser_dir = root.join("tests/browser");
    if let Some(what) = missing(&browser_dir) {
        if std::env::var("OMO_BROWSER_TESTS").as_deref() == Ok("required") {
            anyhow::bail!("the browser tests are required but {what} is missing");
        }
        eprintln!("skipping the browser tests: {what} is missing");
        return Ok(());
    }
    cloud_binary()?;
    gateway_binary()?;
    let sim = binary("omo-sim", "omo-sim")?;
    let text = short_saturday(600, 600, (50, 10), 0.2);
    let dir = tempfile::tempdir()?;
    let scenario = dir.path().join("short.toml");
    std::fs::write(&scenario, &text)?;
    let mut demo = Process::start(
        &sim,
        &[
            "demo",
            "--scenario",
            &scenario.display().to_string(),
            "--keep-running",
        ],
        &[],
    )?;
    // The day runs; then the demo says where the cloud keeps running.
    let deadline = Instant::now() + Duration::from_secs(600);
    let (url, token, marketer) = loop {
        let log = demo.log_text();
        if let Some(line) = log
            .lines()
            .find(|l| l.contains("the cloud keeps running at "))
        {
            let rest = line
                .split("the cloud keeps running at ")
                .nth(1)
                .unwrap_or("");
            let url = rest.split_whitespace().next().unwrap_or("").to_owned();
            let after = |label: &str| {
                rest.split(label)
                    .nth(1)
                    .and_then(|t| t.split([',', ')']).next())
                    .unwrap_or("")
                    .to_owned()
            };
            break (url, after("(admin token "), after("marketer token "));
        }
        if let Ok(Some(status)) = demo.try_status() {
            anyhow::bail!("the demo exited ({status}) before the browser tests:\n{log}");
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the demo did not finish its day:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let shots = root.join("target/dashboard-screenshots");
    let test_file = browser_dir.join("dashboard.test.mjs");
    let result = run_bounded_with(
        Path::new("node"),
        &[
            "--test",
            "--test-reporter=spec",
            &test_file.display().to_string(),
        ],
        dir.path(),
        Duration::from_secs(300),
        &[
            ("OMO_URL", url.as_str()),
            ("OMO_ADMIN_TOKEN", token.as_str()),
            ("OMO_MARKETER_TOKEN", marketer.as_str()),
            ("OMO_SCREENSHOTS", &shots.display().to_string()),
            ("OMO_CHROMIUM", &chromium().display().to_string()),
        ],
    );
    // Ctrl-C ends the demo's wait; it stops its processes.
    demo.signal("INT")?;
    let stopped = demo.wait_exit(Duration::from_secs(30));
    let (status, stdout, stderr) = result?;
    assert!(
        status.success(),
        "the browser tests failed ({status}):\n{stdout}\n{stderr}\n--- demo:\n{}",
        demo.log_text()
    );
    eprintln!("{stdout}");
    stopped?;
    let mut pages: Vec<String> = [
        "login",
        "overview",
        "overview-phone",
        "stores",
        "store",
        "gateways",
        "gateway",
        "campaigns",
        "campaign",
        "customers",
        "composer",
        "campaign-lifecycle",
        "customer-erased",
        "store-map",
    ]
    .map(String::from)
    .into();
    for page in [
        "overview",
        "stores",
        "store",
        "gateways",
        "gateway",
        "campaigns",
        "campaign",
        "customers",
        "not-found",
        "composer",
        "composer-edit",
    ] {
        for lang in ["ja", "en"] {
            for device in ["phone", "desktop"] {
                pages.push(format!("{page}-{lang}-{device}"));
            }
        }
    }
    for page in pages {
        let png = shots.join(format!("{page}.png"));
        anyhow::ensure!(
            std::fs::metadata(&png).is_ok_and(|m| m.len() > 1000),
            "no screenshot {}",
            png.display()
        );
    }
    Ok(())
}
