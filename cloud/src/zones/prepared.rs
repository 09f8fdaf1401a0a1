//! Fences prepared for fast point tests that answer exactly as [`Shape::relate`] does.
//!
//! - **Polygons**: every ring's edges in one flat list, and for polygons with more than a few
//!   edges a band index: the polygon's latitude range cut into bands, each listing the edges
//!   that reach into it, so a point tests only the edges of its band. Each ring's winding
//!   number is counted with geo's edge rules and the exact orientation predicate geo's `covers`
//!   uses (robust's `orient2d`), so a self-intersecting ring answers as geo does too; a point on
//!   an edge or a vertex is covered.
//! - **Circles**: the distance in a local projection around the centre decides a point that is
//!   clearly inside or clearly outside; only a point within the projection's error of the rim
//!   (a band bounded at preparation from the radius and the latitude) gets the exact
//!   great-circle distance. Circles near a pole always get the exact distance.

use geo::{Coord, Covers, Distance, Haversine, Point};
use robust::orient2d;

use super::geofence::{
    area_match, circle_match, distance_to_segments_m, inside_or_outside, metres_per_degree, Shape,
};
use super::packed::{union, EMPTY};
use super::Match;

/// A polygon with more edges than this gets a band index.
const BAND_ABOVE_EDGES: usize = 12;
/// A band index may list this many entries per edge (edges reaching across many bands, as in
/// a sawtooth, would otherwise make it quadratic); past it the polygon scans its edges.
const MAX_BAND_ENTRIES_PER_EDGE: usize = 8;
/// Beyond this latitude (centre plus radius) a circle is always tested exactly.
const LOCAL_CIRCLE_MAX_LAT: f64 = 80.0;

/// One fence, prepared.
#[derive(Debug, Clone)]
pub enum Prepared {
    Circle(Circle),
    Area(Vec<Polygon>),
}

#[derive(Debug, Clone)]
pub struct Circle {
    centre: Point,
    radius_m: f64,
    /// Metres per degree of longitude at the centre.
    kx: f64,
    /// Squared local distances below `inside2` are inside, above `outside2` outside; between
    /// them the exact distance decides. `None`: always exact.
    band: Option<(f64, f64)>,
}

#[derive(Debug, Clone)]
pub struct Polygon {
    /// `[min lon, min lat, max lon, max lat]`.
    bbox: [f64; 4],
    /// Every ring's edges as `[ax, ay, bx, by]`, the exterior's first.
    edges: Vec<[f64; 4]>,
    /// The ring of each edge: 0 for the exterior, then the holes in order.
    ring: Vec<u8>,
    bands: Option<Bands>,
    /// A polygon with more rings than [`MAX_RINGS`] is tested by geo itself.
    exact: Option<geo::Polygon>,
}

/// Rings per polygon the prepared test tracks (a winding number and a bit each).
const MAX_RINGS: usize = 8;

#[derive(Debug, Clone)]
struct Bands {
    y0: f64,
    /// Bands per degree of latitude.
    scale: f64,
    count: usize,
    /// `edges[starts[b]..starts[b + 1]]` are band b's edge indexes.
    starts: Vec<u32>,
    edges: Vec<u32>,
}

impl Bands {
    fn of(&self, y: f64) -> usize {
        // Monotone in y (IEEE subtraction and multiplication round monotonically), so an edge
        // whose latitude range holds y is listed in y's band.
        (((y - self.y0) * self.scale) as usize).min(self.count - 1)
    }

