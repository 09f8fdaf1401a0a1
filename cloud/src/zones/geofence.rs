//! GPS geofences: circles (centre + radius, great-circle distance) and polygons with holes
//! (covers semantics: a point on an edge or vertex is inside), and the accuracy rule that keeps
//! noisy fixes near an edge from flapping.
//!
//! The accuracy rule, for a fix at P with accuracy radius A (metres):
//! - A above the configured limit: no decision ([`Match::Unknown`]) — it can neither enter nor
//!   exit a fence;
//! - the whole accuracy circle inside the fence (P covered and at least A from its boundary):
//!   [`Match::Inside`];
//! - the whole accuracy circle outside (P not covered and at least A from the fence): [`Match::Outside`];
//! - otherwise [`Match::Unknown`]: the visit keeps its current state.
//!
//! With A = 0 this is exact covers semantics, which is what `omo-cloud zones match` uses.

use geo::{
    Area, BoundingRect, Coord, Covers, Distance, Haversine, LineString, MultiPolygon, Point,
    Polygon,
};
use omo_device_config::site;

use super::Match;

/// Mean Earth radius (GRS80), metres — the one geo's haversine uses.
const EARTH_RADIUS_M: f64 = 6_371_008.8;
const M_PER_DEG: f64 = EARTH_RADIUS_M * std::f64::consts::PI / 180.0;

/// A fence's shape.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    Circle { centre: Point, radius_m: f64 },
    Area(MultiPolygon),
}

/// Why a geofence could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct FenceError {
    pub key: String,
    pub message: String,
}

fn fence_error(key: &str, message: impl Into<String>) -> FenceError {
    FenceError {
        key: key.to_owned(),
        message: message.into(),
    }
}

impl Shape {
    /// A circle, checked.
    pub fn circle(lon: f64, lat: f64, radius_m: f64, key: &str) -> Result<Shape, FenceError> {
        if !(lon.is_finite() && (-180.0..=180.0).contains(&lon)) {
            return Err(fence_error(
                key,
                format!("longitude {lon} is not in -180..=180"),
            ));
        }
        if !(lat.is_finite() && (-90.0..=90.0).contains(&lat)) {
            return Err(fence_error(
                key,
                format!("latitude {lat} is not in -90..=90"),
            ));
        }
        if !(radius_m.is_finite() && radius_m > 0.0 && radius_m <= site::MAX_RADIUS_M) {
            return Err(fence_error(
                key,
                format!("radius {radius_m} m is not in (0, {}]", site::MAX_RADIUS_M),
            ));
        }
        Ok(Shape::Circle {
            centre: Point::new(lon, lat),
            radius_m,
        })
    }

    /// Polygons from GeoJSON (`Polygon` or `MultiPolygon`), checked: rings closed, at least
    /// four positions, coordinates in range, and every polygon with a non-zero area.
    pub fn area(geometry: &site::Geometry, key: &str) -> Result<Shape, FenceError> {
        let polygons = geometry
            .polygons(key)
            .map_err(|p| fence_error(&p.key, p.message))?;
        Shape::from_rings(polygons, geometry.kind == "MultiPolygon", key)
    }

    /// Polygons from rings already checked as [`site::Geometry::polygons`] checks them
    /// (closed, at least four positions, coordinates in range); refused only when a polygon
    /// encloses no area. `multi`: they came from a MultiPolygon (for the error's key).
    pub fn from_rings(
        polygons: Vec<site::Polygon>,
        multi: bool,
        key: &str,
    ) -> Result<Shape, FenceError> {
        let mut out = Vec::with_capacity(polygons.len());
        for (i, rings) in polygons.into_iter().enumerate() {
            let mut rings = rings.into_iter().map(|r| {
                LineString::from(
                    r.into_iter()
                        .map(|[x, y]| Coord { x, y })
                        .collect::<Vec<_>>(),
                )
            });
            let exterior = rings
                .next()
                .ok_or_else(|| fence_error(key, "has no exterior ring"))?;
            let polygon = Polygon::new(exterior, rings.collect());
            if Polygon::new(polygon.exterior().clone(), vec![]).unsigned_area() == 0.0 {
                let at = if multi {
                    format!("{key}.coordinates[{i}]")
                } else {
                    format!("{key}.coordinates")
                };
                return Err(fence_error(
                    &at,
                    "is degenerate: its exterior ring encloses no area",
                ));
            }
            out.push(polygon);
        }
        Ok(Shape::Area(MultiPolygon::new(out)))
    }

