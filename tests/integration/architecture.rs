//! The architecture check: reads every source file under `src/` (no build, no running) and fails
//! when a module imports a layer above its own, when two peer layers import each other, when
//! files import each other in a circle, when anything outside `src/isolate/` names the
//! JavaScript engine (deno_core, deno_error), or when a struct field has no doc comment. The
//! layer order is the one `src/lib.rs` documents.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layers, lowest first: `(module path prefix, layer, peer group)`. The longest matching prefix
/// wins. Modules of one layer may import each other only within their peer group.
const LAYERS: &[(&str, u8, &str)] = &[
    ("event", 0, "vocabulary"),
    ("limits", 0, "vocabulary"),
    ("stats", 0, "vocabulary"),
    ("memory", 0, "vocabulary"),
    ("logbook", 0, "vocabulary"),
    ("workspace", 1, "workspace"),
    ("net", 1, "net"),
    ("isolate::ops", 2, "ops"),
    ("cluster", 2, "cluster"),
    ("isolate", 3, "isolate"),
    ("endpoints", 4, "endpoints"),
    ("server", 5, "server"),
    ("app", 6, "app"),
    ("main", 7, "main"),
];

/// Crates only the isolate layer may name.
const ENGINE_CRATES: &[&str] = &["deno_core", "deno_error"];

/// One source file: its module path and what it refers to.
#[derive(Debug)]
struct Source {
    /// The file, relative to the crate.
    file: String,
    /// Its module path (`net::pump`; `main` for the binary).
    module: Vec<String>,
    /// The code with comments and string literals blanked out.
    code: String,
}

#[test]
fn every_import_points_down_the_layers_and_only_isolate_names_the_engine() {
    let sources = read_sources();
    let violations = check(&sources);
    assert!(
        violations.is_empty(),
        "the architecture check failed:\n  {}",
        violations.join("\n  ")
    );
}

