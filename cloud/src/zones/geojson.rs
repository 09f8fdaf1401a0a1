//! Geofences as an RFC 7946 FeatureCollection (lon, lat order), as DESIGN.md specifies: a
//! feature's zone id is its `id` member, else `properties.id`; Polygon and MultiPolygon (with
//! holes) are fences; a Point with `properties.radius_m` is a circle. A bad feature is
//! reported by its index and id.

use std::fmt;

use omo_device_config::site::{self, Geometry};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::geofence::Shape;
use super::index::Fence;

/// Every problem of a FeatureCollection, or its fences. The document is parsed one feature at
/// a time: memory is its bytes, the fences built and one feature's tree, never the whole
/// document's tree. (Coordinates are read exactly: the workspace's serde_json has
/// `float_roundtrip`, so a vertex is the number its digits say, and a point written with the
/// same digits lies on it.)
///
/// Each feature is first read by a typed fast path straight into positions (no JSON tree);
/// anything it does not take as a well-formed fence (a problem, an altitude, an escaped string)
/// is read again as a tree by the path that names every problem, which decides.
pub fn load_fences(text: &[u8]) -> Result<Vec<Fence>, Vec<String>> {
    let mut de = serde_json::Deserializer::from_slice(text);
    let mut loaded = Loaded::default();
    let read = (&mut de)
        .deserialize_map(CollectionVisitor(&mut loaded))
        .and_then(|()| de.end());
    if let Err(e) = read {
        // The features read before the fault keep their problems.
        let what = if e.is_syntax() || e.is_eof() {
            "not JSON"
        } else {
            "not a GeoJSON FeatureCollection"
        };
        loaded.problems.push(format!("{what}: {e}"));
        return Err(loaded.problems);
    }
    if loaded.kind.as_deref() != Some("FeatureCollection") {
        loaded
            .problems
            .insert(0, "type: must be \"FeatureCollection\"".into());
    }
    if !loaded.features {
        loaded.problems.push("features: must be an array".into());
    }
    if loaded.problems.is_empty() {
        Ok(loaded.fences)
    } else {
        Err(loaded.problems)
    }
}

#[derive(Default)]
struct Loaded {
    kind: Option<String>,
    features: bool,
    fences: Vec<Fence>,
    problems: Vec<String>,
}

/// The top-level object: `type`, `features` (read one feature at a time), anything else
/// skipped.
struct CollectionVisitor<'a>(&'a mut Loaded);

impl<'de> Visitor<'de> for CollectionVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a GeoJSON FeatureCollection object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "type" => self.0.kind = map.next_value::<Value>()?.as_str().map(str::to_owned),
                "features" if self.0.features => {
                    return Err(serde::de::Error::duplicate_field("features"));
                }
                "features" => {
                    map.next_value_seed(FeaturesSeed(&mut *self.0))?;
                    self.0.features = true;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// The `features` array: each feature becomes a fence or a problem as it is read.
struct FeaturesSeed<'a>(&'a mut Loaded);

impl<'de> DeserializeSeed<'de> for FeaturesSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for FeaturesSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of features")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        while let Some(feature) = seq.next_element::<&'de RawValue>()? {
            let read = match fast_fence(feature.get()) {
                Some(fence) => Ok(fence),
                None => serde_json::from_str(feature.get())
                    .map_err(|e| format!("feature {i}: {e}"))
                    .and_then(|f| fence(f, i)),
            };
            match read {
                Ok(fence) => self.0.fences.push(fence),
                Err(e) => self.0.problems.push(e),
            }
            i += 1;
        }
        Ok(())
    }
}

/// A feature's zone id: a string, or a number as its digits.
fn id_text(id: &Value) -> Option<String> {
    match id {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// What the fast path reads of a feature (unknown members are skipped).
#[derive(Deserialize)]
struct FastFeature<'a> {
    /// Raw, so an explicit `null` stays present (it hides `properties.id`, as in [`fence`]).
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    properties: Option<FastProperties<'a>>,
    #[serde(borrow, default)]
    geometry: Option<FastGeometry<'a>>,
}

#[derive(Deserialize)]
struct FastProperties<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    radius_m: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct FastGeometry<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(borrow)]
    coordinates: &'a RawValue,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Rings as [`site::Geometry::polygons`] accepts them: at least one, each closed with at least
