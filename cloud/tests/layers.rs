//! The cloud's modules import only downward, along the layers ARCHITECTURE.md draws. The
//! table is read from ARCHITECTURE.md itself, so the picture and the code cannot drift apart:
//! an upward import, a circle inside a layer, or a module the table does not place fails here
//! with the file and line to look at.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module of `cloud/src` and its layer (1 is the bottom).
type Layers = BTreeMap<String, u32>;

/// One `crate::…` reference from one module to another.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Import {
    file: String,
    line: usize,
    from: String,
    to: String,
}

/// The layer table: rows whose first cell starts with the layer's number, modules in
/// backticks in the second cell.
fn layers_from(architecture: &str) -> Result<Layers, String> {
    let mut layers = Layers::new();
    for (i, line) in architecture.lines().enumerate() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 || !cells[0].is_empty() {
            continue;
        }
        let Some(Ok(layer)) = cells[1].split_whitespace().next().map(str::parse::<u32>) else {
            continue;
        };
        for module in cells[2].split('`').skip(1).step_by(2) {
            if let Some(before) = layers.insert(module.to_owned(), layer) {
                return Err(format!(
                    "ARCHITECTURE.md line {}: `{module}` is in layer {layer} and in layer {before}",
                    i + 1
                ));
            }
        }
    }
    if layers.is_empty() {
        return Err("ARCHITECTURE.md has no layer table".into());
    }
    Ok(layers)
}

/// The source without its comments' text and without its test module (what the product
/// itself imports), line breaks kept so offsets still give line numbers.
fn product_code(source: &str) -> String {
    // The file's own `mod tests`, or one other test modules may share (`pub(in …) mod
    // tests`), at the start of a line (a nested module's is product code's neighbour).
    let end = source
        .match_indices("\n#[cfg(test)]\n")
        .map(|(i, _)| i + 1)
        .find(|i| {
            let next = source[i + 13..].lines().next().unwrap_or_default();
            next == "mod tests {" || (next.starts_with("pub(") && next.ends_with(") mod tests {"))
        })
        .unwrap_or(source.len());
    source[..end]
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("//") {
                ""
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `code` with every `super::` chain that reaches the crate root from a module `depth` deep
/// written as `crate::` (chains that stay inside the module are left alone).
fn climb_to_root(code: &str, depth: usize) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("super::") {
        let starts_path =
            !rest[..at].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':');
        let mut chain = 0;
        let mut after = &rest[at..];
        while let Some(next) = after.strip_prefix("super::") {
            chain += 1;
            after = next;
        }
        out.push_str(&rest[..at]);
        if starts_path && chain >= depth {
            out.push_str("crate::");
        } else {
            out.push_str(&rest[at..rest.len() - after.len()]);
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The top-level modules `source` (a file of `module`) names after `crate::`, with their
/// lines: in paths, in `use crate::{a, b::c}` groups; not macros (`crate::name!`). `depth` is
/// how deep the file's module is (`service.rs`, `visits/mod.rs`: 1; `visits/stage.rs`: 2),
/// so a `super::` chain that climbs to the crate root counts as `crate::`.
fn imports(file: &str, module: &str, depth: usize, source: &str) -> Vec<Import> {
    let code = climb_to_root(&product_code(source), depth);
    let mut out = Vec::new();
    let mut push = |at: usize, to: &str| {
        if !to.is_empty() && to != module && to != "self" {
            out.push(Import {
                file: file.to_owned(),
                line: code[..at].matches('\n').count() + 1,
                from: module.to_owned(),
                to: to.to_owned(),
            });
        }
    };
    for (at, _) in code.match_indices("crate::") {
        if at > 0 && code[..at].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
            continue; // `omo_cloud::crate::` cannot occur; `foocrate::` is another name
        }
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of the group: split on commas outside nested braces.
            let mut depth = 0;
            let mut item_start = 0;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        push(at, ident(group[item_start..].trim_start()));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        push(at, ident(group[item_start..].trim_start()));
                        item_start = i + 1;
                    }
                    _ => {}
                }
            }
            continue;
        }
        let name = ident(rest);
        if rest[name.len()..].starts_with('!') {
            continue;
        }
        push(at, name);
    }
    out
}

