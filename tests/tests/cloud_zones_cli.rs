//! `omo-cloud zones match ZONES POINTS` as DESIGN.md specifies it, through the real binary.

use omo_tests::cloud::cloud_binary;

#[test]
fn zones_match_prints_one_line_per_point_and_names_bad_features() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let zones = dir.path().join("zones.geojson");
    std::fs::write(
        &zones,
        r#"{"type":"FeatureCollection","features":[
            {"type":"Feature","id":"square","properties":{},"geometry":{"type":"Polygon","coordinates":[[[0,0],[2,0],[2,2],[0,2],[0,0]],[[0.5,0.5],[1.5,0.5],[1.5,1.5],[0.5,1.5],[0.5,0.5]]]}},
            {"type":"Feature","properties":{"id":"circle","radius_m":50000},"geometry":{"type":"Point","coordinates":[2,1]}}
        ]}"#,
    )?;
    let points = dir.path().join("points.csv");
    std::fs::write(&points, "lon,lat\n0,0\n1,1\n2,1\n9,9\n0.5,1\n")?;
    let out = std::process::Command::new(cloud_binary()?)
        .args([
            "zones",
            "match",
            &zones.display().to_string(),
            &points.display().to_string(),
        ])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A vertex; the hole; an edge shared with the circle's centre; nothing; the hole's edge.
    assert_eq!(
        String::from_utf8(out.stdout)?,
        "square\n\ncircle,square\n\nsquare\n"
    );
    let stderr = String::from_utf8(out.stderr)?;
    assert!(
        stderr.contains("zones 2 points 5") && stderr.contains("points_per_s"),
        "{stderr}"
    );

    std::fs::write(
        &zones,
        r#"{"type":"FeatureCollection","features":[
            {"type":"Feature","id":"ok","properties":{},"geometry":{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,0]]]}},
            {"type":"Feature","id":"flat","properties":{},"geometry":{"type":"Polygon","coordinates":[[[0,0],[1,1],[2,2],[0,0]]]}}
        ]}"#,
    )?;
    let out = std::process::Command::new(cloud_binary()?)
        .args([
            "zones",
            "match",
            &zones.display().to_string(),
            &points.display().to_string(),
        ])
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr)?;
    assert!(
        stderr.contains("feature 1 (flat)") && stderr.contains("degenerate"),
        "{stderr}"
    );
    Ok(())
}

/// A Python with shapely and numpy for the dense-mix check: `OMO_PYTHON` (`.ci/run` points it
/// at a venv with `cloud/benches/requirements.txt`), else `python3` when it has them.
fn python_with_shapely() -> Option<std::path::PathBuf> {
    let candidates = std::env::var_os("OMO_PYTHON")
        .map(std::path::PathBuf::from)
        .into_iter()
        .chain([std::path::PathBuf::from("python3")]);
    for python in candidates {
        let ok = std::process::Command::new(&python)
            .args(["-c", "import shapely, numpy"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(python);
        }
    }
    None
}

/// The dense city mix of `cloud/benches/zones_dense.py` (clustered and stacked zones; stars,
/// L and U shapes, holes, multipolygons and circles; points on vertices and edges) matched by
/// the real binary and by shapely's STRtree: not one point may differ.
#[test]
fn the_dense_city_mix_matches_as_shapely_does() -> anyhow::Result<()> {
    let Some(python) = python_with_shapely() else {
        if std::env::var("OMO_SHAPELY_TESTS").as_deref() == Ok("required") {
            anyhow::bail!(
                "the shapely comparison is required but no Python has shapely and numpy \
                 (set OMO_PYTHON to one with cloud/benches/requirements.txt)"
            );
        }
        eprintln!("skipping the shapely comparison: no Python with shapely and numpy");
        return Ok(());
    };
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../cloud/benches/zones_dense.py");
    let dir = tempfile::tempdir()?;
    let d = dir.path().display().to_string();
    let written = std::process::Command::new(&python)
        .arg(&script)
        .args([
            "write", &d, "--zones", "4000", "--points", "40000", "--seed", "11",
        ])
        .output()?;
    assert!(
        written.status.success(),
        "{}",
        String::from_utf8_lossy(&written.stderr)
    );
    let out = std::process::Command::new(cloud_binary()?)
        .args([
            "zones",
            "match",
            &format!("{d}/zones.geojson"),
            &format!("{d}/points.csv"),
        ])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer = dir.path().join("omo.txt");
    std::fs::write(&answer, &out.stdout)?;
    // Not vacuous: many points are in several zones, many in none.
    let text = String::from_utf8(out.stdout)?;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 40_000);
    assert!(lines.iter().filter(|l| l.contains(',')).count() > 1_000);
    assert!(lines.iter().filter(|l| l.is_empty()).count() > 1_000);
    let checked = std::process::Command::new(&python)
        .arg(&script)
        .args(["shapely", &d, "--check", &answer.display().to_string()])
        .output()?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(checked.status.success(), "{report}");
    assert!(
        report.contains("disagreements 0 of 40000 points"),
        "{report}"
    );
    Ok(())
}
