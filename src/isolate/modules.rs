//! Module resolution for handler code: relative paths, workspace paths (`project/module`) and the
//! built-in API modules. Nothing outside the workspace and nothing remote can be loaded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use deno_core::{
    ModuleLoadOptions, ModuleLoadReferrer, ModuleLoadResponse, ModuleLoader, ModuleSource,
    ModuleSourceCode, ModuleSpecifier, ModuleType, ResolutionKind,
};
use deno_error::JsErrorBox;

/// Specifiers of the built-in API modules, each with the ES module text that re-exports it.
const BUILTIN_MODULES: &[(&str, &str)] = &[
    ("net/websockets", WEBSOCKETS_MODULE),
    ("net/v4/websockets", WEBSOCKETS_MODULE),
    ("sdk/net", SDK_NET_MODULE),
    ("@aerokit/sdk/net", SDK_NET_MODULE),
    ("@dirigible/net", SDK_NET_MODULE),
];

const WEBSOCKETS_MODULE: &str = "const websockets = globalThis.__switchboard.websockets;
export default websockets;
export const { createWebsocket, getClients, getClient, getClientByHandler, getMessage, getError,
  getMethod, isOnOpen, isOnMessage, isOnError, isOnClose, getConnections, getConnection, send,
  disconnect, broadcast, publish } = websockets;
";

const SDK_NET_MODULE: &str = "export const websockets = globalThis.__switchboard.websockets;
export default { websockets };
";

/// The URL scheme of built-in modules, as they appear in stack traces.
const BUILTIN_SCHEME: &str = "switchboard";

/// How a module file is to be evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleKind {
    EsModule,
    CommonJs,
    Json,
}

impl ModuleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ModuleKind::EsModule => "esm",
            ModuleKind::CommonJs => "cjs",
            ModuleKind::Json => "json",
        }
    }

    /// `.mjs` and `.cjs` say it; a `.js` file is an ES module when it has top-level
    /// `import`/`export` statements, as users of Dirigible write both styles in `.js` files.
    pub fn of(path: &Path, source: &str) -> ModuleKind {
        match path.extension().and_then(|e| e.to_str()) {
            Some("mjs") => ModuleKind::EsModule,
            Some("cjs") => ModuleKind::CommonJs,
            Some("json") => ModuleKind::Json,
            _ if has_module_syntax(source) => ModuleKind::EsModule,
            _ => ModuleKind::CommonJs,
        }
    }
}

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
#[derive(Debug, thiserror::Error, deno_error::JsError)]
pub enum ModuleError {
    #[class(type)]
    #[error("cannot import {specifier:?}{from}: remote modules are not allowed; copy the code into the workspace")]
    Remote { specifier: String, from: String },
    #[class(type)]
    #[error("cannot import {specifier:?}{from}: {reason}")]
    OutsideWorkspace {
        specifier: String,
        from: String,
        reason: String,
    },
    #[class(type)]
    #[error("cannot find module {specifier:?}{from}: {reason}")]
    NotFound {
        specifier: String,
        from: String,
        reason: String,
    },
    #[class(generic)]
    #[error("cannot read module {path}: {reason}")]
    Unreadable { path: String, reason: String },
}

/// A module file found inside the workspace.
#[derive(Debug, Clone)]
pub struct ResolvedModule {
    /// Canonical path.
    pub path: PathBuf,
    /// `file://` URL, used as the module's name in stack traces.
    pub url: ModuleSpecifier,
}

/// Resolves specifiers against the workspace root (canonical).
#[derive(Debug, Clone)]
pub struct WorkspaceResolver {
    root: PathBuf,
    /// Every module file this resolver read, with a hash of the text it read: an isolate is
    /// reloaded when one of its files no longer has that text.
    loaded: Arc<Mutex<BTreeMap<PathBuf, u64>>>,
}