/// Every import that points up, or at a module the table does not place.
fn violations(layers: &Layers, imports: &[Import]) -> Vec<String> {
    let mut out = Vec::new();
    for i in imports {
        match (layers.get(&i.from), layers.get(&i.to)) {
            (Some(from), Some(to)) if to > from => out.push(format!(
                "{}:{}: `{}` (layer {from}) imports `{}` (layer {to}), which is above it",
                i.file, i.line, i.from, i.to
            )),
            (Some(_), Some(_)) => {}
            (None, _) => out.push(format!(
                "{}:{}: module `{}` is in no layer of ARCHITECTURE.md",
                i.file, i.line, i.from
            )),
            (_, None) => out.push(format!(
                "{}:{}: `{}` imports `{}`, which is in no layer of ARCHITECTURE.md",
                i.file, i.line, i.from, i.to
            )),
        }
    }
    out
}

/// The pairs of modules that reach each other through imports (each pair once), with an
/// import of each direction's first step.
fn circles(imports: &[Import]) -> Vec<String> {
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for i in imports {
        edges.entry(&i.from).or_default().insert(&i.to);
    }
    let reach = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from];
        while let Some(m) = todo.pop() {
            for next in edges.get(m).into_iter().flatten() {
                if seen.insert(*next) {
                    todo.push(next);
                }
            }
        }
        seen
    };
    let modules: BTreeSet<&str> = edges.keys().copied().collect();
    let mut out = Vec::new();
    for a in &modules {
        let from_a = reach(a);
        for b in modules.iter().filter(|b| a < *b && from_a.contains(**b)) {
            if reach(b).contains(a) {
                out.push(format!(
                    "`{a}` and `{b}` import each other (through some path)"
                ));
            }
        }
    }
    out
}

fn cloud_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Whether a file holds only tests (`tests.rs`, `*_tests.rs`).
fn is_test_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name == "tests.rs" || name.ends_with("_tests.rs")
}

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a readable directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") && !is_test_file(&path) {
            out.push(path);
        }
    }
}

/// Every import of the product's code under `cloud/src` (not lib.rs, which declares the
/// modules, nor main.rs, the binary, which imports through `omo_cloud::`).
fn all_imports() -> Vec<Import> {
    let src = cloud_src();
    let mut files = Vec::new();
    source_files(&src, &mut files);
    let mut out = Vec::new();
    for path in files {
        let rel = path.strip_prefix(&src).expect("under src");
        let first = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .expect("a path inside src");
        let module = first.strip_suffix(".rs").unwrap_or(first);
        if module == "lib" || module == "main" {
            continue;
        }
        // `a.rs` and `a/mod.rs` are one deep, `a/b.rs` two, …
        let parts = rel.components().count();
        let depth = if rel.ends_with("mod.rs") {
            parts - 1
        } else {
            parts
        };
        let source = std::fs::read_to_string(&path).expect("a readable source file");
        out.extend(imports(
            &format!("cloud/src/{}", rel.display()),
            module,
            depth,
            &source,
        ));
    }
    out
}

/// The modules lib.rs declares.
fn declared_modules() -> BTreeSet<String> {
    let lib = std::fs::read_to_string(cloud_src().join("lib.rs")).expect("lib.rs");
    lib.lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .filter_map(|l| l.strip_suffix(';'))
        .map(str::to_owned)
        .collect()
}

fn architecture() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ARCHITECTURE.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_module_imports_only_its_layer_and_those_below_without_circles() {
    let layers = layers_from(&architecture()).unwrap_or_else(|e| panic!("{e}"));
    let declared = declared_modules();
    let placed: BTreeSet<String> = layers.keys().cloned().collect();
    let unplaced: Vec<&String> = declared.difference(&placed).collect();
    assert!(
        unplaced.is_empty(),
        "modules of cloud/src/lib.rs in no layer of ARCHITECTURE.md: {unplaced:?}"
    );
    let gone: Vec<&String> = placed.difference(&declared).collect();
    assert!(
        gone.is_empty(),
        "ARCHITECTURE.md places modules cloud/src/lib.rs does not declare: {gone:?}"
    );
    let imports = all_imports();
    assert!(imports.len() > 100, "found only {} imports", imports.len());
    let wrong = violations(&layers, &imports);
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let circles = circles(&imports);
    assert!(circles.is_empty(), "{}", circles.join("\n"));
}