    /// The index, or `None` when it would list more than [`MAX_BAND_ENTRIES_PER_EDGE`] entries
    /// per edge.
    fn new(bbox: [f64; 4], edges: &[[f64; 4]]) -> Option<Bands> {
        let count = (edges.len() / 2).max(1);
        let height = bbox[3] - bbox[1];
        let scale = if height > 0.0 {
            count as f64 / height
        } else {
            0.0
        };
        let mut bands = Bands {
            y0: bbox[1],
            scale,
            count,
            starts: Vec::new(),
            edges: Vec::new(),
        };
        let span = |e: &[f64; 4]| (bands.of(e[1].min(e[3])), bands.of(e[1].max(e[3])));
        let entries: usize = edges.iter().map(|e| span(e).1 - span(e).0 + 1).sum();
        if entries > edges.len() * MAX_BAND_ENTRIES_PER_EDGE {
            return None;
        }
        let mut lists: Vec<Vec<u32>> = vec![Vec::new(); count];
        for (i, e) in edges.iter().enumerate() {
            let (lo, hi) = (e[1].min(e[3]), e[1].max(e[3]));
            for list in &mut lists[bands.of(lo)..=bands.of(hi)] {
                list.push(i as u32);
            }
        }
        bands.starts.push(0);
        for list in lists {
            bands.edges.extend(list);
            bands.starts.push(bands.edges.len() as u32);
        }
        Some(bands)
    }
}

impl Prepared {
    pub fn new(shape: &Shape) -> Prepared {
        match shape {
            Shape::Circle { centre, radius_m } => Prepared::Circle(Circle::new(*centre, *radius_m)),
            Shape::Area(mp) => Prepared::Area(mp.0.iter().map(Polygon::new).collect()),
        }
    }

    /// Whether the point is covered (accuracy 0): `Shape::relate(p, 0.0) == Match::Inside`.
    pub fn covers(&self, lon: f64, lat: f64) -> bool {
        match self {
            Prepared::Circle(c) => c.covers(lon, lat),
            Prepared::Area(polygons) => polygons.iter().any(|p| p.covers(lon, lat)),
        }
    }

    /// How a fix relates to the fence, as [`Shape::relate`] answers.
    pub fn relate(&self, lon: f64, lat: f64, accuracy_m: f64) -> Match {
        match self {
            Prepared::Circle(c) if accuracy_m == 0.0 => inside_or_outside(c.covers(lon, lat)),
            Prepared::Circle(c) => circle_match(
                Haversine.distance(c.centre, Point::new(lon, lat)),
                c.radius_m,
                accuracy_m,
            ),
            Prepared::Area(polygons) => {
                let covered = polygons.iter().any(|p| p.covers(lon, lat));
                area_match(covered, accuracy_m, |enough| {
                    let segments = polygons.iter().flat_map(|p| {
                        p.edges
                            .iter()
                            .map(|e| (Coord { x: e[0], y: e[1] }, Coord { x: e[2], y: e[3] }))
                    });
                    distance_to_segments_m(segments, Point::new(lon, lat), enough)
                })
            }
        }
    }
}

impl Circle {
    fn new(centre: Point, radius_m: f64) -> Circle {
        let m = metres_per_degree();
        let lat = centre.y();
        let reach = radius_m / m * 1.1;
        let kx = lat.to_radians().cos() * m;
        // The local projection scales longitude by the centre's cosine; within 1.1 radii of
        // the centre the true scale differs by at most tan(|lat| + reach) · reach (in radians),
        // and the sphere's curvature adds (r / R)². The band is twice that, plus a micrometre
        // for rounding (geo's haversine across the ±180° meridian, where the longitude
        // difference is near 360°, rounds to about 1e-8 m; ours to less).
        let band = (lat.abs() + reach < LOCAL_CIRCLE_MAX_LAT).then(|| {
            let reach_rad = reach.to_radians();
            let error = (lat.abs() + reach).to_radians().tan() * reach_rad + reach_rad * reach_rad;
            let margin_m = radius_m * 2.0 * error + 1e-6;
            let inside = (radius_m - margin_m).max(0.0);
            let outside = radius_m + margin_m;
            (inside * inside, outside * outside)
        });
        Circle {
            centre,
            radius_m,
            kx,
            band,
        }
    }

