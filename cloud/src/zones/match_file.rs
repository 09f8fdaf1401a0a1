//! `omo-cloud zones match ZONES.geojson POINTS.csv` (DESIGN.md): load the fences, build the
//! index the service uses, and print for every `lon,lat` line of POINTS the ids of the fences
//! covering it, sorted and comma-separated (an empty line when none). A header line is
//! allowed. Timings go to the caller, which prints them to stderr.

use std::io::{BufRead, Write};
use std::time::Instant;

use super::geojson::load_fences;
use super::index::FenceIndex;
use super::packed::{hilbert_key, union, EMPTY};

/// What a run measured: the time to read the zones (parse and build every fence), to build
/// the index, to read the points, and to match them (writing the answer included).
#[derive(Debug, Clone)]
pub struct Summary {
    pub zones: usize,
    pub points: usize,
    pub read_zones_s: f64,
    pub build_s: f64,
    pub read_points_s: f64,
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

/// Runs the match of `zones` (GeoJSON, read one feature at a time) over `points` (named
/// `points_name` in errors), writing one line per point.
pub fn run(
    zones: &[u8],
    points: impl BufRead,
    points_name: &str,
    out: &mut impl Write,
) -> Result<Summary, MatchError> {
    let started = Instant::now();
    let fences = load_fences(zones).map_err(MatchError::Zones)?;
    let read_zones_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let index = FenceIndex::new(fences);
    let build_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
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
    let read_points_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    // Each fence's place in id order: a point's fences sort by these numbers, in id order,
    // without comparing strings.
    let mut by_id: Vec<usize> = (0..index.len()).collect();
    by_id.sort_unstable_by(|&a, &b| index.fence(a).id.cmp(&index.fence(b).id));
    let mut rank = vec![0u32; index.len()];
    for (r, &f) in by_id.iter().enumerate() {
        rank[f] = r as u32;
    }
    // Points are matched in the order of a Hilbert curve, so neighbours on the map follow
    // each other and find the index's nodes and fences still in the CPU's cache; the answers
    // are written in the file's order.
    let extent = coords
        .iter()
        .fold(EMPTY, |e, &(x, y)| union(e, [x, y, x, y]));
    let mut order: Vec<u32> = (0..coords.len() as u32).collect();
    order.sort_by_cached_key(|&i| {
        let (x, y) = coords[i as usize];
        hilbert_key(x, y, extent)
    });
    // Point i's fences are found[spans[i].0..][..spans[i].1], by rank.
    let mut spans = vec![(0u32, 0u32); coords.len()];
    let mut found: Vec<u32> = Vec::with_capacity(coords.len() * 2);
    let mut covering = Vec::new();
    for &i in &order {
        let (lon, lat) = coords[i as usize];
        index.covering_into(lon, lat, &mut covering);
        let start = found.len();
        found.extend(covering.iter().map(|&f| rank[f]));
        found[start..].sort_unstable();
        spans[i as usize] = (start as u32, (found.len() - start) as u32);
    }
    for &(start, len) in &spans {
        for (k, &r) in found[start as usize..][..len as usize].iter().enumerate() {
            if k > 0 {
                out.write_all(b",")?;
            }
            out.write_all(index.fence(by_id[r as usize]).id.as_bytes())?;
        }
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(Summary {
        zones: index.len(),
        points: coords.len(),
        read_zones_s,
        build_s,
        read_points_s,
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
        let s = run(ZONES.as_bytes(), points.as_bytes(), "p.csv", &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "b-square\na-circle,b-square\n\na-circle\n"
        );
        assert_eq!((s.zones, s.points), (2, 4));
    }

    #[test]
    fn a_bad_line_is_named() {
        let mut out = Vec::new();
        let e = run(
            ZONES.as_bytes(),
            "1,1\n1,north\n".as_bytes(),
            "p.csv",
            &mut out,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "p.csv line 2: latitude \"north\" is not a number"
        );
        let e = run(
            ZONES.as_bytes(),
            "1,1\n200,1\n".as_bytes(),
            "p.csv",
            &mut out,
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with("p.csv line 2: longitude 200"),
            "{e}"
        );
    }
}
