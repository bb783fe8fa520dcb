//! Engine errors in words a handler author can act on: `file:line:column: message`, with
//! workspace paths instead of the engine's `file://` URLs.

use deno_core::error::{CoreError, CoreErrorKind, JsError};
use deno_core::ModuleSpecifier;

use crate::event::HandlerLoadError;
use crate::workspace::modules::{ModuleFiles, ModuleKind};

pub use super::ops::COMMONJS_PREFIX;

/// Where an error in handler code is (`file:line:column` of the first frame in a workspace
/// file, if any) and what it says.
fn location_and_message(error: &JsError, modules: &ModuleFiles) -> (Option<String>, String) {
    let location = error
        .frames
        .iter()
        .find(|f| {
            f.file_name
                .as_deref()
                .is_some_and(|n| n.starts_with("file:"))
        })
        .map(|frame| {
            let url = frame.file_name.as_deref().unwrap_or_default();
            let line = frame.line_number.unwrap_or(0);
            let mut column = frame.column_number.unwrap_or(0);
            if line == 1 && is_commonjs_url(url) {
                column = (column - COMMONJS_PREFIX.len() as i64).max(1);
            }
            format!("{}:{line}:{column}", relative_url(url, modules))
        });
    let message = relative_urls_in(&error.exception_message, modules);
    let message = message
        .strip_prefix("Uncaught ")
        .unwrap_or(&message)
        .to_string();
    (location, message)
}

/// A JavaScript error thrown while loading the handler `file`.
pub fn js_load_error(file: &str, error: &JsError, modules: &ModuleFiles) -> HandlerLoadError {
    let (location, message) = location_and_message(error, modules);
    HandlerLoadError::Code {
        file: file.to_string(),
        location,
        message,
    }
}

/// An engine error while loading the handler `file` (a JavaScript error, or a module that could
/// not be resolved).
pub fn load_error(file: &str, error: &CoreError, modules: &ModuleFiles) -> HandlerLoadError {
    match &*error.0 {
        CoreErrorKind::Js(js) => js_load_error(file, js, modules),
        _ => HandlerLoadError::Code {
            file: file.to_string(),
            location: None,
            message: relative_urls_in(&error.to_string(), modules),
        },
    }
}

/// `location: message` of an engine error, for the log.
pub fn describe(error: &CoreError, modules: &ModuleFiles) -> String {
    match &*error.0 {
        CoreErrorKind::Js(js) => match location_and_message(js, modules) {
            (Some(location), message) => format!("{location}: {message}"),
            (None, message) => message,
        },
        _ => relative_urls_in(&error.to_string(), modules),
    }
}

/// Whether the module at `url` is CommonJS (its first line is shifted by the wrapper).
fn is_commonjs_url(url: &str) -> bool {
    ModuleSpecifier::parse(url)
        .ok()
        .and_then(|u| u.to_file_path().ok())
        .and_then(|path| {
            let source = std::fs::read_to_string(&path).ok()?;
            Some(ModuleKind::of(&path, &source) == ModuleKind::CommonJs)
        })
        .unwrap_or(false)
}

/// A module URL as the workspace path users know it by.
fn relative_url(url: &str, modules: &ModuleFiles) -> String {
    match ModuleSpecifier::parse(url)
        .ok()
        .and_then(|u| u.to_file_path().ok())
    {
        Some(path) => modules.display(&path),
        None => url.to_string(),
    }
}

/// Engine messages name modules by `file://` URL; users know them by workspace path.
fn relative_urls_in(text: &str, modules: &ModuleFiles) -> String {
    modules.relative_urls(text)
}