#[test]
fn a_planted_upward_import_is_caught_with_its_file_and_line() {
    let layers = layers_from(
        "| layer | modules | what |\n| --- | --- | --- |\n\
         | 2 top | `http` | surfaces |\n| 1 bottom | `store`, `tls` | storage |\n",
    )
    .unwrap();
    let source = "//! The store.\n\
                  use crate::tls;\n\
                  // crate::http in a comment is no import\n\
                  fn f() { crate::crash_point!(\"x\"); }\n\
                  use crate::{tls::install, http::AppState};\n\
                  fn g() -> crate::http::ApiError { todo!() }\n\
                  #[cfg(test)]\nmod tests {\n    use crate::http::AppState;\n}\n";
    let found = imports("cloud/src/store/mod.rs", "store", 1, source);
    let to: Vec<(usize, &str)> = found.iter().map(|i| (i.line, i.to.as_str())).collect();
    assert_eq!(to, [(2, "tls"), (5, "tls"), (5, "http"), (6, "http")]);
    assert_eq!(
        violations(&layers, &found),
        [
            "cloud/src/store/mod.rs:5: `store` (layer 1) imports `http` (layer 2), which is above it",
            "cloud/src/store/mod.rs:6: `store` (layer 1) imports `http` (layer 2), which is above it",
        ]
    );
    // A module the table does not place is named too.
    let stray = imports("cloud/src/new.rs", "new", 1, "use crate::store::Store;\n");
    assert_eq!(
        violations(&layers, &stray),
        ["cloud/src/new.rs:1: module `new` is in no layer of ARCHITECTURE.md"]
    );
}

#[test]
fn a_circle_inside_a_layer_is_caught() {
    let a = imports("cloud/src/a.rs", "a", 1, "use crate::b::X;\n");
    let b = imports("cloud/src/b/mod.rs", "b", 1, "use crate::c::Y;\n");
    let c = imports("cloud/src/c.rs", "c", 1, "use crate::a::Z;\n");
    let all: Vec<Import> = [a, b, c].concat();
    assert_eq!(circles(&all).len(), 3, "{:?}", circles(&all));
    assert!(circles(&all[..2]).is_empty());
}

#[test]
fn a_module_in_two_layers_is_an_error() {
    let e = layers_from("| 2 top | `http` | x |\n| 1 bottom | `http` | y |\n").unwrap_err();
    assert!(e.contains("`http` is in layer 1 and in layer 2"), "{e}");
}

#[test]
fn a_super_chain_that_climbs_to_the_root_is_an_import_too() {
    // In store/mod.rs (one deep) `super::http` is the crate's `http`; in store/barrier.rs
    // (two deep) `super::Store` stays in `store` and `super::super::http` leaves it.
    let top = imports(
        "cloud/src/store/mod.rs",
        "store",
        1,
        "use super::http::X;\n",
    );
    assert_eq!(
        top.iter().map(|i| i.to.as_str()).collect::<Vec<_>>(),
        ["http"]
    );
    let nested = imports(
        "cloud/src/store/barrier.rs",
        "store",
        2,
        "use super::Store;\nfn f() { super::super::http::g(); }\n",
    );
    assert_eq!(
        nested
            .iter()
            .map(|i| (i.line, i.to.as_str()))
            .collect::<Vec<_>>(),
        [(2, "http")]
    );
}

/// Each space and the modules that may write it, as paths under `cloud/src` without `.rs`
/// (`visits`, `tallies/hours`, `http/purchases`): from the owner table of ARCHITECTURE.md,
/// every name in backticks in a row's owner cell (the owner and, in parentheses, the parts
/// that keep their own rows in the space).
type Owners = BTreeMap<String, Vec<String>>;

fn owners_from(architecture: &str) -> Result<Owners, String> {
    let mut owners = Owners::new();
    // The rows of the table headed `| space | owner | … |`, up to the next non-table line.
    let mut in_table = false;
    for line in architecture.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 || !cells[0].is_empty() {
            in_table = false;
            continue;
        }
        if cells[1] == "space" && cells[2] == "owner" {
            in_table = true;
            continue;
        }
        if !in_table || !cells[1].starts_with('`') {
            continue;
        }
        let writers: Vec<String> = cells[2]
            .split('`')
            .skip(1)
            .step_by(2)
            .map(|w| w.replace("::", "/").trim_end_matches(".rs").to_owned())
            .collect();
        for space in cells[1].split('`').skip(1).step_by(2) {
            if owners.insert(space.to_owned(), writers.clone()).is_some() {
                return Err(format!("ARCHITECTURE.md names the space `{space}` twice"));
            }
        }
    }
    if owners.is_empty() {
        return Err("ARCHITECTURE.md has no owner table".into());
    }
    Ok(owners)
}

/// A write of a space named in the source: `.put(Space::X` or `.delete(Space::X`, the
/// arguments on one line or several.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Write {
    file: String,
    line: usize,
    space: String,
}

