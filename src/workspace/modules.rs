//! Handler modules as files: what kind of module a file is, which names are the runtime's
//! built-in modules, and [`ModuleFiles`], the record one isolate keeps of the files its code was
//! read from (to tell when it must be reloaded). Finding a file goes through the workspace's one
//! resolver ([`WorkspacePaths`]); turning files into engine modules is the isolate's business.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::paths::{PathError, WorkspacePaths};
use super::typescript::{is_typescript, text_hash, transpile, Transpiled};

/// The built-in API modules, by every name handlers import them with: listed here once; the
/// isolate gives each [`BuiltinModule`] its code.
pub const BUILTIN_MODULES: &[(&str, BuiltinModule)] = &[
    ("net/websockets", BuiltinModule::Websockets),
    ("net/v4/websockets", BuiltinModule::Websockets),
    ("sdk/net", BuiltinModule::SdkNet),
    ("@aerokit/sdk/net", BuiltinModule::SdkNet),
    ("@dirigible/net", BuiltinModule::SdkNet),
];

/// What a built-in module provides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuiltinModule {
    /// Dirigible's `net/websockets` functions.
    Websockets,
    /// Dirigible's SDK module, with `websockets` as a member.
    SdkNet,
}

impl BuiltinModule {
    /// The built-in module named `specifier`, if it is one.
    pub fn named(specifier: &str) -> Option<BuiltinModule> {
        BUILTIN_MODULES
            .iter()
            .find(|(name, _)| *name == specifier)
            .map(|(_, module)| *module)
    }

    /// The name the runtime's JavaScript knows this module by.
    pub fn key(self) -> &'static str {
        match self {
            BuiltinModule::Websockets => "websockets",
            BuiltinModule::SdkNet => "sdk/net",
        }
    }
}

/// How a module file is to be evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleKind {
    /// An ES module (`import`/`export`).
    EsModule,
    /// A CommonJS module (`require`/`module.exports`).
    CommonJs,
    /// A JSON file: its value is the module's exports.
    Json,
}

impl ModuleKind {
    /// The kind's name, as the runtime's JavaScript knows it.
    pub fn as_str(self) -> &'static str {
        match self {
            ModuleKind::EsModule => "esm",
            ModuleKind::CommonJs => "cjs",
            ModuleKind::Json => "json",
        }
    }

    /// `.mjs`/`.mts` and `.cjs`/`.cts` say it; a `.js` or `.ts` file is an ES module when it has
    /// top-level `import`/`export` statements, as users of Dirigible write both styles.
    pub fn of(path: &Path, source: &str) -> ModuleKind {
        match path.extension().and_then(|e| e.to_str()) {
            Some("mjs" | "mts") => ModuleKind::EsModule,
            Some("cjs" | "cts") => ModuleKind::CommonJs,
            Some("json") => ModuleKind::Json,
            _ if has_module_syntax(source) => ModuleKind::EsModule,
            _ => ModuleKind::CommonJs,
        }
    }
}

/// Whether a line (outside block comments) starts with an `import` or `export` statement.
fn has_module_syntax(source: &str) -> bool {
    let mut in_block_comment = false;
    for line in source.lines() {
        let mut line = line.trim_start();
        if in_block_comment {
            match line.find("*/") {
                Some(end) => {
                    in_block_comment = false;
                    line = line[end + 2..].trim_start();
                }
                None => continue,
            }
        }
        if line.starts_with("/*") && !line.contains("*/") {
            in_block_comment = true;
            continue;
        }
        let statement = |keyword: &str| {
            line.strip_prefix(keyword).is_some_and(|rest| {
                rest.starts_with(|c: char| c.is_whitespace() || matches!(c, '{' | '*' | '"' | '\''))
            })
        };
        if statement("import") || statement("export") {
            return true;
        }
    }
    false
}