#[test]
fn every_struct_field_says_why_it_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut missing = Vec::new();
    for file in rust_files(&root.join("src")) {
        let text = std::fs::read_to_string(&file).unwrap();
        let shown = file.strip_prefix(root).unwrap().display().to_string();
        missing.extend(
            undocumented_fields(&text)
                .into_iter()
                .map(|(line, field)| format!("{shown}:{line}: field `{field}` has no doc comment")),
        );
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

/// The check itself, on any set of sources (the tests below feed it wrong ones).
fn check(sources: &[Source]) -> Vec<String> {
    let mut violations = Vec::new();
    let modules: BTreeSet<Vec<String>> = sources.iter().map(|s| s.module.clone()).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for source in sources {
        let (layer, group) = layer_of(&source.module);
        if !source.file.starts_with("src/isolate/") {
            for engine in ENGINE_CRATES {
                if names(&source.code, engine) {
                    violations.push(format!(
                        "{} names {engine}: only src/isolate/ may use the JavaScript engine",
                        source.file
                    ));
                }
            }
        }
        for (path, line) in references(source) {
            let Some(target) = owning_module(&modules, &path) else {
                continue;
            };
            if target == source.module {
                continue;
            }
            let target_file = &sources
                .iter()
                .find(|s| s.module == target)
                .expect("every module has a file")
                .file;
            edges
                .entry(source.file.clone())
                .or_default()
                .insert(target_file.clone());
            let (target_layer, target_group) = layer_of(&target);
            let shown = path.join("::");
            if target_layer > layer {
                violations.push(format!(
                    "{}:{line}: imports {shown} ({target_file}, layer {target_layer}) from layer {layer}: imports must point down",
                    source.file
                ));
            } else if target_layer == layer && target_group != group {
                violations.push(format!(
                    "{}:{line}: imports {shown} ({target_file}): {group} and {target_group} are peers and may not import each other",
                    source.file
                ));
            }
        }
    }
    for group in circles(&edges) {
        violations.push(format!(
            "files import each other in a circle: {} (all of {} are in one circle)",
            shortest_circle(&edges, &group).join(" -> "),
            group.join(", ")
        ));
    }
    violations
}

/// The layer and peer group of a module.
fn layer_of(module: &[String]) -> (u8, &'static str) {
    let joined = module.join("::");
    LAYERS
        .iter()
        .filter(|(prefix, _, _)| joined == *prefix || joined.starts_with(&format!("{prefix}::")))
        .max_by_key(|(prefix, _, _)| prefix.len())
        .map(|(_, layer, group)| (*layer, *group))
        .unwrap_or_else(|| panic!("module {joined} is in no layer: add it to LAYERS"))
}

/// Every `src/**/*.rs` file, with its module path and its code.
fn read_sources() -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut sources = Vec::new();
    for file in rust_files(&root.join("src")) {
        let relative = file.strip_prefix(root.join("src")).unwrap();
        let mut module: Vec<String> = relative
            .with_extension("")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if module.last().is_some_and(|last| last == "mod") {
            module.pop();
        }
        if module == ["lib"] {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        sources.push(Source {
            file: file.strip_prefix(root).unwrap().display().to_string(),
            module,
            code: blank_comments_and_strings(&text),
        });
    }
    sources
}

fn rust_files(folder: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(folder).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// Whether `code` uses the crate `name` (as a path, not inside another identifier).
fn names(code: &str, name: &str) -> bool {
    code.match_indices(name).any(|(at, _)| {
        let before = code[..at].chars().next_back();
        let after = code[at + name.len()..].chars().next();
        !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
            && !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

/// The module paths `source` refers to (`crate::`, `super::`, `self::`, and in `main.rs`
/// `switchboard::`), resolved to absolute paths, with the line of each.
fn references(source: &Source) -> Vec<(Vec<String>, usize)> {
    let mut found = Vec::new();
    let inline_modules = inline_module_spans(&source.code);
    let declared_children = declared_modules(&source.code);
    for (at, _) in source.code.match_indices("use ") {
        if !is_word_start(&source.code, at) {
            continue;
        }
        let Some(end) = source.code[at..].find(';') else {
            continue;
        };
        let tree = &source.code[at + 4..at + end];
        let line = source.code[..at].matches('\n').count() + 1;
        let base = module_at(source, &inline_modules, at);
        for path in expand_use_tree(tree.trim()) {
            if let Some(resolved) = resolve(&path, &base, &declared_children, source) {
                found.push((resolved, line));
            }
        }
    }
    // Paths written inline, outside `use` statements.
    for prefix in ["crate::", "super::", "switchboard::"] {
        for (at, _) in source.code.match_indices(prefix) {
            if !is_word_start(&source.code, at) || inside_use(&source.code, at) {
                continue;
            }
            let path: Vec<String> = source.code[at..]
                .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .next()
                .unwrap_or_default()
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            let line = source.code[..at].matches('\n').count() + 1;
            let base = module_at(source, &inline_modules, at);
            if let Some(resolved) = resolve(&path, &base, &declared_children, source) {
                found.push((resolved, line));
            }
        }
    }
    found
}

fn is_word_start(code: &str, at: usize) -> bool {
    !code[..at]
        .chars()
        .next_back()
        .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
}

/// Whether `at` is inside a `use ...;` statement.
fn inside_use(code: &str, at: usize) -> bool {
    let statement_start = code[..at].rfind([';', '{', '}']).map_or(0, |i| i + 1);
    code[statement_start..at]
        .split(|c: char| c.is_whitespace())
        .any(|word| word == "use")
}

/// `a::{b, c::{d, e}}` as `[a::b, a::c::d, a::c::e]` (aliases and globs dropped).
fn expand_use_tree(tree: &str) -> Vec<Vec<String>> {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let prefix = tree[..open].trim().trim_end_matches("::");
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let mut paths = Vec::new();
        for part in split_top_level(inner) {
            for mut path in expand_use_tree(&part) {
                let mut full: Vec<String> = prefix
                    .split("::")
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect();
                full.append(&mut path);
                paths.push(full);
            }
        }
        return paths;
    }
    let path = tree.split(" as ").next().unwrap_or_default().trim();
    vec![path
        .split("::")
        .map(str::trim)
        .filter(|s| !s.is_empty() && *s != "*")
        .map(str::to_string)
        .collect()]
}

fn split_top_level(inner: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut current = String::new();
    for c in inner.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current);
    parts.into_iter().filter(|p| !p.trim().is_empty()).collect()
}

/// A path as written, made absolute from the module `base` it is written in; `None` for paths
/// into other crates.
fn resolve(
    path: &[String],
    base: &[String],
    children: &BTreeSet<String>,
    source: &Source,
) -> Option<Vec<String>> {
    let first = path.first()?;
    match first.as_str() {
        "crate" => Some(path[1..].to_vec()),
        "switchboard" if source.module == ["main"] => Some(path[1..].to_vec()),
        "self" => Some(
            base.iter()
                .cloned()
                .chain(path[1..].iter().cloned())
                .collect(),
        ),
        "super" => {
            let mut resolved = base.to_vec();
            let mut rest = path;
            while rest.first().is_some_and(|s| s == "super") {
                resolved.pop();
                rest = &rest[1..];
            }
            resolved.extend(rest.iter().cloned());
            Some(resolved)
        }
        child if children.contains(child) => {
            Some(base.iter().cloned().chain(path.iter().cloned()).collect())
        }
        _ => None,
    }
}

/// The longest module path of the crate that `path` starts with.
fn owning_module(modules: &BTreeSet<Vec<String>>, path: &[String]) -> Option<Vec<String>> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|prefix| modules.contains(prefix))
}

/// The modules a file declares with `mod name;`.
fn declared_modules(code: &str) -> BTreeSet<String> {
    code.lines()
        .filter_map(|line| {
            let line = line.trim();
            let line = line.strip_prefix("pub ").unwrap_or(line);
            let name = line.strip_prefix("mod ")?.strip_suffix(';')?;
            Some(name.trim().to_string())
        })
        .collect()
}

/// `(start, end, name)` of every inline `mod name { ... }` block (such as `mod tests`).
fn inline_module_spans(code: &str) -> Vec<(usize, usize, String)> {
    let mut spans = Vec::new();
    for (at, _) in code.match_indices("mod ") {
        if !is_word_start(code, at) {
            continue;
        }
        let rest = &code[at + 4..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let after = rest[name.len()..].trim_start();
        if name.is_empty() || !after.starts_with('{') {
            continue;
        }
        let open = at + 4 + rest.find('{').unwrap();
        let mut depth = 0;
        for (offset, c) in code[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        spans.push((open, open + offset, name));
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    spans
}

/// The module a position of the file is in (the file's own, or an inline module inside it).
fn module_at(source: &Source, spans: &[(usize, usize, String)], at: usize) -> Vec<String> {
    let mut module = source.module.clone();
    for (start, end, name) in spans {
        if *start < at && at < *end {
            module.push(name.clone());
        }
    }
    module
}

/// Comments and the contents of string literals replaced by spaces (lines kept), so that only
/// code is read.
fn blank_comments_and_strings(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |s: &str| {
        s.chars()
            .map(|c| if c == '\n' { '\n' } else { ' ' })
            .collect::<String>()
    };
    while i < bytes.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            let end = rest.find('\n').unwrap_or(rest.len());
            out.push_str(&blank(&rest[..end]));
            i += end;
        } else if rest.starts_with("/*") {
            let end = rest.find("*/").map_or(rest.len(), |e| e + 2);
            out.push_str(&blank(&rest[..end]));
            i += end;
        } else if rest.starts_with("r#\"") || rest.starts_with("r\"") {
            let hashes = rest[1..].chars().take_while(|c| *c == '#').count();
            let closing = format!("\"{}", "#".repeat(hashes));
            let body = 2 + hashes;
            let end = rest[body..]
                .find(&closing)
                .map_or(rest.len(), |e| body + e + closing.len());
            out.push_str(&blank(&rest[..end]));
            i += end;
        } else if rest.starts_with('"') {
            let mut end = 1;
            let chars: Vec<(usize, char)> = rest.char_indices().collect();
            let mut k = 1;
            while k < chars.len() {
                match chars[k].1 {
                    '\\' => k += 2,
                    '"' => {
                        end = chars[k].0 + 1;
                        break;
                    }
                    _ => k += 1,
                }
                end = chars.get(k).map_or(rest.len(), |c| c.0);
            }
            out.push_str(&blank(&rest[..end]));
            i += end;
        } else if rest.starts_with('\'') && rest[1..].chars().nth(1) == Some('\'') {
            // A character literal such as '{' (not a lifetime).
            let end = 1 + rest[1..].chars().next().unwrap().len_utf8() + 1;
            out.push_str(&blank(&rest[..end]));
            i += end;
        } else if let Some(escaped) = rest.strip_prefix("'\\") {
            let end = escaped.find('\'').map_or(rest.len(), |e| e + 3);
            out.push_str(&blank(&rest[..end]));
            i += end;
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// Every circle in the file graph (one file list per strongly connected group of files).
fn circles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Tarjan's strongly connected components.
    struct Walk<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        found: Vec<Vec<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, node: &'a str) {
            self.index.insert(node, self.next);
            self.low.insert(node, self.next);
            self.next += 1;
            self.stack.push(node);
            self.on_stack.insert(node);
            if let Some(targets) = self.edges.get(node) {
                for target in targets {
                    if !self.index.contains_key(target.as_str()) {
                        self.visit(target);
                        let low = self.low[node].min(self.low[target.as_str()]);
                        self.low.insert(node, low);
                    } else if self.on_stack.contains(target.as_str()) {
                        let low = self.low[node].min(self.index[target.as_str()]);
                        self.low.insert(node, low);
                    }
                }
            }
            if self.low[node] == self.index[node] {
                let mut group = Vec::new();
                while let Some(member) = self.stack.pop() {
                    self.on_stack.remove(member);
                    group.push(member.to_string());
                    if member == node {
                        break;
                    }
                }
                if group.len() > 1 {
                    group.sort();
                    self.found.push(group);
                }
            }
        }
    }
    let mut walk = Walk {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for node in edges.keys() {
        if !walk.index.contains_key(node.as_str()) {
            walk.visit(node);
        }
    }
    walk.found
}

/// The shortest circle through the first file of `group` (files that import each other), as the
/// path of imports from it back to it.
fn shortest_circle(edges: &BTreeMap<String, BTreeSet<String>>, group: &[String]) -> Vec<String> {
    let start = &group[0];
    let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start.as_str()]);
    while let Some(node) = queue.pop_front() {
        for next in edges.get(node).into_iter().flatten() {
            if !group.contains(next) {
                continue;
            }
            if next == start {
                let mut path = vec![start.clone()];
                let mut at = node;
                while at != start {
                    path.push(at.to_string());
                    at = came_from[at];
                }
                path.push(start.clone());
                path.reverse();
                return path;
            }
            if !came_from.contains_key(next.as_str()) {
                came_from.insert(next, node);
                queue.push_back(next);
            }
        }
    }
    group.to_vec()
}

/// `(line, field)` of every named field of a struct (or of an enum's struct variant) without a
/// `///` doc comment above it (attributes between are allowed).
fn undocumented_fields(text: &str) -> Vec<(usize, String)> {
    /// What a `{ ... }` block holds.
    #[derive(Clone, Copy, PartialEq)]
    enum Block {
        /// Named fields (a struct's body, or a struct variant's).
        Fields,
        /// An enum's variants.
        Variants,
        /// Anything else.
        Other,
    }
    let code = blank_comments_and_strings(text);
    let text_lines: Vec<&str> = text.lines().collect();
    let mut missing = Vec::new();
    let mut blocks: Vec<Block> = Vec::new();
    let mut previous_code_line = "";
    for (number, line) in code.lines().enumerate() {
        if blocks.last() == Some(&Block::Fields) {
            if let Some(field) = field_name(line.trim()) {
                let documented = text_lines[..number]
                    .iter()
                    .rev()
                    .map(|l| l.trim())
                    .find(|l| !l.starts_with("#["))
                    .is_some_and(|l| l.starts_with("///"));
                if !documented {
                    missing.push((number + 1, field));
                }
            }
        }
        for (at, c) in line.char_indices() {
            match c {
                '{' => {
                    let head = match line[..at].trim() {
                        "" => previous_code_line,
                        head => head,
                    };
                    let words: Vec<&str> = head.split_whitespace().collect();
                    let block = if words.contains(&"struct") {
                        Block::Fields
                    } else if words.contains(&"enum") {
                        Block::Variants
                    } else if blocks.last() == Some(&Block::Variants) {
                        Block::Fields
                    } else {
                        Block::Other
                    };
                    blocks.push(block);
                }
                '}' => {
                    blocks.pop();
                }
                _ => {}
            }
        }
        if !line.trim().is_empty() {
            previous_code_line = line.trim();
        }
    }
    missing
}

/// The field a line declares (`pub name: Type,` or `name: Type,`), if it declares one.
fn field_name(line: &str) -> Option<String> {
    let line = line
        .strip_prefix("pub(crate) ")
        .or_else(|| line.strip_prefix("pub(super) "))
        .or_else(|| line.strip_prefix("pub "))
        .unwrap_or(line);
    let name: String = line
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    let after = line[name.len()..].trim_start();
    let is_field = !name.is_empty()
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_lowercase() || c == '_')
        && after.starts_with(':')
        && !after.starts_with("::");
    is_field.then_some(name)
}

