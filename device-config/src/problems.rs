//! Validation problems and the loaders that collect them.
//!
//! A config or site file is checked as a whole: every unknown key and every invalid value is a
//! [`Problem`] that names its key (`presence.enter_rssi_dbm`, `geofences[2].circle.radius_m`),
//! and validation returns all of them, not the first. Only a syntax error, which leaves nothing
//! to check, stops at one. The same loaders read remote config documents, where an unknown key
//! is a warning instead (forward compatibility within one envelope version).

use std::fmt;

use serde::de::DeserializeOwned;

/// One thing wrong with a file or document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where: a key path such as `outbox.max_bytes`, or `line 12` for a syntax error.
    pub key: String,
    pub message: String,
}

impl Problem {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// Every problem found in one file, displayed one per line as `file:key: reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct FileProblems {
    pub file: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for FileProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if p.key.is_empty() {
                write!(f, "{}: {}", self.file, p.message)?;
            } else {
                write!(f, "{}:{p}", self.file)?;
            }
        }
        Ok(())
    }
}

/// A growing list of problems with a key prefix, for `validate()` functions.
#[derive(Debug, Default)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    pub fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem::new(key, message));
    }

    /// Checks `ok`, recording `message` under `key` when false.
    pub fn check(&mut self, ok: bool, key: impl Into<String>, message: impl fmt::Display) {
        if !ok {
            self.push(key, message.to_string());
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_result(self) -> Result<(), Vec<Problem>> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0)
        }
    }
}

/// Joins a key prefix and a field name: `key("presence", "ema_alpha")`.
pub fn key(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_owned()
    } else {
        format!("{prefix}.{field}")
    }
}

/// A document parsed, with the keys it held that the schema does not know.
pub struct Parsed<T> {
    pub value: T,
    pub unknown_keys: Vec<String>,
}

/// Parses TOML into `T`, collecting unknown keys; a syntax or type error is one problem that
/// names its key and line.
pub fn parse_toml<T: DeserializeOwned>(text: &str) -> Result<Parsed<T>, Problem> {
    let line_of = |span: Option<std::ops::Range<usize>>| {
        span.map(|s| 1 + text[..s.start.min(text.len())].matches('\n').count())
    };
    let de = toml::Deserializer::parse(text).map_err(|e| {
        Problem::new(
            line_of(e.span()).map_or(String::new(), |l| format!("line {l}")),
            e.message().trim().to_owned(),
        )
    })?;
    let mut unknown_keys = Vec::new();
    let mut record = |path: serde_ignored::Path<'_>| unknown_keys.push(format_path(&path));
    let de = serde_ignored::Deserializer::new(de, &mut record);
    let value = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let at = line_of(inner.span()).map_or(String::new(), |l| format!(" (line {l})"));
        Problem::new(
            if path == "." { String::new() } else { path },
            format!("{}{at}", inner.message().trim()),
        )
    })?;
    Ok(Parsed {
        value,
        unknown_keys,
    })
}

/// Parses JSON into `T`, collecting unknown keys; an error is one problem naming key and line.
pub fn parse_json<T: DeserializeOwned>(text: &str) -> Result<Parsed<T>, Problem> {
    let mut unknown_keys = Vec::new();
    let mut de = serde_json::Deserializer::from_str(text);
    let mut record = |path: serde_ignored::Path<'_>| unknown_keys.push(format_path(&path));
    let ignored = serde_ignored::Deserializer::new(&mut de, &mut record);
    let value = serde_path_to_error::deserialize(ignored).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = format!("{inner}");
        Problem::new(if path == "." { String::new() } else { path }, message)
    })?;
    de.end()
        .map_err(|e| Problem::new(format!("line {}", e.line()), e.to_string()))?;
    Ok(Parsed {
        value,
        unknown_keys,
    })
}

/// Unknown keys as problems, for local files where an unknown key is a typo.
pub fn unknown_key_problems(keys: &[String]) -> Vec<Problem> {
    keys.iter()
        .map(|k| Problem::new(k.clone(), "unknown key"))
        .collect()
}

fn format_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", format_path(parent)),
        Path::Map { parent, key } => {
            let parent = format_path(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => format_path(parent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, Default)]
    #[serde(default)]
    struct Inner {
        a: u32,
    }

    #[derive(Debug, Deserialize)]
    struct Doc {
        top: u32,
        #[serde(default)]
        list: Vec<Inner>,
    }

    #[test]
    fn collects_every_unknown_key() {
        let parsed: Parsed<Doc> =
            parse_toml("top = 1\nextra = 2\n[[list]]\na = 1\nb = 2\n[[list]]\nc = 3\n").unwrap();
        assert_eq!((parsed.value.top, parsed.value.list.len()), (1, 2));
        assert_eq!(parsed.unknown_keys, ["extra", "list[0].b", "list[1].c"]);
        let parsed: Parsed<Doc> = parse_json(r#"{"top":1,"list":[{"a":1,"z":0}]}"#).unwrap();
        assert_eq!(parsed.unknown_keys, ["list[0].z"]);
    }

    #[test]
    fn type_errors_name_key_and_line() {
        let err = parse_toml::<Doc>("top = 1\n[[list]]\na = \"x\"\n")
            .err()
            .unwrap();
        assert_eq!(err.key, "list[0].a");
        assert!(err.message.contains("line 3"), "{err}");
        let err = parse_toml::<Doc>("top = \n").err().unwrap();
        assert_eq!(err.key, "line 1", "{err}");
        let err = parse_toml::<Doc>("list = []\n").err().unwrap();
        assert!(err.message.contains("missing field `top`"), "{err}");
        let err = parse_json::<Doc>("{\"top\":1}\n{").err().unwrap();
        assert_eq!(err.key, "line 2", "{err}");
    }

    #[test]
    fn file_problems_print_one_per_line() {
        let fp = FileProblems {
            file: "site.toml".into(),
            problems: vec![
                Problem::new("stores[0].id", "bad"),
                Problem::new("x", "worse"),
            ],
        };
        assert_eq!(
            fp.to_string(),
            "site.toml:stores[0].id: bad\nsite.toml:x: worse"
        );
    }
}