/// four positions, every coordinate in range.
fn rings_ok(polygon: &[Vec<[f64; 2]>]) -> bool {
    !polygon.is_empty()
        && polygon.iter().all(|ring| {
            ring.iter().all(|&[x, y]| site::check_lon_lat(x, y).is_ok())
                && site::check_ring(ring, "").is_ok()
        })
}

/// The fence a well-formed feature describes, read without a JSON tree; `None` for anything
/// else, which [`fence`] then reads and names.
fn fast_fence(text: &str) -> Option<Fence> {
    let f: FastFeature = serde_json::from_str(text).ok()?;
    let id = match f.id {
        Some(raw) => raw,
        None => f.properties.as_ref()?.id?,
    };
    let id = id_text(&serde_json::from_str(id.get()).ok()?)?;
    let geometry = f.geometry?;
    let coordinates = geometry.coordinates.get();
    let shape = match geometry.kind {
        "Point" => {
            let radius: Value = serde_json::from_str(f.properties?.radius_m?.get()).ok()?;
            let [lon, lat]: [f64; 2] = serde_json::from_str(coordinates).ok()?;
            Shape::circle(lon, lat, radius.as_f64()?, "geometry").ok()?
        }
        "Polygon" => {
            let polygon: Vec<Vec<[f64; 2]>> = serde_json::from_str(coordinates).ok()?;
            if !rings_ok(&polygon) {
                return None;
            }
            Shape::from_rings(vec![polygon], false, "geometry").ok()?
        }
        "MultiPolygon" => {
            let polygons: Vec<Vec<Vec<[f64; 2]>>> = serde_json::from_str(coordinates).ok()?;
            if polygons.is_empty() || !polygons.iter().all(|p| rings_ok(p)) {
                return None;
            }
            Shape::from_rings(polygons, true, "geometry").ok()?
        }
        _ => return None,
    };
    Some(Fence { id, shape })
}

