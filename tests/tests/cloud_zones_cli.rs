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