#[cfg(test)]
mod the_check_itself {
    use super::*;

    fn source(file: &str, module: &str, code: &str) -> Source {
        Source {
            file: file.into(),
            module: module.split("::").map(str::to_string).collect(),
            code: blank_comments_and_strings(code),
        }
    }

    #[test]
    fn an_upward_import_a_peer_import_a_circle_and_the_engine_outside_isolate_fail() {
        let sources = vec![
            source("src/event.rs", "event", "use crate::net::pump::Ending;"),
            source(
                "src/net/pump.rs",
                "net::pump",
                "use crate::workspace::Endpoint;\nuse super::outbox::Outbox;",
            ),
            source(
                "src/net/outbox.rs",
                "net::outbox",
                "use super::pump::Ending;",
            ),
            source(
                "src/workspace/mod.rs",
                "workspace",
                "fn f() { let _ = deno_core::v8::undefined; }",
            ),
            source(
                "src/isolate/mod.rs",
                "isolate",
                "use deno_core::v8; use crate::net::pump::Ending;",
            ),
        ];
        let violations = check(&sources);
        let text = violations.join("\n");
        assert!(
            text.contains(
                "src/event.rs:1: imports net::pump::Ending (src/net/pump.rs, layer 1) from layer 0"
            ),
            "{text}"
        );
        assert!(text.contains("src/net/pump.rs:1: imports workspace::Endpoint (src/workspace/mod.rs): net and workspace are peers"), "{text}");
        assert!(
            text.contains("circle: src/net/outbox.rs -> src/net/pump.rs -> src/net/outbox.rs"),
            "{text}"
        );
        assert!(
            text.contains("src/workspace/mod.rs names deno_core"),
            "{text}"
        );
        assert!(!text.contains("src/isolate/mod.rs"), "{text}");
        assert_eq!(violations.len(), 4, "{text}");
    }