fn writes(file: &str, source: &str) -> Vec<Write> {
    let code = product_code(source);
    let mut out = Vec::new();
    for (at, _) in code.match_indices("Space::") {
        let before = code[..at]
            .trim_end_matches("crate::store::")
            .trim_end_matches("store::")
            .trim_end();
        // The first argument of a commit's put or delete, or the space of a deleting walk:
        // `store::sweep`'s `Rows` and `delete_prefix(store, …)`, `delete_keys(store, …)`.
        let deleting_walk = before
            .strip_suffix(',')
            .map(|b| b.trim_end_matches(|c: char| c.is_ascii_alphanumeric() || c == '_'))
            .is_some_and(|b| b.ends_with("delete_prefix(") || b.ends_with("delete_keys("));
        if before.ends_with(".put(")
            || before.ends_with(".delete(")
            || before.ends_with("space:")
            || deleting_walk
        {
            out.push(Write {
                file: file.to_owned(),
                line: code[..at].matches('\n').count() + 1,
                space: ident(&code[at + "Space::".len()..]).to_owned(),
            });
        }
    }
    out
}

/// The module path of a file under `cloud/src` (`visits/stage.rs` → `visits/stage`,
/// `visits/mod.rs` → `visits`).
fn module_path(rel: &str) -> String {
    let path = rel.trim_end_matches(".rs");
    path.strip_suffix("/mod").unwrap_or(path).to_owned()
}

/// Every write whose file is not among its space's writers. The storage itself
/// (`store/`) writes what it is handed and is not checked.
fn foreign_writes(owners: &Owners, writes: &[Write]) -> Vec<String> {
    let mut out = Vec::new();
    for w in writes {
        let rel = w.file.trim_start_matches("cloud/src/");
        let module = module_path(rel);
        if module == "store" || module.starts_with("store/") {
            continue;
        }
        let Some(writers) = owners.get(&w.space) else {
            out.push(format!(
                "{}:{}: writes `{}`, a space the owner table does not name",
                w.file, w.line, w.space
            ));
            continue;
        };
        let allowed = writers
            .iter()
            .any(|o| module == *o || module.starts_with(&format!("{o}/")));
        if !allowed {
            out.push(format!(
                "{}:{}: writes the `{}` space, owned by {}: call an operation of its owner",
                w.file,
                w.line,
                w.space,
                writers.join(", ")
            ));
        }
    }
    out
}

fn all_writes() -> Vec<Write> {
    let src = cloud_src();
    let mut files = Vec::new();
    source_files(&src, &mut files);
    let mut out = Vec::new();
    for path in files {
        let rel = path.strip_prefix(&src).expect("under src");
        let source = std::fs::read_to_string(&path).expect("a readable source file");
        out.extend(writes(&format!("cloud/src/{}", rel.display()), &source));
    }
    out
}