/// Why a module could not be resolved or read. Messages name the specifier and the importer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModuleError {
    /// A URL with a scheme other than `file:`.
    #[error("cannot import {specifier:?}{from}: remote modules are not allowed; copy the code into the workspace")]
    Remote {
        /// What was imported.
        specifier: String,
        /// " from importer", or nothing.
        from: String,
    },
    /// The module would be outside the workspace.
    #[error("cannot import {specifier:?}{from}: {reason}")]
    OutsideWorkspace {
        /// What was imported.
        specifier: String,
        /// " from importer", or nothing.
        from: String,
        /// Why, and what to write instead.
        reason: String,
    },
    /// No file has that name.
    #[error("cannot find module {specifier:?}{from}: {reason}")]
    NotFound {
        /// What was imported.
        specifier: String,
        /// " from importer", or nothing.
        from: String,
        /// What was tried.
        reason: String,
    },
    /// A TypeScript module that does not parse.
    #[error("{path}:{line}:{column}: SyntaxError: {message}")]
    Syntax {
        /// The file, relative to the workspace.
        path: String,
        /// Line, from 1.
        line: usize,
        /// Column, from 1.
        column: usize,
        /// What the parser says.
        message: String,
    },
    /// The file exists but could not be read.
    #[error("cannot read module {path}: {reason}")]
    Unreadable {
        /// The file, relative to the workspace.
        path: String,
        /// The operating system's words.
        reason: String,
    },
}

