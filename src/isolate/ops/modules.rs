//! Module files for handler code: resolving a specifier (a `file:` URL, a relative or workspace
//! path) inside the workspace, reading it for `require()`, and recording the handler's exports.
//! The ES module loader (`isolate/loader.rs`) resolves through the same [`resolve_module`].

use std::path::PathBuf;

use deno_core::{op2, ModuleSpecifier, OpState};

use super::context::IsolateContext;
use crate::workspace::modules::{Importer, ModuleError, ModuleFiles};

/// The runtime's JavaScript compiles a CommonJS module inside a function whose head shares the
/// module's first line (`runtime_js/07_commonjs.js`), so positions on that line are shifted by
/// the head's length.
pub const COMMONJS_PREFIX: &str = "(function (exports, require, module, __filename, __dirname) {";

/// A module file found inside the workspace.
#[derive(Debug, Clone)]
pub struct ResolvedModule {
    /// Canonical path.
    pub path: PathBuf,
    /// `file://` URL, used as the module's name in stack traces.
    pub url: ModuleSpecifier,
}

/// Resolves `specifier` as imported by the module at URL `referrer` ("" for the workspace root):
/// remote URLs are refused, `file:` URLs and paths go through the workspace's resolver.
pub fn resolve_module(
    files: &ModuleFiles,
    specifier: &str,
    referrer: &str,
) -> Result<ResolvedModule, ModuleError> {
    let referrer_file = ModuleSpecifier::parse(referrer)
        .ok()
        .and_then(|url| url.to_file_path().ok());
    let importer = match &referrer_file {
        Some(path) => Importer::File(path),
        None if referrer.is_empty() => Importer::Workspace,
        None => Importer::Named(referrer),
    };
    let file_url = match ModuleSpecifier::parse(specifier) {
        Ok(url) if url.scheme() != "file" => {
            return Err(ModuleError::Remote {
                specifier: specifier.to_string(),
                from: files.from_clause(importer),
            })
        }
        Ok(url) => Some(
            url.to_file_path()
                .map_err(|()| ModuleError::OutsideWorkspace {
                    specifier: specifier.to_string(),
                    from: files.from_clause(importer),
                    reason: "not a valid file URL".into(),
                })?,
        ),
        Err(_) => None,
    };
    let path = files.resolve(specifier, file_url.as_deref(), importer)?;
    let url = ModuleSpecifier::from_file_path(&path).map_err(|()| ModuleError::Unreadable {
        path: files.display(&path),
        reason: "not a valid path for a module URL".into(),
    })?;
    Ok(ResolvedModule { path, url })
}

/// A module error as JavaScript sees it: a `TypeError` for a module that may not or cannot be
/// imported, an `Error` for one that could not be read.
#[derive(Debug, thiserror::Error, deno_error::JsError)]
pub enum ModuleOpError {
    /// Remote, outside the workspace, or not found.
    #[class(type)]
    #[error(transparent)]
    Refused(ModuleError),
    /// A TypeScript module that does not parse.
    #[class(syntax)]
    #[error(transparent)]
    Syntax(ModuleError),
    /// Found but unreadable.
    #[class(generic)]
    #[error(transparent)]
    Unreadable(ModuleError),
}

impl From<ModuleError> for ModuleOpError {
    fn from(error: ModuleError) -> Self {
        match error {
            ModuleError::Unreadable { .. } => ModuleOpError::Unreadable(error),
            ModuleError::Syntax { .. } => ModuleOpError::Syntax(error),
            _ => ModuleOpError::Refused(error),
        }
    }
}

/// Returns `[displayPath, url, source, kind]` of the module `specifier` as required from `referrer`.
#[op2]
#[serde]
pub fn op_sb_read_module(
    state: &mut OpState,
    #[string] specifier: String,
    #[string] referrer: String,
) -> Result<(String, String, String, &'static str), ModuleOpError> {
    let files = &state.borrow::<IsolateContext>().modules;
    let mut module = resolve_module(files, &specifier, &referrer)?;
    let loaded = files.read_code(&module.path)?;
    if let Some(version) = loaded.typescript {
        // The engine keeps a source map per URL: each version of a TypeScript module gets its own.
        module.url.set_query(Some(&format!("ts={version:x}")));
    }
    Ok((
        files.display(&module.path),
        module.url.to_string(),
        loaded.code.to_string(),
        loaded.kind.as_str(),
    ))
}

/// Records which optional exports (`onUpgrade`, `onTick`, ...) the handler's new code has.
#[op2(fast)]
pub fn op_sb_handler_exports(state: &mut OpState, #[string] names: &str) {
    let names: Vec<&str> = names.split(',').collect();
    state
        .borrow::<IsolateContext>()
        .features
        .set_exports(&names);
}