fn fence(mut f: Value, i: usize) -> Result<Fence, String> {
    let Some(id) = f
        .get("id")
        .or_else(|| f.get("properties").and_then(|p| p.get("id")))
        .and_then(id_text)
    else {
        return Err(format!(
            "feature {i}: no id (neither `id` nor `properties.id`)"
        ));
    };
    let at = format!("feature {i} ({id})");
    let radius = f
        .get("properties")
        .and_then(|p| p.get("radius_m"))
        .and_then(Value::as_f64);
    let mut geometry = f
        .get_mut("geometry")
        .map(Value::take)
        .filter(|g| !g.is_null())
        .ok_or_else(|| format!("{at}: no geometry"))?;
    let kind = geometry
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let coordinates = geometry
        .get_mut("coordinates")
        .map(Value::take)
        .unwrap_or(Value::Null);
    let shape = if kind == "Point" {
        let radius = radius.ok_or_else(|| format!("{at}: a Point needs properties.radius_m"))?;
        let (lon, lat) = match coordinates.as_array().map(Vec::as_slice) {
            Some([lon, lat, ..]) => (lon.as_f64(), lat.as_f64()),
            _ => (None, None),
        };
        let (Some(lon), Some(lat)) = (lon, lat) else {
            return Err(format!("{at}: geometry.coordinates must be [lon, lat]"));
        };
        Shape::circle(lon, lat, radius, "geometry")
    } else {
        Shape::area(&Geometry { kind, coordinates }, "geometry")
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
        let problems = load_fences(text.as_bytes()).unwrap_err();
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
        let good = r#"{"type":"FeatureCollection","bbox":[0,0,3,3],"features":[{"type":"Feature","id":7,"properties":{"radius_m":10},"geometry":{"type":"Point","coordinates":[1,2]}}]}"#;
        assert_eq!(load_fences(good.as_bytes()).unwrap()[0].id, "7");
    }

    #[test]
    fn a_document_that_is_not_a_collection_is_named_with_its_position() {
        let e = load_fences(b"[1, 2]").unwrap_err();
        assert!(
            e[0].contains("expected a GeoJSON FeatureCollection object"),
            "{e:?}"
        );
        let e = load_fences(b"{\"type\":\"FeatureCollection\",\n\"features\":[{]}").unwrap_err();
        assert!(
            e[0].starts_with("not JSON") && e[0].contains("line 2 column"),
            "{e:?}"
        );
        // Problems found before a syntax error are kept.
        let e = load_fences(
            br#"{"type":"FeatureCollection","features":[{"type":"Feature","geometry":null},"#,
        )
        .unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].starts_with("feature 0: no id") && e[1].starts_with("not JSON"),
            "{e:?}"
        );
        let e = load_fences(br#"{"type":"FeatureCollection","features":[],"features":[]}"#)
            .unwrap_err();
        assert!(e[0].contains("duplicate field `features`"), "{e:?}");
        let e = load_fences(br#"{"type":"Feature","features":[]}"#).unwrap_err();
        assert_eq!(e, vec!["type: must be \"FeatureCollection\"".to_owned()]);
        let e = load_fences(br#"{"type":"FeatureCollection"}"#).unwrap_err();
        assert_eq!(e, vec!["features: must be an array".to_owned()]);
        let e = load_fences(br#"{"type":"FeatureCollection","features":{}}"#).unwrap_err();
        assert!(e[0].contains("expected an array of features"), "{e:?}");
    }

    #[test]
    fn coordinates_are_read_exactly() {
        // 17 significant digits that serde_json without `float_roundtrip` reads one ulp off.
        let digits = [
            "139.70123456789012",
            "35.658765432109876",
            "139.71987654321098",
        ];
        let text = format!(
            r#"{{"type":"FeatureCollection","features":[{{"type":"Feature","id":"a","geometry":{{"type":"Polygon","coordinates":[[[{0},{1}],[{2},{1}],[{2},35.67],[{0},{1}]]]}}}}]}}"#,
            digits[0], digits[1], digits[2]
        );
        let fences = load_fences(text.as_bytes()).unwrap();
        let Shape::Area(mp) = &fences[0].shape else {
            panic!("a polygon")
        };
        let first = mp.0[0].exterior().0[0];
        assert_eq!(first.x, digits[0].parse::<f64>().unwrap());
        assert_eq!(first.y, digits[1].parse::<f64>().unwrap());
    }

    proptest::proptest! {
        /// Whatever the fast path takes, it reads as the path that names problems does; and it
        /// takes the well-formed features (it is not skipped).
        #[test]
        fn the_fast_path_agrees_with_the_tree(
            id in proptest::sample::select(vec![r#""id":"z1","#, r#""id":7,"#, r#""id":null,"#, r#""id":"a\u0062","#, "", r#""id":[1],"#]),
            props in proptest::sample::select(vec![r#""properties":{}"#, r#""properties":{"id":"p","radius_m":40}"#, r#""properties":{"radius_m":"40"}"#, r#""properties":null"#, r#""properties":"x""#, r#""properties":{"radius_m":0}"#]),
            geometry in proptest::sample::select(vec![
                r#"{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,0]]]}"#,
                r#"{"coordinates":[[[0,0],[1,0],[1,1],[0,0]],[[0.2,0.1],[0.5,0.1],[0.5,0.3],[0.2,0.1]]],"type":"Polygon"}"#,
                r#"{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,1]]]}"#,
                r#"{"type":"Polygon","coordinates":[[[0,0],[1,0],[0,0]]]}"#,
                r#"{"type":"Polygon","coordinates":[[[0,0],[1,1],[2,2],[0,0]]]}"#,
                r#"{"type":"Polygon","coordinates":[[[0,0,5],[1,0,5],[1,1,5],[0,0,5]]]}"#,
                r#"{"type":"Polygon","coordinates":[[[0,0],[181,0],[1,1],[0,0]]]}"#,
                r#"{"type":"Polygon","coordinates":[]}"#,
                r#"{"type":"MultiPolygon","coordinates":[[[[0,0],[1,0],[1,1],[0,0]]],[[[5,5],[6,5],[6,6],[5,5]]]]}"#,
                r#"{"type":"MultiPolygon","coordinates":[]}"#,
                r#"{"type":"Point","coordinates":[139.7,35.6]}"#,
                r#"{"type":"Point","coordinates":[139.7,35.6,3]}"#,
                r#"{"type":"Point","coordinates":[200,35.6]}"#,
                r#"{"type":"LineString","coordinates":[[0,0],[1,1]]}"#,
                "null",
            ]),
        ) {
            let text = format!(r#"{{"type":"Feature",{id}"geometry":{geometry},{props}}}"#);
            let tree = fence(serde_json::from_str(&text).unwrap(), 0);
            match fast_fence(&text) {
                Some(fast) => proptest::prop_assert_eq!(Ok(fast), tree, "{}", text),
                None => proptest::prop_assert!(
                    tree.is_err() || geometry.contains(",5]") || geometry.contains(",3]") || props.contains(r#""x""#),
                    "the fast path skipped a good feature: {}", text
                ),
            }
        }
    }
}