    fn covers(&self, lon: f64, lat: f64) -> bool {
        if let Some((inside2, outside2)) = self.band {
            let mut dlon = lon - self.centre.x();
            if dlon > 180.0 {
                dlon -= 360.0;
            } else if dlon < -180.0 {
                dlon += 360.0;
            }
            let dx = dlon * self.kx;
            let dy = (lat - self.centre.y()) * metres_per_degree();
            let d2 = dx * dx + dy * dy;
            if d2 < inside2 {
                return true;
            }
            if d2 > outside2 {
                return false;
            }
        }
        Haversine.distance(self.centre, Point::new(lon, lat)) <= self.radius_m
    }
}

impl Polygon {
    fn new(polygon: &geo::Polygon) -> Polygon {
        let rings = std::iter::once(polygon.exterior()).chain(polygon.interiors());
        let mut edges: Vec<[f64; 4]> = Vec::new();
        let mut ring = Vec::new();
        for (r, line) in rings.enumerate() {
            for w in line.0.windows(2) {
                edges.push([w[0].x, w[0].y, w[1].x, w[1].y]);
                ring.push(r.min(MAX_RINGS - 1) as u8);
            }
        }
        let bbox = edges
            .iter()
            .fold(EMPTY, |b, e| union(b, [e[0], e[1], e[0], e[1]]));
        let bands = if edges.len() > BAND_ABOVE_EDGES {
            Bands::new(bbox, &edges)
        } else {
            None
        };
        Polygon {
            bbox,
            edges,
            ring,
            bands,
            exact: (polygon.interiors().len() >= MAX_RINGS).then(|| polygon.clone()),
        }
    }

