//! RFC 7946 §3.1.6 winding for the geofences omo writes out: a polygon's exterior ring runs
//! counter-clockwise and its holes clockwise (in lon/lat, by the sign of the ring's area),
//! whatever winding they came in with. Matching does not care (a point is in or out either
//! way); readers of the GeoJSON omo serves (d3-geo, some GIS tools) do.

use serde_json::Value;

/// Twice the signed area of a ring of `[lon, lat]` positions: positive counter-clockwise.
/// Taken around the ring's first vertex, so a ring a few metres across far from (0, 0) keeps
/// its sign (the products of whole degrees would swamp it).
fn signed_area(ring: &[Value]) -> f64 {
    let at = |p: &Value, i: usize| p.get(i).and_then(Value::as_f64).unwrap_or(0.0);
    let (x0, y0) = ring.first().map_or((0.0, 0.0), |p| (at(p, 0), at(p, 1)));
    let xy = |p: &Value| (at(p, 0) - x0, at(p, 1) - y0);
    ring.windows(2)
        .map(|w| {
            let ((x1, y1), (x2, y2)) = (xy(&w[0]), xy(&w[1]));
            x1 * y2 - x2 * y1
        })
        .sum()
}

/// A polygon's rings (exterior first), each turned the way RFC 7946 asks.
fn polygon(rings: &Value) -> Value {
    let Some(rings) = rings.as_array() else {
        return rings.clone();
    };
    rings
        .iter()
        .enumerate()
        .map(|(i, ring)| match ring.as_array() {
            Some(points) => {
                let area = signed_area(points);
                // The exterior counter-clockwise (area > 0), holes clockwise (area < 0).
                let wrong = if i == 0 { area < 0.0 } else { area > 0.0 };
                let mut points = points.clone();
                if wrong {
                    points.reverse();
                }
                Value::Array(points)
            }
            None => ring.clone(),
        })
        .collect()
}

/// The coordinates of a `Polygon` or `MultiPolygon` with RFC 7946's winding; other geometry
/// kinds as they are.
pub fn rfc7946(kind: &str, coordinates: &Value) -> Value {
    match (kind, coordinates.as_array()) {
        ("Polygon", _) => polygon(coordinates),
        ("MultiPolygon", Some(polygons)) => polygons.iter().map(polygon).collect(),
        _ => coordinates.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn ring_area(v: &Value) -> f64 {
        signed_area(v.as_array().unwrap())
    }

    #[test]
    fn an_exterior_turns_counter_clockwise_and_a_hole_clockwise() {
        // A clockwise square with a counter-clockwise hole: both turned.
        let cw = json!([
            [[0, 0], [0, 1], [1, 1], [1, 0], [0, 0]],
            [[0.2, 0.2], [0.8, 0.2], [0.8, 0.8], [0.2, 0.8], [0.2, 0.2]]
        ]);
        let out = rfc7946("Polygon", &cw);
        assert!(
            ring_area(&out[0]) > 0.0 && ring_area(&out[1]) < 0.0,
            "{out}"
        );
        assert_eq!(
            out[0][0],
            json!([0, 0]),
            "the ring still starts and ends where it did"
        );
        let multi = rfc7946("MultiPolygon", &json!([cw.clone(), cw]));
        assert!(ring_area(&multi[1][0]) > 0.0 && ring_area(&multi[1][1]) < 0.0);
        assert_eq!(rfc7946("Point", &json!([1, 2])), json!([1, 2]));
        // Nothing malformed panics.
        assert_eq!(rfc7946("Polygon", &json!("x")), json!("x"));
        assert_eq!(
            rfc7946("Polygon", &json!([[["a"]], 3])),
            json!([[["a"]], 3])
        );
    }

    proptest! {
        /// Any simple ring (a star around a centre, either way round) comes out with the
        /// same vertices, the right way round, and turning it again changes nothing.
        #[test]
        fn winding_is_set_and_idempotent(
            radii in proptest::collection::vec(0.1f64..5.0, 3..24),
            clockwise in any::<bool>(),
            hole in any::<bool>(),
        ) {
            let n = radii.len();
            let mut ring: Vec<Value> = radii
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let a = i as f64 / n as f64 * std::f64::consts::TAU * if clockwise { -1.0 } else { 1.0 };
                    json!([139.7 + r * a.cos() * 1e-3, 35.6 + r * a.sin() * 1e-3])
                })
                .collect();
            ring.push(ring[0].clone());
            let small: Vec<Value> = ring
                .iter()
                .map(|p| json!([139.7 + (p[0].as_f64().unwrap() - 139.7) * 0.01, 35.6 + (p[1].as_f64().unwrap() - 35.6) * 0.01]))
                .collect();
            let rings = if hole { json!([ring, small]) } else { json!([ring]) };
            let out = rfc7946("Polygon", &rings);
            prop_assert!(ring_area(&out[0]) > 0.0);
            if hole {
                prop_assert!(ring_area(&out[1]) < 0.0);
            }
            prop_assert_eq!(rfc7946("Polygon", &out), out.clone());
            let mut before: Vec<String> = rings[0].as_array().unwrap().iter().map(Value::to_string).collect();
            let mut after: Vec<String> = out[0].as_array().unwrap().iter().map(Value::to_string).collect();
            before.sort();
            after.sort();
            prop_assert_eq!(before, after);
        }
    }
}