    /// Bounding boxes `[min lon, min lat, max lon, max lat]` that together cover the shape; a
    /// circle across the 180° meridian gets two, one near a pole a whole band of longitudes.
    pub fn boxes(&self) -> Vec<[f64; 4]> {
        match self {
            Shape::Area(mp) => mp
                .bounding_rect()
                .map(|r| vec![[r.min().x, r.min().y, r.max().x, r.max().y]])
                .unwrap_or_default(),
            Shape::Circle { centre, radius_m } => circle_boxes(centre.x(), centre.y(), *radius_m),
        }
    }

    /// How a fix at `p` with accuracy `accuracy_m` relates to the shape (module doc).
    pub fn relate(&self, p: Point, accuracy_m: f64) -> Match {
        match self {
            Shape::Circle { centre, radius_m } => {
                circle_match(Haversine.distance(*centre, p), *radius_m, accuracy_m)
            }
            Shape::Area(mp) => area_match(mp.covers(&p), accuracy_m, |enough| {
                distance_to_boundary_m(mp, p, enough)
            }),
        }
    }
}

/// The accuracy rule for a circle, with `d` the fix's great-circle distance from its centre.
pub(super) fn circle_match(d: f64, radius_m: f64, accuracy_m: f64) -> Match {
    if d + accuracy_m <= radius_m {
        Match::Inside
    } else if d - accuracy_m > radius_m {
        Match::Outside
    } else {
        Match::Unknown
    }
}

/// Exact covers semantics: [`Match::Inside`] when covered, else [`Match::Outside`].
pub(super) fn inside_or_outside(covered: bool) -> Match {
    if covered {
        Match::Inside
    } else {
        Match::Outside
    }
}

/// The accuracy rule for polygons, with `covered` whether they cover the fix and
/// `to_boundary(enough)` its distance in metres to their nearest ring (it may stop early once
/// below `enough`); exact covers semantics at accuracy 0 or less.
pub(super) fn area_match(
    covered: bool,
    accuracy_m: f64,
    to_boundary: impl FnOnce(f64) -> f64,
) -> Match {
    if accuracy_m <= 0.0 {
        return inside_or_outside(covered);
    }
    match (covered, to_boundary(accuracy_m) >= accuracy_m) {
        (true, true) => Match::Inside,
        (false, true) => Match::Outside,
        _ => Match::Unknown,
    }
}

/// Boxes covering a circle of `radius_m` around (lon, lat), in degrees.
pub fn circle_boxes(lon: f64, lat: f64, radius_m: f64) -> Vec<[f64; 4]> {
    let dlat = radius_m / M_PER_DEG;
    let (min_lat, max_lat) = (lat - dlat, lat + dlat);
    if min_lat <= -90.0 || max_lat >= 90.0 {
        // The circle reaches a pole: every longitude.
        return vec![[-180.0, min_lat.max(-90.0), 180.0, max_lat.min(90.0)]];
    }
    // The widest longitude span is at the latitude farthest from the equator.
    let widest = min_lat.abs().max(max_lat.abs()).to_radians().cos();
    let dlon = (dlat / widest.max(1e-9)).min(180.0);
    let (min_lon, max_lon) = (lon - dlon, lon + dlon);
    if max_lon - min_lon >= 360.0 {
        vec![[-180.0, min_lat, 180.0, max_lat]]
    } else if min_lon < -180.0 {
        vec![
            [min_lon + 360.0, min_lat, 180.0, max_lat],
            [-180.0, min_lat, max_lon, max_lat],
        ]
    } else if max_lon > 180.0 {
        vec![
            [min_lon, min_lat, 180.0, max_lat],
            [-180.0, min_lat, max_lon - 360.0, max_lat],
        ]
    } else {
        vec![[min_lon, min_lat, max_lon, max_lat]]
    }
}

