//! Validation problems and the loaders that collect them.
//!
//! A config or site file is checked as a whole: every unknown key and every invalid value is a
//! [`Problem`] that names its key (`presence.enter_rssi_dbm`, `geofences[2].circle.radius_m`),
//! and validation returns all of them, not the first: each section and each record is read on
//! its own, so a bad value stops only its own record. Only a syntax error, which leaves nothing
//! to check, stops at one. The same reader serves remote config documents, where an unknown key
//! is a warning instead (forward compatibility within one envelope version).

use std::fmt;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

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

/// A document's text format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Toml,
    Json,
}

/// Parses a document's syntax only, into a tree of JSON values (TOML tables become objects).
/// A syntax error leaves nothing to check, so it is the one problem that stops at one.
pub fn parse_document(text: &str, format: Format) -> Result<Map<String, Value>, Problem> {
    let value = match format {
        Format::Toml => {
            let table: toml::Table = toml::from_str(text).map_err(|e| {
                let line = e.span().map(|s| line_of(text, s.start));
                Problem::new(
                    line.map_or(String::new(), |l| format!("line {l}")),
                    e.message().trim().to_owned(),
                )
            })?;
            serde_json::to_value(table).map_err(|e| Problem::new("", e.to_string()))?
        }
        Format::Json => serde_json::from_str::<Value>(text)
            .map_err(|e| Problem::new(format!("line {}", e.line()), e.to_string()))?,
    };
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(Problem::new("", "the document must be a table (an object)")),
    }
}

/// The 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    1 + text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

/// What an unknown key is: a typo in a local file, a newer sender's field in a remote document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownKeys {
    Errors,
    Warnings,
}

/// Reads a parsed document section by section and record by record, so that a bad value in
/// one place does not hide the problems in the others.
#[derive(Debug)]
pub struct Reader {
    unknown: UnknownKeys,
    pub problems: Vec<Problem>,
    pub warnings: Vec<String>,
    /// Keys whose value could not be read (so checks that depend on them are skipped).
    pub failed: Vec<String>,
}

impl Reader {
    pub fn new(unknown: UnknownKeys) -> Reader {
        Reader {
            unknown,
            problems: Vec::new(),
            warnings: Vec::new(),
            failed: Vec::new(),
        }
    }

    fn unknown_key(&mut self, key: String) {
        match self.unknown {
            UnknownKeys::Errors => self.problems.push(Problem::new(key, "unknown key")),
            UnknownKeys::Warnings => self.warnings.push(format!("{key}: unknown key ignored")),
        }
    }

    /// Reports top-level keys that are not in `known`.
    pub fn top_level(&mut self, doc: &Map<String, Value>, known: &[&str]) {
        for key in doc.keys() {
            if !known.contains(&key.as_str()) {
                self.unknown_key(key.clone());
            }
        }
    }

    /// Reads one value as `T`, under the key path `key`; `None` if it failed (recorded).
    pub fn value<T: DeserializeOwned>(&mut self, value: &Value, key: &str) -> Option<T> {
        let mut unknown = Vec::new();
        let mut record = |path: serde_ignored::Path<'_>| unknown.push(format_path(&path));
        let de = serde_ignored::Deserializer::new(value, &mut record);
        let result: Result<T, _> = serde_path_to_error::deserialize(de);
        for k in unknown {
            self.unknown_key(join(key, &k));
        }
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                let at = e.path().to_string();
                let at = if at == "." { String::new() } else { at };
                self.problems
                    .push(Problem::new(join(key, &at), e.into_inner().to_string()));
                self.failed.push(key.to_owned());
                None
            }
        }
    }

    /// Reads the required section `key` of `doc`; `None` if it is missing or failed (recorded).
    pub fn required<T: DeserializeOwned>(
        &mut self,
        doc: &Map<String, Value>,
        key: &str,
    ) -> Option<T> {
        match doc.get(key) {
            Some(v) => self.value(v, key),
            None => {
                self.problems.push(Problem::new(key, "missing"));
                self.failed.push(key.to_owned());
                None
            }
        }
    }

    /// Reads the optional section `key` of `doc` (default when absent); `None` if it failed.
    pub fn optional<T: DeserializeOwned + Default>(
        &mut self,
        doc: &Map<String, Value>,
        key: &str,
    ) -> Option<T> {
        match doc.get(key) {
            Some(v) => self.value(v, key),
            None => Some(T::default()),
        }
    }

    /// Reads the array `key` of `doc` element by element; elements that fail are left out.
    pub fn list<T: DeserializeOwned>(&mut self, doc: &Map<String, Value>, key: &str) -> Vec<T> {
        match doc.get(key) {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .filter_map(|(i, v)| self.value(v, &format!("{key}[{i}]")))
                .collect(),
            Some(_) => {
                self.problems
                    .push(Problem::new(key, "must be an array of tables"));
                self.failed.push(key.to_owned());
                Vec::new()
            }
        }
    }

    /// Whether anything under `key` (itself or one of its elements) failed to read.
    pub fn any_failed(&self, key: &str) -> bool {
        self.failed
            .iter()
            .any(|f| f == key || f.strip_prefix(key).is_some_and(|r| r.starts_with('[')))
    }

    /// All problems, or `Ok` when there are none.
    pub fn finish(self) -> Result<Vec<String>, Vec<Problem>> {
        if self.problems.is_empty() {
            Ok(self.warnings)
        } else {
            Err(self.problems)
        }
    }
}

