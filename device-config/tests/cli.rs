//! `omo-config` as an operator runs it: validate's output and exit codes, provision's files
//! and their permissions, provision-cloud, eid.

use std::process::{Command, Output};

fn omo_config(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_omo-config"))
        .args(args)
        .output()
        .expect("omo-config runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn validate_prints_every_problem_as_file_key_reason() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("gw.toml");
    let example = include_str!("../examples/gateway.toml");
    std::fs::write(
        &bad,
        example
            .replace("keep_alive_s = 30", "keep_alive_s = 1")
            .replace("[presence]", "[presense]")
            .replace("stay_interval_s = 60", "stay_interval_s = 0"),
    )
    .unwrap();
    let out = omo_config(&["validate", bad.to_str().unwrap(), "examples/site.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let file = bad.display().to_string();
    assert!(
        stdout.contains(&format!("{file}:presense: unknown key")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "{file}:broker.keep_alive_s: 1 s is not in 5..=600"
        )),
        "{stdout}"
    );
    assert!(stdout.contains("examples/site.toml: ok (site)"), "{stdout}");
    let ok = omo_config(&["validate", "examples/gateway.toml", "examples/site.toml"]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stdout));
}

#[test]
fn validate_names_syntax_errors_and_unreadable_files() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("site.json");
    std::fs::write(&broken, "{\"stores\": [\n  {\"id\": }\n]}").unwrap();
    let out = omo_config(&["validate", broken.to_str().unwrap(), "/nonexistent/x.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with(&format!("{}:line 2: ", broken.display())),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("/nonexistent/x.toml: cannot read"),
        "{stdout}"
    );
}

#[test]
fn provision_writes_secret_files_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().to_str().unwrap();
    let args = [
        "provision",
        "--store",
        "s1",
        "--gateway",
        "gw-1",
        "--out",
        out_dir,
        "--broker-url",
        "mqtts://broker.example:8883",
    ];
    let out = omo_config(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("gw-1:$7$101$"), "{stdout}");
    assert!(stdout.contains("user gw-1\ntopic write omo/v1/stores/s1/gateways/gw-1/presence\n"));
    assert!(stdout.contains("[[gateways]]\nid = \"gw-1\""));
    let check = omo_config(&["validate", &format!("{out_dir}/gw-1.toml")]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stdout));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for name in ["gw-1.toml", "gw-1.registry.toml"] {
            let mode = std::fs::metadata(dir.path().join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
    }
    let again = omo_config(&args);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again.stderr).contains("exists; pass --force"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // --force on a file someone loosened still leaves it private.
        let path = dir.path().join("gw-1.toml");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut forced = args.to_vec();
        forced.push("--force");
        assert_eq!(omo_config(&forced).status.code(), Some(0));
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}

#[test]
fn provision_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().to_str().unwrap();
    let bad_id = omo_config(&[
        "provision",
        "--store",
        "s/1",
        "--gateway",
        "g",
        "--out",
        out_dir,
        "--broker-url",
        "mqtt://h:1883",
    ]);
    assert_eq!(bad_id.status.code(), Some(1));
    assert!(
        text(&bad_id.stderr).contains("--store"),
        "{}",
        text(&bad_id.stderr)
    );
    let bad_url = omo_config(&[
        "provision",
        "--store",
        "s1",
        "--gateway",
        "g",
        "--out",
        out_dir,
        "--broker-url",
        "http://h",
    ]);
    assert_eq!(bad_url.status.code(), Some(1));
    assert!(
        text(&bad_url.stderr).contains("broker.url"),
        "{}",
        text(&bad_url.stderr)
    );
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing written"
    );
}

#[test]
fn provision_cloud_and_eid() {
    let out = omo_config(&["provision-cloud"]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("omo-cloud:$7$101$"), "{stdout}");
    assert!(stdout.contains("topic read omo/v1/stores/+/gateways/+/presence\n"));
    let eid = omo_config(&[
        "eid",
        "--identity-key",
        "00000000000000000000000000000000",
        "--exponent",
        "0",
        "--time",
        "0",
    ]);
    assert_eq!(text(&eid.stdout), "fa41c4405b14fea0\n");
    let bad = omo_config(&[
        "eid",
        "--identity-key",
        "00",
        "--exponent",
        "0",
        "--time",
        "0",
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(text(&bad.stderr).contains("32 hex digits"));
    let bad = omo_config(&[
        "eid",
        "--identity-key",
        "00000000000000000000000000000000",
        "--exponent",
        "16",
        "--time",
        "0",
    ]);
    assert!(text(&bad.stderr).contains("out of range 0..=15"));
}