/// Distance in metres from `p` to the nearest ring of `mp` (exterior or hole).
fn distance_to_boundary_m(mp: &MultiPolygon, p: Point, enough: f64) -> f64 {
    let segments = mp.0.iter().flat_map(|polygon| {
        std::iter::once(polygon.exterior())
            .chain(polygon.interiors())
            .flat_map(|ring| ring.0.windows(2).map(|w| (w[0], w[1])))
    });
    distance_to_segments_m(segments, p, enough)
}

/// Distance in metres from `p` to the nearest of `segments`, on a local equirectangular
/// projection around `p` — exact enough at the scale of GPS accuracy. Stops early once a
/// segment is nearer than `enough`.
pub(super) fn distance_to_segments_m(
    segments: impl Iterator<Item = (Coord, Coord)>,
    p: Point,
    enough: f64,
) -> f64 {
    let kx = p.y().to_radians().cos() * M_PER_DEG;
    let local = |c: &Coord| ((c.x - p.x()) * kx, (c.y - p.y()) * M_PER_DEG);
    let mut best = f64::INFINITY;
    for (a, b) in segments {
        best = best.min(segment_distance(local(&a), local(&b)));
        if best < enough {
            return best;
        }
    }
    best
}

/// Distance from the origin to the segment a–b.
fn segment_distance(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = dx * dx + dy * dy;
    let t = if len2 == 0.0 {
        0.0
    } else {
        (-(a.0 * dx + a.1 * dy) / len2).clamp(0.0, 1.0)
    };
    let (x, y) = (a.0 + t * dx, a.1 + t * dy);
    (x * x + y * y).sqrt()
}

