//! `omo-gateway run` refusing to start: a bad config names every problem; no BlueZ explains
//! itself and how to run without it.

use std::process::Command;

fn run(config: &str) -> std::process::Output {
    run_with(config, &[])
}

fn run_with(config: &str, env: &[(&str, &str)]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    std::fs::write(&path, config).unwrap();
    Command::new(env!("CARGO_BIN_EXE_omo-gateway"))
        .args(["run", "--config", path.to_str().unwrap()])
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

const CONFIG: &str = r#"
[identity]
store = "s1"
gateway = "g1"
[broker]
url = "mqtt://127.0.0.1:1"
password = "x"
signing_key = "0000000000000000000000000000000000000000000000000000000000000000"
[data]
dir = "DATA"
"#;

#[test]
fn bad_config_lists_every_problem_with_file_and_key() {
    let out = run(&CONFIG
        .replace(
            "url = \"mqtt://127.0.0.1:1\"",
            "url = \"http://x\"\ncolour = 1",
        )
        .replace("DATA", "/tmp/x"));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("gw.toml:broker.colour: unknown key"), "{err}");
    assert!(
        err.contains("gw.toml:broker.url: \"http://x\" must start with mqtt:// or mqtts://"),
        "{err}"
    );
}

#[test]
fn missing_bluez_is_one_clear_line() {
    let data = tempfile::tempdir().unwrap();
    // Point D-Bus at a socket that does not exist, as on a machine without BlueZ.
    let out = run_with(
        &CONFIG.replace("DATA", data.path().to_str().unwrap()),
        &[(
            "DBUS_SYSTEM_BUS_ADDRESS",
            "unix:path=/nonexistent/omo-test-bus",
        )],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.contains("cannot reach BlueZ") && last.contains("scan.source = \"replay\""),
        "{err}"
    );
}

#[test]
fn a_missing_replay_file_stops_the_gateway_at_start_with_its_name() {
    let data = tempfile::tempdir().unwrap();
    let config = format!(
        "{}[scan]\nsource = \"replay\"\nreplay_file = \"/nonexistent/visit.jsonl\"\n",
        CONFIG.replace("DATA", data.path().to_str().unwrap())
    );
    let out = run(&config);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("opening scan.replay_file /nonexistent/visit.jsonl"),
        "{err}"
    );
}