#[test]
fn every_space_is_written_only_by_its_owners() {
    let owners = owners_from(&architecture()).unwrap_or_else(|e| panic!("{e}"));
    for space in omo_cloud::store::Space::ALL {
        let name = format!("{space:?}");
        assert!(
            owners.contains_key(&name),
            "the owner table of ARCHITECTURE.md has no row for the `{name}` space"
        );
    }
    let writes = all_writes();
    assert!(writes.len() > 50, "found only {} writes", writes.len());
    let wrong = foreign_writes(&owners, &writes);
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn a_planted_foreign_write_is_caught_with_its_file_and_line() {
    let owners = owners_from(
        "| space | owner | what |\n| --- | --- | --- |\n\
         | `Visits` | `visits` (hour tallies: `tallies::hours`) | visits |\n\
         | `Meta` | `secrets` (e-commerce keys: `http/purchases.rs`) | markers |\n",
    )
    .unwrap();
    let source = "fn f(c: &mut Commit) {\n\
                  c.put(Space::Visits, k, v);\n\
                  c.delete(\n    Space::Meta,\n    k,\n);\n\
                  store.get(Space::Visits, k);\n\
                  c.expect(Space::Visits, k, None);\n}\n";
    let found = writes("cloud/src/privacy/retention.rs", source);
    assert_eq!(
        found
            .iter()
            .map(|w| (w.line, w.space.as_str()))
            .collect::<Vec<_>>(),
        [(2, "Visits"), (4, "Meta")]
    );
    assert_eq!(
        foreign_writes(&owners, &found),
        [
            "cloud/src/privacy/retention.rs:2: writes the `Visits` space, owned by visits, tallies/hours: call an operation of its owner",
            "cloud/src/privacy/retention.rs:4: writes the `Meta` space, owned by secrets, http/purchases: call an operation of its owner",
        ]
    );
    // The owners write their own: the module, its files, the named parts.
    for file in [
        "cloud/src/visits/mod.rs",
        "cloud/src/visits/stage/journal.rs",
        "cloud/src/tallies/hours.rs",
    ] {
        let own = writes(file, "c.put(Space::Visits, k, v);\n");
        assert!(foreign_writes(&owners, &own).is_empty(), "{file}");
    }
    let meta = writes("cloud/src/http/purchases.rs", "c.put(Space::Meta, k, v);\n");
    assert!(foreign_writes(&owners, &meta).is_empty());
}

#[test]
fn a_write_planted_in_the_real_tree_is_caught_by_the_real_table() {
    let owners = owners_from(&architecture()).unwrap_or_else(|e| panic!("{e}"));
    let path = cloud_src().join("privacy/erasure.rs");
    let source = std::fs::read_to_string(&path).expect("privacy/erasure.rs");
    let planted = format!(
        "fn planted(c: &mut Commit, store: &dyn Store) {{\n    \
         c.delete(crate::store::Space::Visits, b\"visit/v1\".to_vec());\n    \
         let _ = delete_prefix(store, Space::Transitions, \"\");\n}}\n{source}"
    );
    let found = writes("cloud/src/privacy/erasure.rs", &planted);
    let wrong = foreign_writes(&owners, &found);
    assert_eq!(wrong.len(), 2, "{wrong:?}");
    assert!(wrong[0].starts_with("cloud/src/privacy/erasure.rs:2: writes the `Visits` space"));
    assert!(wrong[1].starts_with("cloud/src/privacy/erasure.rs:3: writes the `Transitions` space"));
    // The owner's walk in its own file is its own.
    let own = writes(
        "cloud/src/visits/forget.rs",
        "let rows = Rows {\n    kind: \"visits\",\n    space: Space::Visits,\n};\n",
    );
    assert_eq!(own.len(), 1);
    assert!(foreign_writes(&owners, &own).is_empty());
}

// ---- Sizes: a file or a function a newcomer can hold in their head ----

/// The longest product source file, in lines (ARCHITECTURE.md: about 600).
const MAX_FILE_LINES: usize = 620;
/// The longest product function, in lines from its `fn` line to its closing brace (about 80; the
/// admin route table is the one table near the limit).
const MAX_FN_LINES: usize = 95;

/// Functions of `code` longer than `max` lines, as (name, first line, length). A function ends
/// at the first later line that is its own indentation followed by `}`.
fn long_functions(code: &str, max: usize) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = code.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let Some(at) = trimmed.find("fn ") else {
            continue;
        };
        let head = &trimmed[..at];
        let is_fn = head
            .split_whitespace()
            .all(|w| matches!(w, "pub" | "const" | "async" | "unsafe") || w.starts_with("pub("));
        if !is_fn || trimmed.ends_with(';') {
            continue;
        }
        let name = ident(&trimmed[at + 3..]).to_owned();
        let closing = format!("{indent}}}");
        if let Some(end) = lines[i + 1..].iter().position(|l| *l == closing) {
            let len = end + 2;
            if len > max {
                out.push((name, i + 1, len));
            }
        }
    }
    out
}

#[test]
fn no_product_file_or_function_is_too_long_to_read() {
    let src = cloud_src();
    let mut files = Vec::new();
    source_files(&src, &mut files);
    let mut problems = Vec::new();
    for path in files {
        let source = std::fs::read_to_string(&path).expect("a readable source file");
        let code = product_code(&source);
        let rel = path
            .strip_prefix(&src)
            .unwrap_or(&path)
            .display()
            .to_string();
        let n = code.lines().count();
        if n > MAX_FILE_LINES {
            problems.push(format!("{rel}: {n} lines (at most {MAX_FILE_LINES})"));
        }
        for (name, line, len) in long_functions(&code, MAX_FN_LINES) {
            problems.push(format!(
                "{rel}:{line}: fn {name} is {len} lines (at most {MAX_FN_LINES})"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "split these along their steps:\n{}",
        problems.join("\n")
    );
}

#[test]
fn a_long_function_is_found_with_its_line_and_length() {
    let body = "    let x = 1;\n".repeat(10);
    let code = format!(
        "struct A;\nimpl A {{\n    pub(crate) async fn long(&self) {{\n{body}    }}\n    fn short() {{}}\n}}\nfn decl();\n"
    );
    assert_eq!(long_functions(&code, 11), vec![("long".to_owned(), 3, 12)]);
    assert!(long_functions(&code, 12).is_empty());
}