/// Where an import stands: the importing module's file, if it is one.
#[derive(Debug, Clone, Copy)]
pub enum Importer<'a> {
    /// The workspace root (a handler's main module, or a module loaded by URL).
    Workspace,
    /// A module file.
    File(&'a Path),
    /// Something that is not a workspace file (a built-in module), by name.
    Named(&'a str),
}

/// The module files one isolate reads, found through the workspace's resolver, with what it
/// found in each: the isolate's code must be reloaded when one of them changes.
#[derive(Debug, Clone)]
pub struct ModuleFiles {
    /// The workspace.
    paths: WorkspacePaths,
    /// What the last load read, and what the load before it read.
    record: Arc<Mutex<Record>>,
    /// The TypeScript modules read, as transpiled last: their source maps.
    typescript: Arc<Mutex<BTreeMap<PathBuf, Arc<Transpiled>>>>,
    /// The last TypeScript syntax error met, for the load that met it to report with its place.
    syntax_error: Arc<Mutex<Option<ModuleError>>>,
    /// The workspace folder's `file:` URL (with its final `/`), as engine messages and stack
    /// traces begin the URLs of its modules.
    root_url: Option<Arc<str>>,
}

/// A module's code, ready for the engine.
#[derive(Debug, Clone)]
pub struct ModuleCode {
    /// JavaScript (TypeScript transpiled).
    pub code: Arc<str>,
    /// How it is evaluated.
    pub kind: ModuleKind,
    /// For TypeScript, a hash of its text: a version of the module, for URLs that must change
    /// with it (the engine caches source maps by URL).
    pub typescript: Option<u64>,
}

/// The files a load of a handler's code depended on.
#[derive(Debug, Default)]
struct Record {
    /// Each file the load read (with a hash of its text), or looked for and found missing or
    /// unreadable (`None`): creating, fixing or editing any of them is a change.
    files: BTreeMap<PathBuf, Option<u64>>,
    /// The record of the code that served before the load under way, kept until that load ends.
    before: Option<BTreeMap<PathBuf, Option<u64>>>,
}

impl ModuleFiles {
    /// A new, empty record for the workspace `paths`.
    pub fn new(paths: WorkspacePaths) -> Self {
        Self {
            record: Arc::default(),
            typescript: Arc::default(),
            syntax_error: Arc::default(),
            root_url: url::Url::from_directory_path(paths.root())
                .ok()
                .map(|url| url.as_str().into()),
            paths,
        }
    }

    /// The workspace.
    pub fn paths(&self) -> &WorkspacePaths {
        &self.paths
    }

    /// `file` relative to the workspace, for messages and `__filename`.
    pub fn display(&self, file: &Path) -> String {
        self.paths.display(file)
    }

    /// `text` with the `file:` URLs of workspace modules written as the workspace paths users know
    /// their files by, without the version queries reloads add (`file:///w/p/h.ts?generation=2:5:11`
    /// becomes `p/h.ts:5:11`).
    pub fn relative_urls(&self, text: &str) -> String {
        let Some(root) = self.root_url.as_deref() else {
            return text.to_string();
        };
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.find(root) {
            out.push_str(&rest[..at]);
            rest = &rest[at + root.len()..];
            let ends = |c: char| matches!(c, '?' | ':' | ')' | '"' | '\'') || c.is_whitespace();
            let path_end = rest.find(ends).unwrap_or(rest.len());
            let path = &rest[..path_end];
            // Percent-encoded characters (a space in a file name) are written as they are.
            let decoded = url::Url::parse(&format!("{root}{path}"))
                .ok()
                .and_then(|url| url.to_file_path().ok())
                .map(|file| self.display(&file));
            out.push_str(decoded.as_deref().unwrap_or(path));
            rest = &rest[path_end..];
            if rest.starts_with('?') {
                let query_end = rest[1..]
                    .find(|c: char| matches!(c, ':' | ')') || c.is_whitespace())
                    .map_or(rest.len(), |end| end + 1);
                rest = &rest[query_end..];
            }
        }
        out.push_str(rest);
        out
    }

    /// Where a stack trace's first frame in a workspace module is, as `p/h.ts:5:11`.
    pub fn first_location(&self, stack: &str) -> Option<String> {
        let root = self.root_url.as_deref()?;
        stack.lines().find_map(|line| {
            let frame = &line[line.find(root)?..];
            let frame = frame.split(')').next().unwrap_or(frame);
            let location = self.relative_urls(frame);
            let mut parts = location.rsplitn(3, ':');
            let column = parts.next()?;
            let line_number = parts.next()?;
            let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            (numeric(column) && numeric(line_number) && parts.next().is_some()).then_some(location)
        })
    }

    /// " from p/a.js" (or " from net/websockets"), for messages about an import.
    pub fn from_clause(&self, importer: Importer<'_>) -> String {
        match importer {
            Importer::Workspace => String::new(),
            Importer::File(path) => format!(" from {}", self.display(path)),
            Importer::Named(name) => format!(" from {name}"),
        }
    }

    /// Resolves `specifier` as imported by `importer`. `specifier` is a relative path, a workspace
    /// path or (`file_url`) an absolute path an importer gave as a `file:` URL.
    pub fn resolve(
        &self,
        specifier: &str,
        file_url: Option<&Path>,
        importer: Importer<'_>,
    ) -> Result<PathBuf, ModuleError> {
        let from = self.from_clause(importer);
        let importer_file = match importer {
            Importer::File(path) => Some(path),
            _ => None,
        };
        let found = match file_url {
            Some(path) => self.paths.module_at(path),
            None => self.paths.module(specifier, importer_file),
        };
        let outside = |reason: String| ModuleError::OutsideWorkspace {
            specifier: specifier.to_string(),
            from: from.clone(),
            reason,
        };
        found.map_err(|error| match error {
            PathError::Absolute => outside(
                "absolute paths are not allowed: write ./relative/path or project/path from the workspace root".into(),
            ),
            PathError::LeavesBoundary | PathError::ParentComponent | PathError::Empty => {
                outside("it leaves the workspace".into())
            }
            PathError::LinkOut { link, target } => outside(format!(
                "{link} is a link to {}, outside the workspace",
                target.display()
            )),
            PathError::NoProject(_) => ModuleError::NotFound {
                specifier: specifier.to_string(),
                from: from.clone(),
                reason: format!(
                    "it is neither a built-in module ({}) nor a path in a project of the workspace",
                    BUILTIN_MODULES
                        .iter()
                        .map(|(name, _)| *name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            },
            PathError::NotFound { base, tried } => {
                // Any of these appearing later must be noticed as a change.
                let mut record = self.record.lock();
                for candidate in tried {
                    record.files.entry(candidate).or_insert(None);
                }
                ModuleError::NotFound {
                    specifier: specifier.to_string(),
                    from: from.clone(),
                    reason: format!(
                        "no file {} (tried .js, .mjs, .cjs, .ts, .mts, .cts, .json and index files)",
                        self.display(&base)
                    ),
                }
            }
            PathError::Unresolvable { path, reason } => ModuleError::Unreadable { path, reason },
        })
    }

    /// Reads a resolved module's text, and records what was read (or that it could not be).
    pub fn read(&self, file: &Path) -> Result<String, ModuleError> {
        let text = std::fs::read_to_string(file);
        self.record
            .lock()
            .files
            .insert(file.to_path_buf(), text.as_deref().ok().map(text_hash));
        text.map_err(|e| ModuleError::Unreadable {
            path: self.display(file),
            reason: e.to_string(),
        })
    }

    /// A module's code, ready for the engine: its text (recorded as read), and for TypeScript the
    /// transpiled JavaScript.
    pub fn read_code(&self, file: &Path) -> Result<ModuleCode, ModuleError> {
        let source = self.read(file)?;
        let kind = ModuleKind::of(file, &source);
        if kind == ModuleKind::Json || !is_typescript(file) {
            return Ok(ModuleCode {
                code: source.into(),
                kind,
                typescript: None,
            });
        }
        match transpile(file, &source, kind == ModuleKind::EsModule) {
            Ok(transpiled) => {
                let code = ModuleCode {
                    code: transpiled.code.clone(),
                    kind,
                    typescript: Some(transpiled.source_hash),
                };
                self.typescript
                    .lock()
                    .insert(file.to_path_buf(), transpiled);
                Ok(code)
            }
            Err(error) => {
                let error = ModuleError::Syntax {
                    path: self.display(file),
                    line: error.line,
                    column: error.column,
                    message: error.message,
                };
                *self.syntax_error.lock() = Some(error.clone());
                Err(error)
            }
        }
    }

    /// The source map of a TypeScript module, as last transpiled.
    pub fn source_map(&self, file: &Path) -> Option<Arc<[u8]>> {
        self.typescript.lock().get(file)?.source_map.clone()
    }

    /// The TypeScript syntax error met since the last call, if any (a load that failed on one
    /// reports it with its place, whatever the engine made of it).
    pub fn take_syntax_error(&self) -> Option<ModuleError> {
        self.syntax_error.lock().take()
    }

    /// Files the code depends on that are not as they were when it was loaded (edited, created,
    /// removed, made readable or unreadable).
    pub fn changed_files(&self) -> Vec<PathBuf> {
        self.record
            .lock()
            .files
            .iter()
            .filter(|(path, hash)| file_state(path) != **hash)
            .map(|(path, _)| path.clone())
            .collect()
    }

    /// A load of the module graph begins: what it reads is recorded afresh, and the record of the
    /// code serving now is kept until the load ends.
    pub fn begin_load(&self) {
        let mut record = self.record.lock();
        let before = std::mem::take(&mut record.files);
        record.before = Some(before);
    }

    /// The load succeeded: its record is the code's.
    pub fn load_succeeded(&self) {
        self.record.lock().before = None;
    }

    /// The load failed: the old code keeps serving, but only a change made after this attempt
    /// calls for another: to what the attempt read (a file it could not read or find, once
    /// fixed, included), or to a file of the old code that the attempt did not reach (recorded
    /// as it is now).
    pub fn load_failed(&self) {
        let mut record = self.record.lock();
        if let Some(before) = record.before.take() {
            for path in before.into_keys() {
                record
                    .files
                    .entry(path)
                    .or_insert_with_key(|path| file_state(path));
            }
        }
    }
}

/// What a module file holds now: a hash of its text, or `None` if it cannot be read.
fn file_state(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok().as_deref().map(text_hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_module_style() {
        let p = Path::new("h.js");
        assert_eq!(
            ModuleKind::of(p, "export function onMessage(m) {}"),
            ModuleKind::EsModule
        );
        assert_eq!(
            ModuleKind::of(p, "import { websockets } from \"sdk/net\";"),
            ModuleKind::EsModule
        );
        assert_eq!(
            ModuleKind::of(p, "exports.onMessage = function (m) {};"),
            ModuleKind::CommonJs
        );
        assert_eq!(
            ModuleKind::of(p, "const x = await import('./y.js');"),
            ModuleKind::CommonJs
        );
        assert_eq!(
            ModuleKind::of(p, "/*\nexport function a() {}\n*/\nexports.a = 1;"),
            ModuleKind::CommonJs
        );
        assert_eq!(ModuleKind::of(Path::new("h.mjs"), ""), ModuleKind::EsModule);
    }

    #[test]
    fn import_errors_name_the_specifier_and_the_importer() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("p")).unwrap();
        std::fs::write(dir.path().join("p/a.js"), "").unwrap();
        let files = ModuleFiles::new(WorkspacePaths::new(dir.path()).unwrap());
        let root = files.paths().root().to_path_buf();
        let importer = Importer::File(&root.join("p/a.js"));
        let error = |specifier: &str| {
            files
                .resolve(specifier, None, importer)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            files.resolve("./a", None, importer),
            Ok(root.join("p/a.js"))
        );
        assert_eq!(
            error("../../etc/passwd"),
            "cannot import \"../../etc/passwd\" from p/a.js: it leaves the workspace"
        );
        assert!(error("lodash").starts_with("cannot find module \"lodash\" from p/a.js: it is neither a built-in module (net/websockets"));
        assert_eq!(
            error("./nope"),
            "cannot find module \"./nope\" from p/a.js: no file p/nope (tried .js, .mjs, .cjs, .ts, .mts, .cts, .json and index files)"
        );
    }

    #[test]
    fn edits_are_noticed_by_the_record_of_files_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("p")).unwrap();
        std::fs::write(dir.path().join("p/a.js"), "1").unwrap();
        let files = ModuleFiles::new(WorkspacePaths::new(dir.path()).unwrap());
        files.begin_load();
        let file = files.resolve("p/a", None, Importer::Workspace).unwrap();
        assert_eq!(files.read(&file).unwrap(), "1");
        files.load_succeeded();
        assert!(files.changed_files().is_empty());
        std::fs::write(&file, "2").unwrap();
        assert_eq!(files.changed_files(), vec![file.clone()]);
        files.begin_load();
        files.read(&file).unwrap();
        files.load_succeeded();
        assert!(files.changed_files().is_empty());
    }

    /// A failed load leaves a record of what it could not read or find: fixing it is a change.
    #[test]
    fn a_failed_load_is_retried_once_what_it_missed_appears() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("p")).unwrap();
        std::fs::write(dir.path().join("p/h.js"), "good").unwrap();
        let files = ModuleFiles::new(WorkspacePaths::new(dir.path()).unwrap());
        let handler = dir.path().canonicalize().unwrap().join("p/h.js");
        files.begin_load();
        files.read(&handler).unwrap();
        files.load_succeeded();
        // The handler now imports a missing module, then becomes unreadable.
        std::fs::write(&handler, "imports ./lib").unwrap();
        assert_eq!(files.changed_files(), vec![handler.clone()]);
        files.begin_load();
        files.read(&handler).unwrap();
        let importer = Importer::File(&handler);
        assert!(files.resolve("./lib", None, importer).is_err());
        files.load_failed();
        assert!(
            files.changed_files().is_empty(),
            "nothing changed since the failed attempt"
        );
        std::fs::write(dir.path().join("p/lib.js"), "").unwrap();
        assert_eq!(
            files.changed_files().len(),
            1,
            "the missing module appeared"
        );
        std::fs::write(&handler, [0xff, 0xfe]).unwrap();
        files.begin_load();
        assert!(files.read(&handler).is_err());
        files.load_failed();
        assert!(files.changed_files().is_empty());
        std::fs::write(&handler, "fixed").unwrap();
        assert_eq!(files.changed_files(), vec![handler]);
    }
}
