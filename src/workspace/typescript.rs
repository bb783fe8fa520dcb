//! TypeScript modules (`.ts`, `.mts`, `.cts`): types removed and TC39 decorators turned into
//! plain JavaScript on load, by swc through `deno_ast` (the transpiler deno itself uses, tested
//! with deno_core), with a source map back to the TypeScript text. No type checking: a type error
//! is not a load error. What was transpiled is cached by content, so a reload of an unchanged file
//! costs nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use deno_ast::diagnostics::Diagnostic;
use deno_ast::{
    DecoratorsTranspileOption, EmitOptions, MediaType, ModuleKind as SwcModuleKind,
    ParseDiagnostic, ParseParams, SourceMapOption, TranspileModuleOptions, TranspileOptions,
};
use parking_lot::Mutex;

/// Transpiled modules kept: enough for every module of a large workspace, several versions each.
const CACHE_ENTRIES: usize = 2048;

/// A TypeScript module as JavaScript.
#[derive(Debug)]
pub struct Transpiled {
    /// The JavaScript.
    pub code: Arc<str>,
    /// The source map from the JavaScript back to the TypeScript (JSON).
    pub source_map: Option<Arc<[u8]>>,
    /// A hash of the TypeScript text it was made from.
    pub source_hash: u64,
}

/// A TypeScript syntax error, where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{column}: SyntaxError: {message}")]
pub struct SyntaxError {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
    /// What the parser says.
    pub message: String,
}

/// Whether `path` is a TypeScript module (declaration files, `.d.ts`, are not modules).
pub fn is_typescript(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    !name.ends_with(".d.ts")
        && (name.ends_with(".ts") || name.ends_with(".mts") || name.ends_with(".cts"))
}

/// The JavaScript of the TypeScript module at `path` whose text is `source`, as an ES module
/// (`es_module`) or as CommonJS; from the cache when that text was transpiled before.
pub fn transpile(
    path: &Path,
    source: &str,
    es_module: bool,
) -> Result<Arc<Transpiled>, SyntaxError> {
    let source_hash = text_hash(source);
    // The path is part of the key: the source map names the file.
    let key = (path.to_path_buf(), source_hash, es_module);
    if let Some(hit) = cache().lock().get(&key) {
        return Ok(hit.clone());
    }
    let transpiled = Arc::new(transpile_uncached(path, source, es_module, source_hash)?);
    let mut cache = cache().lock();
    if cache.len() >= CACHE_ENTRIES {
        // Not an LRU: a full cache starts afresh, which is rare and only costs a transpile each.
        cache.clear();
    }
    cache.insert(key, transpiled.clone());
    Ok(transpiled)
}

/// The key of a transpiled module: its file, a hash of its text, and whether it is an ES module.
type CacheKey = (PathBuf, u64, bool);

/// Transpiled modules, for every isolate of the process.
fn cache() -> &'static Mutex<HashMap<CacheKey, Arc<Transpiled>>> {
    static CACHE: OnceLock<Mutex<HashMap<CacheKey, Arc<Transpiled>>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

fn transpile_uncached(
    path: &Path,
    source: &str,
    es_module: bool,
    source_hash: u64,
) -> Result<Transpiled, SyntaxError> {
    let specifier = deno_ast::ModuleSpecifier::from_file_path(path)
        .unwrap_or_else(|()| deno_ast::ModuleSpecifier::parse("file:///module.ts").unwrap());
    let media_type = match path.extension().and_then(|e| e.to_str()) {
        Some("mts") => MediaType::Mts,
        Some("cts") => MediaType::Cts,
        _ => MediaType::TypeScript,
    };
    let parsed = deno_ast::parse_module(ParseParams {
        specifier,
        text: source.into(),
        media_type,
        capture_tokens: false,
        scope_analysis: false,
        maybe_syntax: None,
    })
    .map_err(|diagnostic| syntax_error(&diagnostic))?;
    // The parser recovers from some errors; they are still errors in the handler's code.
    if let Some(diagnostic) = parsed.diagnostics().first() {
        return Err(syntax_error(diagnostic));
    }
    let emitted = parsed
        .transpile(
            &TranspileOptions {
                decorators: DecoratorsTranspileOption::Ecma,
                jsx: None,
                ..Default::default()
            },
            &TranspileModuleOptions {
                module_kind: Some(if es_module {
                    SwcModuleKind::Esm
                } else {
                    SwcModuleKind::Cjs
                }),
            },
            &EmitOptions {
                source_map: SourceMapOption::Separate,
                inline_sources: true,
                ..Default::default()
            },
        )
        .map_err(|error| SyntaxError {
            line: 1,
            column: 1,
            message: error.to_string(),
        })?
        .into_source();
    Ok(Transpiled {
        code: emitted.text.into(),
        source_map: emitted.source_map.map(|map| map.into_bytes().into()),
        source_hash,
    })
}

/// A parser diagnostic with its place.
fn syntax_error(diagnostic: &ParseDiagnostic) -> SyntaxError {
    let position = diagnostic.display_position();
    SyntaxError {
        line: position.line_number,
        column: position.column_number,
        message: diagnostic.message().to_string(),
    }
}

/// A hash of a module's text.
pub fn text_hash(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_go_and_decorators_become_javascript() {
        let source = r#"
            interface Order { id: number }
            type Id = number;
            enum Kind { A, B }
            function decorate(options: { name: string }) {
              return (target: Function, context: ClassDecoratorContext) => { (target as any).options = options; };
            }
            @decorate({ name: "x" })
            export class Thing<T> { static of<U>(value: U): U { return value; } }
            export function onMessage(message: string): string { return `${Kind.B} ${message}`; }
        "#;
        let out = transpile(Path::new("/w/p/h.ts"), source, true).unwrap();
        assert!(!out.code.contains("interface"), "{}", out.code);
        assert!(!out.code.contains(": string"), "{}", out.code);
        assert!(!out.code.contains("@decorate"), "{}", out.code);
        assert!(out.source_map.is_some());
        let again = transpile(Path::new("/w/p/h.ts"), source, true).unwrap();
        assert!(
            Arc::ptr_eq(&out, &again),
            "the second transpile comes from the cache"
        );
    }

    #[test]
    fn syntax_errors_say_where() {
        let error = transpile(Path::new("/w/p/bad.ts"), "const x: number = ;\n", true).unwrap_err();
        assert_eq!((error.line, error.column), (1, 19), "{error}");
    }

    #[test]
    fn declaration_files_are_not_modules() {
        assert!(is_typescript(Path::new("a/OrderWebsocket.ts")));
        assert!(is_typescript(Path::new("a/b.mts")));
        assert!(!is_typescript(Path::new("a/types.d.ts")));
        assert!(!is_typescript(Path::new("a/b.js")));
    }
}
