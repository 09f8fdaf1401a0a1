//! `omo-zones-files DIR [--zones 100000] [--points 1000000] [--seed 42]`: writes seeded synthetic
//! geofences (`DIR/zones.geojson`, half polygons, half circles) and GPS points
//! (`DIR/points.csv`) for measuring `omo-cloud zones match` on files:
//!
//! ```sh
//! target/release/omo-zones-files /tmp/zones
//! target/release/omo-cloud zones match /tmp/zones/zones.geojson /tmp/zones/points.csv > /dev/null
//! ```

use std::io::Write;

use omo_cloud::zones::synthetic;
use omo_tests::load::arg;

fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .filter(|a| !a.starts_with("--"))
        .ok_or_else(|| {
            anyhow::anyhow!("usage: omo-zones-files DIR [--zones N] [--points N] [--seed S]")
        })?;
    let zones = arg("--zones", 100_000)? as usize;
    let points = arg("--points", 1_000_000)? as usize;
    let seed = arg("--seed", 42)?;
    let dir = std::path::Path::new(&dir);
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("zones.geojson"),
        synthetic::fences(zones, seed).to_string(),
    )?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join("points.csv"))?);
    writeln!(out, "lon,lat")?;
    for (lon, lat) in synthetic::points(points, seed) {
        writeln!(out, "{lon:.7},{lat:.7}")?;
    }
    out.flush()?;
    println!("{zones} zones and {points} points in {}", dir.display());
    Ok(())
}