impl WorkspaceResolver {
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            loaded: Arc::default(),
        }
    }

    /// The same workspace, with its own record of the files it reads (one per isolate).
    pub fn for_new_isolate(&self) -> Self {
        Self::new(self.root.clone())
    }

    /// Files read so far whose text on disk has changed (or that are gone).
    pub fn changed_files(&self) -> Vec<PathBuf> {
        self.loaded
            .lock()
            .iter()
            .filter(|(path, hash)| {
                std::fs::read_to_string(path)
                    .map(|text| text_hash(&text))
                    .ok()
                    != Some(**hash)
            })
            .map(|(path, _)| path.clone())
            .collect()
    }

    /// Starts a new record of files read (before a module graph is loaded again).
    pub fn forget_loaded(&self) {
        self.loaded.lock().clear();
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path relative to the workspace, for messages and `__filename`.
    pub fn display(&self, path: &Path) -> String {
        crate::workspace::relative_display(&self.root, path)
    }

    fn referrer_clause(&self, referrer: &str) -> String {
        match ModuleSpecifier::parse(referrer)
            .ok()
            .and_then(|u| u.to_file_path().ok())
        {
            Some(path) => format!(" from {}", self.display(&path)),
            None if referrer.is_empty() => String::new(),
            None => format!(" from {referrer}"),
        }
    }

    /// Resolves `specifier` as imported by the module at URL `referrer` ("" for the workspace root).
    pub fn resolve_file(
        &self,
        specifier: &str,
        referrer: &str,
    ) -> Result<ResolvedModule, ModuleError> {
        let from = self.referrer_clause(referrer);
        let outside = |reason: &str| ModuleError::OutsideWorkspace {
            specifier: specifier.to_string(),
            from: from.clone(),
            reason: reason.to_string(),
        };
        let not_found = |reason: String| ModuleError::NotFound {
            specifier: specifier.to_string(),
            from: from.clone(),
            reason,
        };
        if let Ok(url) = ModuleSpecifier::parse(specifier) {
            if url.scheme() != "file" {
                return Err(ModuleError::Remote {
                    specifier: specifier.to_string(),
                    from: from.clone(),
                });
            }
        }
        let base = if specifier.starts_with("file:") {
            ModuleSpecifier::parse(specifier)
                .ok()
                .and_then(|u| u.to_file_path().ok())
                .ok_or_else(|| outside("not a valid file URL"))?
        } else if specifier.starts_with("./") || specifier.starts_with("../") {
            let referrer_dir = ModuleSpecifier::parse(referrer)
                .ok()
                .and_then(|u| u.to_file_path().ok())
                .and_then(|p| p.parent().map(Path::to_path_buf))
                .unwrap_or_else(|| self.root.clone());
            normalize(&referrer_dir.join(specifier))
        } else if specifier.starts_with('/') || specifier.starts_with('\\') {
            return Err(outside(
                "absolute paths are not allowed: write ./relative/path or project/path from the workspace root",
            ));
        } else {
            let project = specifier.split('/').next().unwrap_or_default();
            if project.is_empty() || !self.root.join(project).is_dir() || project == ".." {
                return Err(not_found(format!(
                    "it is neither a built-in module ({}) nor a path in a project of the workspace",
                    builtin_names().join(", ")
                )));
            }
            normalize(&self.root.join(specifier))
        };
        if !base.starts_with(&self.root) {
            return Err(outside("it leaves the workspace"));
        }
        let file = candidates(&base)
            .into_iter()
            .find(|c| c.is_file())
            .ok_or_else(|| {
                not_found(format!(
                    "no file {} (tried .js, .mjs, .cjs, .json and index.js)",
                    self.display(&base)
                ))
            })?;
        let path = file.canonicalize().map_err(|e| ModuleError::Unreadable {
            path: self.display(&file),
            reason: e.to_string(),
        })?;
        if !path.starts_with(&self.root) {
            return Err(outside(&format!(
                "{} is a link to {}, outside the workspace",
                self.display(&file),
                path.display()
            )));
        }
        let url =
            ModuleSpecifier::from_file_path(&path).map_err(|()| outside("not a valid path"))?;
        Ok(ResolvedModule { path, url })
    }

    /// Reads a resolved module's text.
    pub fn read(&self, module: &ResolvedModule) -> Result<String, ModuleError> {
        let text = std::fs::read_to_string(&module.path).map_err(|e| ModuleError::Unreadable {
            path: self.display(&module.path),
            reason: e.to_string(),
        })?;
        self.loaded
            .lock()
            .insert(module.path.clone(), text_hash(&text));
        Ok(text)
    }
}

fn text_hash(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

fn builtin_names() -> Vec<&'static str> {
    BUILTIN_MODULES.iter().map(|(name, _)| *name).collect()
}

fn builtin_source(specifier: &str) -> Option<&'static str> {
    BUILTIN_MODULES
        .iter()
        .find(|(name, _)| *name == specifier)
        .map(|(_, source)| *source)
}

fn candidates(base: &Path) -> Vec<PathBuf> {
    let mut list = vec![base.to_path_buf()];
    let name = base
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for ext in ["js", "mjs", "cjs", "json"] {
        list.push(base.with_file_name(format!("{name}.{ext}")));
    }
    list.push(base.join("index.js"));
    list.push(base.join("index.mjs"));
    list
}