/// `key` under `prefix`; an index path (`[2].x`) joins without a dot.
fn join(prefix: &str, key: &str) -> String {
    match (prefix.is_empty(), key.is_empty()) {
        (_, true) => prefix.to_owned(),
        (true, false) => key.to_owned(),
        _ if key.starts_with('[') => format!("{prefix}{key}"),
        _ => format!("{prefix}.{key}"),
    }
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

    fn read(text: &str, format: Format) -> (Vec<Inner>, Reader) {
        let doc = parse_document(text, format).unwrap();
        let mut r = Reader::new(UnknownKeys::Errors);
        r.top_level(&doc, &["top", "list"]);
        let list = r.list::<Inner>(&doc, "list");
        (list, r)
    }

    fn keys(r: &Reader) -> Vec<&str> {
        r.problems.iter().map(|p| p.key.as_str()).collect()
    }

    #[test]
    fn reports_every_unknown_key_and_every_bad_record() {
        let (list, r) = read(
            "top = 1\nextra = 2\n[[list]]\na = \"x\"\nb = 2\n[[list]]\na = 1\nc = 3\n[[list]]\na = -1\n",
            Format::Toml,
        );
        assert_eq!(list.len(), 1);
        assert_eq!(keys(&r), ["extra", "list[0].a", "list[1].c", "list[2].a"]);
        assert!(
            r.problems[1].message.contains("invalid type"),
            "{}",
            r.problems[1]
        );
        assert!(r.any_failed("list") && !r.any_failed("top"));
        let (_, r) = read(r#"{"top":1,"list":[{"a":1,"z":0}]}"#, Format::Json);
        assert_eq!(keys(&r), ["list[0].z"]);
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let err = parse_document("top = 1\ntop = \n", Format::Toml).unwrap_err();
        assert_eq!(err.key, "line 2", "{err}");
        let err = parse_document("{\"top\":1}\n{", Format::Json).unwrap_err();
        assert_eq!(err.key, "line 2", "{err}");
        assert!(parse_document("[1]", Format::Json).is_err());
    }

    #[test]
    fn missing_and_misshapen_sections() {
        let doc = parse_document("list = 3", Format::Toml).unwrap();
        let mut r = Reader::new(UnknownKeys::Warnings);
        assert!(r.required::<Inner>(&doc, "top").is_none());
        assert!(r.list::<Inner>(&doc, "list").is_empty());
        assert_eq!(keys(&r), ["top", "list"]);
        assert!(r.optional::<Inner>(&doc, "optional").is_some());
    }

    #[test]
    fn file_problems_print_one_per_line() {
        let fp = FileProblems {
            file: "site.toml".into(),
            problems: vec![
                Problem::new("stores[0].id", "bad"),
                Problem::new("", "worse"),
            ],
        };
        assert_eq!(
            fp.to_string(),
            "site.toml:stores[0].id: bad\nsite.toml: worse"
        );
    }
}
