//! Geofences as an RFC 7946 FeatureCollection (lon, lat order), as DESIGN.md specifies: a
//! feature's zone id is its `id` member, else `properties.id`; Polygon and MultiPolygon (with
//! holes) are fences; a Point with `properties.radius_m` is a circle. A bad feature is
//! reported by its index and id.

use omo_device_config::site::Geometry;
use serde_json::Value;

use super::geofence::Shape;
use super::index::Fence;

/// Every problem of a FeatureCollection, or its fences.
pub fn load_fences(text: &str) -> Result<Vec<Fence>, Vec<String>> {
    let doc: Value = serde_json::from_str(text).map_err(|e| vec![format!("not JSON: {e}")])?;
    if doc.get("type").and_then(Value::as_str) != Some("FeatureCollection") {
        return Err(vec!["type: must be \"FeatureCollection\"".into()]);
    }
    let features = doc
        .get("features")
        .and_then(Value::as_array)
        .ok_or_else(|| vec!["features: must be an array".to_owned()])?;
    let mut fences = Vec::with_capacity(features.len());
    let mut problems = Vec::new();
    for (i, f) in features.iter().enumerate() {
        match fence(f, i) {
            Ok(fence) => fences.push(fence),
            Err(e) => problems.push(e),
        }
    }
    if problems.is_empty() {
        Ok(fences)
    } else {
        Err(problems)
    }
}

fn fence(f: &Value, i: usize) -> Result<Fence, String> {
    let id = match f
        .get("id")
        .or_else(|| f.get("properties").and_then(|p| p.get("id")))
    {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => {
            return Err(format!(
                "feature {i}: no id (neither `id` nor `properties.id`)"
            ))
        }
    };
    let at = format!("feature {i} ({id})");
    let geometry = f
        .get("geometry")
        .filter(|g| !g.is_null())
        .ok_or_else(|| format!("{at}: no geometry"))?;
    let kind = geometry
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let coordinates = geometry.get("coordinates").cloned().unwrap_or(Value::Null);
    let shape = if kind == "Point" {
        let radius = f
            .get("properties")
            .and_then(|p| p.get("radius_m"))
            .and_then(Value::as_f64)
            .ok_or_else(|| format!("{at}: a Point needs properties.radius_m"))?;
        let (lon, lat) = match coordinates.as_array().map(Vec::as_slice) {
            Some([lon, lat, ..]) => (lon.as_f64(), lat.as_f64()),
            _ => (None, None),
        };
        let (Some(lon), Some(lat)) = (lon, lat) else {
            return Err(format!("{at}: geometry.coordinates must be [lon, lat]"));
        };
        Shape::circle(lon, lat, radius, "geometry")
    } else {
        Shape::area(
            &Geometry {
                kind: kind.to_owned(),
                coordinates,
            },
            "geometry",
        )
    };
    shape
        .map(|shape| Fence { id, shape })
        .map_err(|e| format!("{at}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_load_and_bad_ones_are_named_by_index_and_id() {
        let text = r#"{"type":"FeatureCollection","features":[
            {"type":"Feature","id":"a","properties":{},"geometry":{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,0]]]}},
            {"type":"Feature","properties":{"id":"b","radius_m":50},"geometry":{"type":"Point","coordinates":[139.7,35.6]}},
            {"type":"Feature","id":"c","properties":{},"geometry":{"type":"Polygon","coordinates":[[[0,0],[1,1],[2,2],[0,0]]]}},
            {"type":"Feature","properties":{},"geometry":{"type":"Polygon","coordinates":[]}},
            {"type":"Feature","id":"e","properties":{},"geometry":{"type":"LineString","coordinates":[[0,0],[1,1]]}}
        ]}"#;
        let problems = load_fences(text).unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems[0].starts_with("feature 2 (c): geometry.coordinates")
                && problems[0].contains("degenerate"),
            "{problems:?}"
        );
        assert!(problems[1].starts_with("feature 3: no id"), "{problems:?}");
        assert!(
            problems[2].starts_with("feature 4 (e): geometry.type"),
            "{problems:?}"
        );
        let good = r#"{"type":"FeatureCollection","features":[{"type":"Feature","id":7,"properties":{"radius_m":10},"geometry":{"type":"Point","coordinates":[1,2]}}]}"#;
        assert_eq!(load_fences(good).unwrap()[0].id, "7");
    }
}