/// Removes `.` and `..` lexically, so a path that climbs out is caught before touching the disk.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// deno_core's view of the resolver: ES module imports.
pub struct WorkspaceModuleLoader {
    pub resolver: WorkspaceResolver,
}

impl ModuleLoader for WorkspaceModuleLoader {
    fn resolve(
        &self,
        specifier: &str,
        referrer: &str,
        _kind: ResolutionKind,
    ) -> Result<ModuleSpecifier, JsErrorBox> {
        if builtin_source(specifier).is_some() {
            return ModuleSpecifier::parse(&format!("{BUILTIN_SCHEME}:{specifier}"))
                .map_err(JsErrorBox::from_err);
        }
        if specifier.starts_with(&format!("{BUILTIN_SCHEME}:")) {
            return ModuleSpecifier::parse(specifier).map_err(JsErrorBox::from_err);
        }
        let mut url = self
            .resolver
            .resolve_file(specifier, referrer)
            .map(|m| m.url)
            .map_err(JsErrorBox::from_err)?;
        // A reloaded handler's graph is loaded under new URLs, so that every module of it is
        // instantiated afresh: the importer's generation passes on to what it imports.
        let generation_of = |url: &str| {
            ModuleSpecifier::parse(url)
                .ok()
                .filter(|u| u.scheme() == "file")
                .and_then(|u| u.query().map(str::to_string))
        };
        url.set_query(
            generation_of(specifier)
                .or_else(|| generation_of(referrer))
                .as_deref(),
        );
        Ok(url)
    }

    fn load(
        &self,
        specifier: &ModuleSpecifier,
        _referrer: Option<&ModuleLoadReferrer>,
        _options: ModuleLoadOptions,
    ) -> ModuleLoadResponse {
        ModuleLoadResponse::Sync(self.load_sync(specifier).map_err(JsErrorBox::from_err))
    }
}

impl WorkspaceModuleLoader {
    fn load_sync(&self, specifier: &ModuleSpecifier) -> Result<ModuleSource, ModuleError> {
        if specifier.scheme() == BUILTIN_SCHEME {
            let source = builtin_source(specifier.path()).ok_or_else(|| ModuleError::NotFound {
                specifier: specifier.to_string(),
                from: String::new(),
                reason: "no such built-in module".into(),
            })?;
            return Ok(javascript(source.to_string(), specifier));
        }
        let module = self.resolver.resolve_file(specifier.as_str(), "")?;
        let source = self.resolver.read(&module)?;
        let code = match ModuleKind::of(&module.path, &source) {
            ModuleKind::EsModule => source,
            // A CommonJS or JSON module imported from an ES module is its `module.exports`.
            ModuleKind::CommonJs | ModuleKind::Json => format!(
                "export default globalThis.__switchboard.requireFromEsm({});\n",
                serde_json::to_string(module.url.as_str()).unwrap_or_default()
            ),
        };
        Ok(javascript(code, specifier))
    }
}

fn javascript(code: String, specifier: &ModuleSpecifier) -> ModuleSource {
    ModuleSource::new(
        ModuleType::JavaScript,
        ModuleSourceCode::String(code.into()),
        specifier,
        None,
    )
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
    fn refuses_paths_out_of_the_workspace() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("p")).unwrap();
        std::fs::write(root.join("p/a.js"), "").unwrap();
        let resolver = WorkspaceResolver::new(root.clone());
        let referrer = ModuleSpecifier::from_file_path(root.join("p/a.js")).unwrap();
        assert_eq!(
            resolver
                .resolve_file("./a", referrer.as_str())
                .unwrap()
                .path,
            root.join("p/a.js")
        );
        assert_eq!(
            resolver.resolve_file("p/a", "").unwrap().path,
            root.join("p/a.js")
        );
        let err = resolver
            .resolve_file("../../etc/passwd", referrer.as_str())
            .unwrap_err()
            .to_string();
        assert!(err.contains("leaves the workspace"), "{err}");
        let err = resolver
            .resolve_file("https://example.com/x.js", referrer.as_str())
            .unwrap_err()
            .to_string();
        assert!(err.contains("remote modules are not allowed"), "{err}");
        let err = resolver
            .resolve_file("lodash", referrer.as_str())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("cannot find module \"lodash\" from p/a.js"),
            "{err}"
        );
    }
}
