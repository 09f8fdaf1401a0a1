//! The geofence index: every fence's bounding boxes in a packed R-tree, so a fix is tested
//! only against the few fences whose boxes it falls in, and then by the fence prepared for
//! point tests. The service
//! and `omo-cloud zones match` build the same index.

use super::geofence::{metres_per_degree, Shape};
use super::packed::PackedTree;
use super::prepared::Prepared;
use super::Match;

/// One geofence: its zone id and shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Fence {
    pub id: String,
    pub shape: Shape,
}

/// Fences, prepared for point tests, and their R-tree.
pub struct FenceIndex {
    fences: Vec<Fence>,
    prepared: Vec<Prepared>,
    tree: PackedTree,
}

impl FenceIndex {
    /// Bulk-loads the index.
    pub fn new(fences: Vec<Fence>) -> FenceIndex {
        let entries: Vec<([f64; 4], u32)> = fences
            .iter()
            .enumerate()
            .flat_map(|(i, f)| f.shape.boxes().into_iter().map(move |b| (b, i as u32)))
            .collect();
        FenceIndex {
            prepared: fences.iter().map(|f| Prepared::new(&f.shape)).collect(),
            fences,
            tree: PackedTree::new(entries),
        }
    }

    pub fn len(&self) -> usize {
        self.fences.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fences.is_empty()
    }

    pub fn fence(&self, i: usize) -> &Fence {
        &self.fences[i]
    }

    /// Indexes of the fences covering the point exactly (accuracy 0), ascending.
    pub fn covering(&self, lon: f64, lat: f64) -> Vec<usize> {
        let mut out = Vec::new();
        self.covering_into(lon, lat, &mut out);
        out
    }

    /// [`FenceIndex::covering`] into `out` (cleared first), for callers matching many points.
    pub fn covering_into(&self, lon: f64, lat: f64, out: &mut Vec<usize>) {
        out.clear();
        self.tree.at_point(lon, lat, |i| {
            if self.prepared[i as usize].covers(lon, lat) {
                out.push(i as usize);
            }
        });
        out.sort_unstable();
        out.dedup();
    }

    /// How a fix with accuracy `accuracy_m` relates to fence `i`.
    pub fn relate_one(&self, i: usize, lon: f64, lat: f64, accuracy_m: f64) -> Match {
        self.prepared[i].relate(lon, lat, accuracy_m)
    }

    /// Every fence a fix with accuracy `accuracy_m` could be inside or at the edge of, with how
    /// it relates (fences not returned are certainly [`Match::Outside`]).
    pub fn relate(&self, lon: f64, lat: f64, accuracy_m: f64) -> Vec<(usize, Match)> {
        let dlat = accuracy_m / metres_per_degree();
        let dlon = dlat / lat.to_radians().cos().max(1e-6);
        let mut candidates: Vec<usize> = Vec::new();
        self.tree
            .meeting([lon - dlon, lat - dlat, lon + dlon, lat + dlat], |i| {
                candidates.push(i as usize)
            });
        candidates.sort_unstable();
        candidates.dedup();
        candidates
            .into_iter()
            .map(|i| (i, self.prepared[i].relate(lon, lat, accuracy_m)))
            .filter(|(_, m)| *m != Match::Outside)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use geo::Point;
    use omo_device_config::site::Geometry;
    use proptest::prelude::*;
    use serde_json::json;

    fn polygon_from(points: &[(f64, f64)]) -> Option<Shape> {
        let mut ring: Vec<[f64; 2]> = points.iter().map(|&(x, y)| [x, y]).collect();
        ring.push(ring[0]);
        Shape::area(
            &Geometry {
                kind: "Polygon".into(),
                coordinates: json!([ring]),
            },
            "f",
        )
        .ok()
    }

    prop_compose! {
        /// A small star-shaped polygon (so it is simple) somewhere in a 2°×2° box.
        fn star()(cx in 138.0f64..140.0, cy in 35.0f64..37.0, radii in proptest::collection::vec(0.0005f64..0.05, 3..9)) -> Vec<(f64, f64)> {
            let n = radii.len();
            radii.iter().enumerate().map(|(i, r)| {
                let a = i as f64 / n as f64 * std::f64::consts::TAU;
                (cx + r * a.cos(), cy + r * a.sin())
            }).collect()
        }
    }

    proptest! {
        /// The index answers exactly as testing every fence does.
        #[test]
        fn index_agrees_with_testing_every_fence(
            stars in proptest::collection::vec(star(), 1..40),
            circles in proptest::collection::vec((138.0f64..140.0, 35.0f64..37.0, 10.0f64..5000.0), 0..20),
            points in proptest::collection::vec((137.9f64..140.1, 34.9f64..37.1), 1..60),
            accuracy in 0.0f64..500.0,
        ) {
            let mut fences: Vec<Fence> = stars.iter().filter_map(|s| polygon_from(s)).map(|shape| Fence { id: String::new(), shape }).collect();
            fences.extend(circles.iter().map(|&(x, y, r)| Fence { id: String::new(), shape: Shape::circle(x, y, r, "c").unwrap() }));
            let index = FenceIndex::new(fences.clone());
            for &(x, y) in &points {
                let p = Point::new(x, y);
                let reference: Vec<usize> = (0..fences.len()).filter(|&i| fences[i].shape.relate(p, 0.0) == Match::Inside).collect();
                prop_assert_eq!(index.covering(x, y), reference);
                let reference: Vec<(usize, Match)> = (0..fences.len())
                    .map(|i| (i, fences[i].shape.relate(p, accuracy)))
                    .filter(|(_, m)| *m != Match::Outside)
                    .collect();
                prop_assert_eq!(index.relate(x, y, accuracy), reference);
            }
        }

        /// Every vertex of a polygon is covered.
        #[test]
        fn vertices_and_edges_are_covered(s in star()) {
            if let Some(shape) = polygon_from(&s) {
                let index = FenceIndex::new(vec![Fence { id: "z".into(), shape }]);
                for &(x, y) in &s {
                    prop_assert_eq!(index.covering(x, y), vec![0]);
                }
            }
        }
    }

    #[test]
    fn circles_across_the_meridian_are_found_from_both_sides() {
        let index = FenceIndex::new(vec![Fence {
            id: "date-line".into(),
            shape: Shape::circle(179.9995, 10.0, 300.0, "c").unwrap(),
        }]);
        assert_eq!(index.covering(-179.9995, 10.0), vec![0]);
        assert_eq!(index.covering(179.9999, 10.0), vec![0]);
        assert!(index.covering(-179.99, 10.0).is_empty());
    }
}
