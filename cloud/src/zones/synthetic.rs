//! Seeded synthetic geofences and GPS points, for benchmarks and the `zones match` files: store
//! sized polygons (5–12 vertices, 30–300 m) and circles (30–300 m) scattered over a region, and
//! points in the same region. Same seed, same output.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::geofence::metres_per_degree;

/// The region: about 3° × 3° around Tokyo.
const LON: (f64, f64) = (138.0, 141.0);
const LAT: (f64, f64) = (34.5, 37.5);

/// `n` fences as a GeoJSON FeatureCollection: alternately polygons and circles.
pub fn fences(n: usize, seed: u64) -> Value {
    let mut rng = StdRng::seed_from_u64(seed);
    let features: Vec<Value> = (0..n)
        .map(|i| {
            let (cx, cy) = (
                rng.random_range(LON.0..LON.1),
                rng.random_range(LAT.0..LAT.1),
            );
            let size_m = rng.random_range(30.0..300.0);
            let kx = metres_per_degree() * cy.to_radians().cos();
            let ky = metres_per_degree();
            if i % 2 == 0 {
                let k = rng.random_range(5..=12);
                let mut ring: Vec<[f64; 2]> = (0..k)
                    .map(|j| {
                        let a = j as f64 / k as f64 * std::f64::consts::TAU;
                        let r = size_m * rng.random_range(0.5..1.0);
                        [cx + r * a.cos() / kx, cy + r * a.sin() / ky]
                    })
                    .collect();
                ring.push(ring[0]);
                json!({"type": "Feature", "id": format!("p{i}"), "properties": {},
                       "geometry": {"type": "Polygon", "coordinates": [ring]}})
            } else {
                json!({"type": "Feature", "id": format!("c{i}"), "properties": {"radius_m": size_m},
                       "geometry": {"type": "Point", "coordinates": [cx, cy]}})
            }
        })
        .collect();
    json!({"type": "FeatureCollection", "features": features})
}

/// `n` points in the region.
pub fn points(n: usize, seed: u64) -> Vec<(f64, f64)> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
    (0..n)
        .map(|_| {
            (
                rng.random_range(LON.0..LON.1),
                rng.random_range(LAT.0..LAT.1),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_fences_and_they_load() {
        let a = fences(50, 1);
        assert_eq!(a, fences(50, 1));
        assert_ne!(a, fences(50, 2));
        let loaded = super::super::geojson::load_fences(a.to_string().as_bytes()).unwrap();
        assert_eq!(loaded.len(), 50);
        assert_eq!(points(10, 3), points(10, 3));
    }
}