/// Metres per degree of latitude (and of longitude at the equator).
pub fn metres_per_degree() -> f64 {
    M_PER_DEG
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn square(lon: f64, lat: f64, side: f64) -> site::Geometry {
        site::Geometry {
            kind: "Polygon".into(),
            coordinates: json!([[
                [lon, lat],
                [lon + side, lat],
                [lon + side, lat + side],
                [lon, lat + side],
                [lon, lat]
            ]]),
        }
    }

    fn p(lon: f64, lat: f64) -> Point {
        Point::new(lon, lat)
    }

    #[test]
    fn edges_and_vertices_are_inside() {
        let s = Shape::area(&square(0.0, 0.0, 1.0), "f").unwrap();
        assert_eq!(s.relate(p(0.0, 0.0), 0.0), Match::Inside, "vertex");
        assert_eq!(s.relate(p(0.5, 0.0), 0.0), Match::Inside, "edge");
        assert_eq!(s.relate(p(1.0, 0.5), 0.0), Match::Inside, "edge");
        assert_eq!(s.relate(p(0.5, 0.5), 0.0), Match::Inside);
        assert_eq!(s.relate(p(1.0000001, 0.5), 0.0), Match::Outside);
    }

    #[test]
    fn holes_are_outside_and_their_edges_inside() {
        let g = site::Geometry {
            kind: "Polygon".into(),
            coordinates: json!([
                [[0.0, 0.0], [4.0, 0.0], [4.0, 4.0], [0.0, 4.0], [0.0, 0.0]],
                [[1.0, 1.0], [3.0, 1.0], [3.0, 3.0], [1.0, 3.0], [1.0, 1.0]]
            ]),
        };
        let s = Shape::area(&g, "f").unwrap();
        assert_eq!(s.relate(p(2.0, 2.0), 0.0), Match::Outside, "in the hole");
        assert_eq!(
            s.relate(p(1.0, 2.0), 0.0),
            Match::Inside,
            "on the hole's edge"
        );
        assert_eq!(s.relate(p(0.5, 2.0), 0.0), Match::Inside);
    }

    #[test]
    fn multipolygons_match_any_part() {
        let g = site::Geometry {
            kind: "MultiPolygon".into(),
            coordinates: json!([
                [[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]],
                [[[10.0, 10.0], [11.0, 10.0], [11.0, 11.0], [10.0, 10.0]]]
            ]),
        };
        let s = Shape::area(&g, "f").unwrap();
        assert_eq!(s.relate(p(10.9, 10.1), 0.0), Match::Inside);
        assert_eq!(s.relate(p(5.0, 5.0), 0.0), Match::Outside);
    }

    #[test]
    fn degenerate_and_empty_polygons_are_refused_by_key() {
        let flat = site::Geometry {
            kind: "Polygon".into(),
            coordinates: json!([[[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [0.0, 0.0]]]),
        };
        let e = Shape::area(&flat, "features[3]").unwrap_err();
        assert!(e.to_string().starts_with("features[3].coordinates"), "{e}");
        assert!(e.message.contains("degenerate"), "{e}");
        let empty = site::Geometry {
            kind: "MultiPolygon".into(),
            coordinates: json!([]),
        };
        assert!(Shape::area(&empty, "features[0]")
            .unwrap_err()
            .message
            .contains("no polygons"));
        let open = site::Geometry {
            kind: "Polygon".into(),
            coordinates: json!([[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]]),
        };
        assert!(Shape::area(&open, "f")
            .unwrap_err()
            .message
            .contains("not closed"));
        assert!(Shape::circle(0.0, 0.0, 0.0, "f").is_err());
        assert!(Shape::circle(181.0, 0.0, 10.0, "f").is_err());
    }

    #[test]
    fn circles_use_great_circle_distance_and_wrap_the_meridian() {
        let c = Shape::circle(179.9995, 0.0, 200.0, "f").unwrap();
        // 0.001° of longitude at the equator is about 111 m: across the meridian, inside.
        assert_eq!(c.relate(p(-179.9995, 0.0), 0.0), Match::Inside);
        assert_eq!(c.boxes().len(), 2);
        assert_eq!(c.relate(p(-179.99, 0.0), 0.0), Match::Outside);
        // Near the pole every longitude is close.
        let polar = Shape::circle(0.0, 89.999, 500.0, "f").unwrap();
        assert_eq!(polar.relate(p(180.0, 89.999), 0.0), Match::Inside);
        assert_eq!(polar.boxes(), vec![[-180.0, polar_min(), 180.0, 90.0]]);
    }

    fn polar_min() -> f64 {
        89.999 - 500.0 / M_PER_DEG
    }

    #[test]
    fn a_vague_fix_near_an_edge_decides_nothing() {
        // A 50 m circle; a fix 60 m from its centre.
        let c = Shape::circle(139.7, 35.66, 50.0, "f").unwrap();
        let beside = p(
            139.7 + 60.0 / (M_PER_DEG * 35.66f64.to_radians().cos()),
            35.66,
        );
        assert_eq!(
            c.relate(beside, 200.0),
            Match::Unknown,
            "200 m accuracy beside a 50 m fence"
        );
        assert_eq!(c.relate(beside, 5.0), Match::Outside);
        assert_eq!(c.relate(p(139.7, 35.66), 20.0), Match::Inside);
        assert_eq!(c.relate(p(139.7, 35.66), 60.0), Match::Unknown);
        let s = Shape::area(&square(0.0, 0.0, 0.01), "f").unwrap();
        let centre = p(0.005, 0.005);
        assert_eq!(
            s.relate(centre, 100.0),
            Match::Inside,
            "the centre is ~550 m from every edge"
        );
        assert_eq!(s.relate(centre, 1000.0), Match::Unknown);
        assert_eq!(s.relate(p(0.0101, 0.005), 5.0), Match::Outside);
        assert_eq!(s.relate(p(0.0101, 0.005), 50.0), Match::Unknown);
    }

    #[test]
    fn local_distances_agree_with_haversine() {
        let s = Shape::area(&square(139.70, 35.66, 0.01), "f").unwrap();
        let Shape::Area(mp) = &s else { unreachable!() };
        let q = p(139.705, 35.6585);
        let ours = distance_to_boundary_m(mp, q, 0.0);
        let theirs = Haversine.distance(q, p(139.705, 35.66));
        assert!((ours - theirs).abs() < 0.5, "{ours} vs {theirs}");
    }
}