    #[test]
    fn comments_strings_and_other_crates_are_not_imports() {
        let sources = vec![
            source(
                "src/event.rs",
                "event",
                "// use crate::server::AppState;\n/// [`crate::server`]\nconst S: &str = \"crate::server::x deno_core\";\nuse tokio::sync::oneshot;",
            ),
            source("src/server/mod.rs", "server", ""),
        ];
        assert_eq!(check(&sources), Vec::<String>::new());
    }

    #[test]
    fn grouped_and_relative_imports_are_resolved() {
        let sources = vec![
            source("src/net/mod.rs", "net", "mod pump;\npub use pump::Ending;"),
            source(
                "src/net/pump.rs",
                "net::pump",
                "use crate::{event::Target, endpoints::Runtime};\nmod tests { use super::*; }",
            ),
            source("src/event.rs", "event", ""),
            source("src/endpoints/mod.rs", "endpoints", ""),
        ];
        let text = check(&sources).join("\n");
        assert!(
            text.contains("src/net/pump.rs:1: imports endpoints::Runtime"),
            "{text}"
        );
        assert!(!text.contains("circle"), "{text}");
    }

    #[test]
    fn fields_without_doc_comments_are_found() {
        let code = "struct A {\n    /// Why.\n    a: u8,\n    b: u8,\n}\nenum E {\n    V {\n        /// Why.\n        x: u8,\n        y: u8,\n    },\n}\nfn f() { let s = S { c: 1 }; }\n";
        let found: Vec<String> = undocumented_fields(code)
            .into_iter()
            .map(|(l, f)| format!("{l}:{f}"))
            .collect();
        assert_eq!(found, vec!["4:b", "10:y"]);
    }
}
