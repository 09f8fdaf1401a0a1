//! `omo-cloud zones match ZONES.geojson POINTS.csv` (DESIGN.md): load the fences, build the
//! index the service uses, and print for every `lon,lat` line of POINTS the ids of the fences
//! covering it, sorted and comma-separated (an empty line when none). A header line is
//! allowed. Timings go to the caller, which prints them to stderr.

use std::io::{BufRead, Write};
use std::time::Instant;

use super::geojson::load_fences;
use super::index::FenceIndex;

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Summary {
    pub zones: usize,
    pub points: usize,
    pub build_s: f64,
    pub match_s: f64,
}

impl Summary {
    pub fn points_per_s(&self) -> f64 {
        self.points as f64 / self.match_s.max(1e-9)
    }
}

/// Why a run failed: one line each, naming the feature or the line.
#[derive(Debug, thiserror::Error)]
pub enum MatchError {
    #[error("{}", .0.join("\n"))]
    Zones(Vec<String>),
    #[error("{file} line {line}: {message}")]
    Point {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Parses one `lon,lat` line.
fn parse_point(line: &str) -> Result<(f64, f64), String> {
    let mut parts = line.split(',').map(str::trim);
    let (Some(lon), Some(lat)) = (parts.next(), parts.next()) else {
        return Err("expected lon,lat".into());
    };
    let lon: f64 = lon
        .parse()
        .map_err(|_| format!("longitude {lon:?} is not a number"))?;
    let lat: f64 = lat
        .parse()
        .map_err(|_| format!("latitude {lat:?} is not a number"))?;
    if !(lon.is_finite() && (-180.0..=180.0).contains(&lon)) {
        return Err(format!("longitude {lon} is not in -180..=180"));
    }
    if !(lat.is_finite() && (-90.0..=90.0).contains(&lat)) {
        return Err(format!("latitude {lat} is not in -90..=90"));
    }
    Ok((lon, lat))
}

/// Runs the match over `points` (named `points_name` in errors), writing one line per point.
pub fn run(
    zones_text: &str,
    points: impl BufRead,
    points_name: &str,
    out: &mut impl Write,
) -> Result<Summary, MatchError> {
    let fences = load_fences(zones_text).map_err(MatchError::Zones)?;
    let started = Instant::now();
    let index = FenceIndex::new(fences);
    let build_s = started.elapsed().as_secs_f64();
    let mut coords = Vec::new();
    for (i, line) in points.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match parse_point(&line) {
            Ok(p) => coords.push(p),
            // The first line may be a header such as `lon,lat`.
            Err(_) if i == 0 => {}
            Err(message) => {
                return Err(MatchError::Point {
                    file: points_name.to_owned(),
                    line: i + 1,
                    message,
                })
            }
        }
    }
    let started = Instant::now();
    let mut ids: Vec<&str> = Vec::new();
    for &(lon, lat) in &coords {
        ids.clear();
        ids.extend(
            index
                .covering(lon, lat)
                .into_iter()
                .map(|f| index.fence(f).id.as_str()),
        );
        ids.sort_unstable();
        out.write_all(ids.join(",").as_bytes())?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(Summary {
        zones: index.len(),
        points: coords.len(),
        build_s,
        match_s: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZONES: &str = r#"{"type":"FeatureCollection","features":[
        {"type":"Feature","id":"b-square","properties":{},"geometry":{"type":"Polygon","coordinates":[[[0,0],[2,0],[2,2],[0,2],[0,0]]]}},
        {"type":"Feature","id":"a-circle","properties":{"radius_m":50000},"geometry":{"type":"Point","coordinates":[2,1]}}
    ]}"#;

    #[test]
    fn one_line_per_point_with_sorted_ids() {
        let points = "lon,lat\n1,1\n2,1.2\n50,50\n\n2.3,1\n";
        let mut out = Vec::new();
        let s = run(ZONES, points.as_bytes(), "p.csv", &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "b-square\na-circle,b-square\n\na-circle\n"
        );
        assert_eq!((s.zones, s.points), (2, 4));
    }

    #[test]
    fn a_bad_line_is_named() {
        let mut out = Vec::new();
        let e = run(ZONES, "1,1\n1,north\n".as_bytes(), "p.csv", &mut out).unwrap_err();
        assert_eq!(
            e.to_string(),
            "p.csv line 2: latitude \"north\" is not a number"
        );
        let e = run(ZONES, "1,1\n200,1\n".as_bytes(), "p.csv", &mut out).unwrap_err();
        assert!(
            e.to_string().starts_with("p.csv line 2: longitude 200"),
            "{e}"
        );
    }
}