    /// Covers semantics as geo's: on the exterior's edge inside; else inside the exterior and,
    /// taking the holes in order, on a hole's edge inside, in a hole outside.
    fn covers(&self, x: f64, y: f64) -> bool {
        let [x0, y0, x1, y1] = self.bbox;
        if !(x0..=x1).contains(&x) || !(y0..=y1).contains(&y) {
            return false;
        }
        if let Some(polygon) = &self.exact {
            return polygon.covers(&Point::new(x, y));
        }
        // Per ring: its winding number around the point (geo's edge rules: an upward edge
        // counts from its start up to but not including its end, a downward one the other
        // way, a horizontal one never), and whether the point lies on it.
        let mut winding = [0i32; MAX_RINGS];
        let mut on = 0u32;
        let mut test = |i: usize| {
            let [ax, ay, bx, by] = self.edges[i];
            if (y < ay && y < by) || (y > ay && y > by) || (x > ax && x > bx) {
                // Wholly above, below or to the left of the point: neither on it nor crossed.
                return;
            }
            let ring = self.ring[i] as usize;
            let up = ay <= y && y < by;
            let down = by <= y && y < ay;
            if x < ax && x < bx {
                // Wholly to the right: the point is left of an upward edge, right of a
                // downward one.
                winding[ring] += i32::from(up) - i32::from(down);
                return;
            }
            let o = orient2d(
                robust::Coord { x: ax, y: ay },
                robust::Coord { x: bx, y: by },
                robust::Coord { x, y },
            );
            if o == 0.0 {
                // Collinear and within the edge's box: on the edge.
                on |= 1 << ring;
            } else if up && o > 0.0 {
                winding[ring] += 1;
            } else if down && o < 0.0 {
                winding[ring] -= 1;
            }
        };
        match &self.bands {
            Some(b) => {
                let band = b.of(y);
                for &i in &b.edges[b.starts[band] as usize..b.starts[band + 1] as usize] {
                    test(i as usize);
                }
            }
            None => (0..self.edges.len()).for_each(&mut test),
        }
        if on & 1 != 0 {
            return true;
        }
        if winding[0] == 0 {
            return false;
        }
        // Inside the exterior: the first hole the point is on or in decides.
        for (hole, w) in winding.iter().enumerate().skip(1) {
            if on & (1 << hole) != 0 {
                return true;
            }
            if *w != 0 {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use omo_device_config::site::Geometry;
    use proptest::prelude::*;
    use serde_json::json;

    fn star(cx: f64, cy: f64, arms: usize, outer: f64, inner: f64, turn: f64) -> Vec<[f64; 2]> {
        let mut ring: Vec<[f64; 2]> = (0..2 * arms)
            .map(|j| {
                let a = turn + j as f64 * std::f64::consts::PI / arms as f64;
                let r = if j % 2 == 0 { outer } else { inner };
                [cx + r * a.cos(), cy + r * a.sin()]
            })
            .collect();
        ring.push(ring[0]);
        ring
    }

    fn area(coordinates: serde_json::Value, kind: &str) -> Option<Shape> {
        Shape::area(
            &Geometry {
                kind: kind.into(),
                coordinates,
            },
            "f",
        )
        .ok()
    }

    /// Points that hit the hard cases: every vertex, every edge's midpoint and points along
    /// axis-aligned edges, plus the given points.
    fn probes(shape: &Shape, extra: &[(f64, f64)]) -> Vec<(f64, f64)> {
        let mut out = extra.to_vec();
        if let Shape::Area(mp) = shape {
            for polygon in &mp.0 {
                for ring in std::iter::once(polygon.exterior()).chain(polygon.interiors()) {
                    for w in ring.0.windows(2) {
                        out.push((w[0].x, w[0].y));
                        out.push(((w[0].x + w[1].x) / 2.0, (w[0].y + w[1].y) / 2.0));
                        out.push((w[0].x, (w[0].y + w[1].y) / 2.0));
                        out.push(((w[0].x + w[1].x) / 2.0, w[0].y));
                    }
                }
            }
        }
        out
    }

    fn agree(shape: &Shape, points: &[(f64, f64)], accuracy: f64) -> Result<(), TestCaseError> {
        let prepared = Prepared::new(shape);
        for &(x, y) in points {
            let exact = shape.relate(Point::new(x, y), 0.0);
            prop_assert_eq!(
                prepared.covers(x, y),
                exact == Match::Inside,
                "({}, {})",
                x,
                y
            );
            prop_assert_eq!(
                prepared.relate(x, y, accuracy),
                shape.relate(Point::new(x, y), accuracy),
                "({}, {}) ± {} m",
                x,
                y,
                accuracy
            );
        }
        Ok(())
    }

    proptest! {
        /// Stars (concave, 6–48 vertices: with and without bands), with a hole and as parts
        /// of a multipolygon, answer as the exact test at random points, vertices and edges.
        #[test]
        fn polygons_agree_with_the_exact_test(
            arms in 3usize..24,
            outer in 0.001f64..0.05,
            inner_frac in 0.2f64..0.9,
            turn in 0.0f64..6.3,
            hole in any::<bool>(),
            shift in (-1.5f64..1.5, -1.5f64..1.5),
            second in any::<bool>(),
            points in proptest::collection::vec((-0.06f64..0.06, -0.06f64..0.06), 1..80),
            accuracy in 0.0f64..300.0,
        ) {
            let (cx, cy) = (139.7, 35.6);
            let outer_ring = star(cx, cy, arms, outer, outer * inner_frac, turn);
            let mut rings = vec![outer_ring];
            if hole {
                // Half the time inside the star; otherwise across or beyond its edge, as an
                // invalid polygon may be: the test must still answer as geo does.
                let h = outer * inner_frac * 0.5;
                let (dx, dy) = if shift.0.abs() < 0.75 { (0.0, 0.0) } else { (shift.0 * outer, shift.1 * outer) };
                let (hx, hy) = (cx + dx, cy + dy);
                rings.push(vec![[hx - h, hy - h], [hx + h, hy - h], [hx + h, hy + h], [hx - h, hy + h], [hx - h, hy - h]]);
            }
            let shape = if second {
                let other = star(cx + 0.1, cy, arms, outer, outer * inner_frac, turn);
                area(json!([rings, [other]]), "MultiPolygon")
            } else {
                area(json!(rings), "Polygon")
            };
            let Some(shape) = shape else { return Ok(()) };
            let extra: Vec<(f64, f64)> = points.iter().map(|&(x, y)| (cx + x, cy + y)).collect();
            agree(&shape, &probes(&shape, &extra), accuracy)?;
        }

        /// Axis-aligned L and U shapes: many points lie exactly on their edges.
        #[test]
        fn rectilinear_polygons_agree_on_their_edges(
            w in 0.001f64..0.02,
            h in 0.001f64..0.02,
            t in 0.2f64..0.45,
            u in any::<bool>(),
            points in proptest::collection::vec((0.0f64..1.0, 0.0f64..1.0), 1..40),
        ) {
            let (x0, y0) = (139.7, 35.6);
            let t = w.min(h) * t;
            let pts: Vec<(f64, f64)> = if u {
                vec![(0.0, 0.0), (w, 0.0), (w, h), (w - t, h), (w - t, t), (t, t), (t, h), (0.0, h)]
            } else {
                vec![(0.0, 0.0), (w, 0.0), (w, t), (t, t), (t, h), (0.0, h)]
            };
            let mut ring: Vec<[f64; 2]> = pts.iter().map(|&(x, y)| [x0 + x, y0 + y]).collect();
            ring.push(ring[0]);
            let Some(shape) = area(json!([ring]), "Polygon") else { return Ok(()) };
            let extra: Vec<(f64, f64)> = points.iter().map(|&(a, b)| (x0 + a * w, y0 + b * h)).collect();
            agree(&shape, &probes(&shape, &extra), 0.0)?;
        }

        /// Circles at any latitude and radius answer as the great-circle test, most of all
        /// near their rim.
        #[test]
        fn circles_agree_with_the_great_circle_test(
            lon in -180.0f64..180.0,
            lat in -89.0f64..89.0,
            radius in 1.0f64..50_000.0,
            around in proptest::collection::vec((0.0f64..6.3, 0.9f64..1.1), 1..60),
            accuracy in 0.0f64..300.0,
        ) {
            let shape = Shape::circle(lon, lat, radius, "c").unwrap();
            let m = metres_per_degree();
            let points: Vec<(f64, f64)> = around
                .iter()
                .map(|&(a, k)| {
                    let y = (lat + radius * k * a.sin() / m).clamp(-90.0, 90.0);
                    let mut x = lon + radius * k * a.cos() / (m * y.to_radians().cos().max(1e-6));
                    if x > 180.0 { x -= 360.0 } else if x < -180.0 { x += 360.0 }
                    (x, y)
                })
                .filter(|(x, _)| (-180.0..=180.0).contains(x))
                .collect();
            agree(&shape, &points, accuracy)?;
        }
    }

    proptest! {
        /// Rings on a small grid cross themselves, trace edges twice and wind around points
        /// twice: the winding number decides as geo's does, at grid points and between them.
        #[test]
        fn self_intersecting_rings_answer_as_geo_does(
            ring in proptest::collection::vec((0u8..6, 0u8..6), 4..14),
            hole in proptest::collection::vec((0u8..6, 0u8..6), 0..7),
        ) {
            let to = |v: &[(u8, u8)]| -> Vec<[f64; 2]> {
                let mut r: Vec<[f64; 2]> = v.iter().map(|&(x, y)| [139.0 + f64::from(x) * 0.001, 35.0 + f64::from(y) * 0.001]).collect();
                r.push(r[0]);
                r
            };
            let mut rings = vec![to(&ring)];
            if hole.len() >= 3 {
                rings.push(to(&hole));
            }
            let Some(shape) = area(json!(rings), "Polygon") else { return Ok(()) };
            let grid: Vec<(f64, f64)> = (0..=12)
                .flat_map(|i| (0..=12).map(move |j| (139.0 + f64::from(i) * 0.0005, 35.0 + f64::from(j) * 0.0005)))
                .collect();
            agree(&shape, &grid, 0.0)?;
        }
    }

    #[test]
    fn a_pentagram_and_a_doubly_traced_square_are_inside_at_their_centres() {
        let star: Vec<[f64; 2]> = (0..=5)
            .map(|k| {
                let a =
                    std::f64::consts::FRAC_PI_2 + (k * 2 % 5) as f64 * std::f64::consts::TAU / 5.0;
                [139.7 + 0.01 * a.cos(), 35.6 + 0.01 * a.sin()]
            })
            .collect();
        let square = json!([[
            [0, 0],
            [1, 0],
            [1, 1],
            [0, 1],
            [0, 0],
            [1, 0],
            [1, 1],
            [0, 1],
            [0, 0]
        ]]);
        for shape in [
            area(json!([star]), "Polygon").unwrap(),
            area(square, "Polygon").unwrap(),
        ] {
            let Shape::Area(mp) = &shape else {
                unreachable!()
            };
            let c = mp.0[0]
                .exterior()
                .0
                .iter()
                .fold((0.0, 0.0), |(x, y), p| (x + p.x, y + p.y));
            let n = mp.0[0].exterior().0.len() as f64 - 1.0;
            let first = mp.0[0].exterior().0[0];
            let centre = ((c.0 - first.x) / n, (c.1 - first.y) / n);
            assert_eq!(
                shape.relate(Point::new(centre.0, centre.1), 0.0),
                Match::Inside
            );
            assert!(Prepared::new(&shape).covers(centre.0, centre.1));
        }
    }

    #[test]
    fn many_holes_and_a_sawtooth_fall_back_and_still_agree() {
        // Ten holes: more rings than the prepared test tracks, so geo answers.
        let mut rings = vec![vec![
            [0.0, 0.0],
            [11.0, 0.0],
            [11.0, 2.0],
            [0.0, 2.0],
            [0.0, 0.0],
        ]];
        for k in 0..10 {
            let x = f64::from(k) + 0.5;
            rings.push(vec![
                [x, 0.5],
                [x + 0.5, 0.5],
                [x + 0.5, 1.5],
                [x, 1.5],
                [x, 0.5],
            ]);
        }
        let holes = area(json!(rings), "Polygon").unwrap();
        let Prepared::Area(parts) = Prepared::new(&holes) else {
            unreachable!()
        };
        assert!(parts[0].exact.is_some());
        let points: Vec<(f64, f64)> = (0..=44)
            .flat_map(|i| (0..=8).map(move |j| (f64::from(i) * 0.25, f64::from(j) * 0.25)))
            .collect();
        agree(&holes, &points, 0.0).unwrap();
        // A sawtooth whose 200 teeth span the whole height: the band index would be
        // quadratic, so the polygon scans its edges.
        let mut ring: Vec<[f64; 2]> = (0..200)
            .flat_map(|k| [[f64::from(k) * 0.5, 0.0], [f64::from(k) * 0.5 + 0.25, 10.0]])
            .collect();
        ring.extend([[100.0, 0.0], [100.0, -1.0], [0.0, -1.0], [0.0, 0.0]]);
        let saw = area(json!([ring]), "Polygon").unwrap();
        let Prepared::Area(parts) = Prepared::new(&saw) else {
            unreachable!()
        };
        assert!(parts[0].bands.is_none());
        let points: Vec<(f64, f64)> = (0..400)
            .flat_map(|i| (0..12).map(move |j| (f64::from(i) * 0.25 + 0.05, f64::from(j) - 1.0)))
            .collect();
        agree(&saw, &points, 0.0).unwrap();
    }

    #[test]
    fn a_band_index_lists_every_edge_of_its_band() {
        let ring = star(0.0, 0.0, 20, 1.0, 0.5, 0.1);
        let shape = area(json!([ring]), "Polygon").unwrap();
        let Prepared::Area(polygons) = Prepared::new(&shape) else {
            unreachable!()
        };
        let bands = polygons[0].bands.as_ref().expect("40 edges get bands");
        assert_eq!(bands.count, 20);
        for (i, e) in polygons[0].edges.iter().enumerate() {
            for y in [e[1], e[3], (e[1] + e[3]) / 2.0] {
                let b = bands.of(y);
                let list = &bands.edges[bands.starts[b] as usize..bands.starts[b + 1] as usize];
                assert!(list.contains(&(i as u32)), "edge {i} at {y} in band {b}");
            }
        }
    }
}
