//! `omo-gateway decode` as a user runs it: output, exit codes and the batch mode.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_omo-gateway"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("omo-gateway starts");
    let mut pipe = child.stdin.take().expect("stdin is piped");
    pipe.write_all(stdin.unwrap_or("").as_bytes())
        .expect("stdin accepts input");
    drop(pipe);
    child.wait_with_output().expect("omo-gateway exits")
}

const IBEACON: &str = "0201061aff4c000215e2c56db5dffb48d2b060d0f5a71096e000010002c5";

#[test]
fn prints_one_json_object_per_frame() {
    let out = run(&["decode", IBEACON], None);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "{\"kind\":\"ibeacon\",\"id\":\"ibeacon:E2C56DB5-DFFB-48D2-B060-D0F5A71096E0:1:2\",\"uuid\":\"E2C56DB5-DFFB-48D2-B060-D0F5A71096E0\",\"major\":1,\"minor\":2,\"tx_power\":-59}\n"
    );
}

#[test]
fn exit_codes_say_what_happened() {
    let none = run(&["decode", "020106"], None);
    assert_eq!(none.status.code(), Some(1));
    assert!(none.stdout.is_empty());

    let malformed = run(&["decode", "0201061aff4c00"], None);
    assert_eq!(malformed.status.code(), Some(2));
    let err = String::from_utf8(malformed.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("byte 3"), "{err}");

    let bad_hex = run(&["decode", "02010x"], None);
    assert_eq!(bad_hex.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_hex.stderr).contains("byte 2"));
}

#[test]
fn batch_mode_answers_every_line() {
    let input = format!("{IBEACON}\n020106\n0201\n0201zz\n");
    let out = run(&["decode", "-"], Some(&input));
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0][0]["kind"], "ibeacon");
    assert_eq!(lines[1], serde_json::json!([]));
    assert_eq!(lines[2]["offset"], 0);
    assert_eq!(lines[3]["offset"], 2, "{}", lines[3]);
}
