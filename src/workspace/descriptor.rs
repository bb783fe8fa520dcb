//! Parsing and validating one `*.websocket` descriptor (Dirigible's format).

use std::path::{Component, Path, PathBuf};

use serde_json::{Map, Value};

/// Fields a descriptor may carry; anything else is reported as a warning.
const KNOWN_FIELDS: &[&str] = &["handler", "endpoint", "description", "engine"];

/// Extensions tried, in order, when a descriptor's `handler` has none.
pub const HANDLER_EXTENSIONS: &[&str] = &["js", "mjs", "cjs"];

/// A descriptor that parsed and whose handler module exists inside the workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// The endpoint name, unique across the workspace: the last segment of the upgrade URL.
    pub endpoint: String,
    /// The handler as written in the descriptor (`my-project/ws-handler`), used in logs and listings.
    pub handler: String,
    /// The handler module's file, canonical and inside the workspace.
    pub handler_file: PathBuf,
    /// Free text shown in listings.
    pub description: String,
    /// The `engine` field, kept only so the log can say how it was interpreted.
    pub engine: Option<String>,
    /// Non-fatal remarks (unknown fields), reported but not blocking.
    pub warnings: Vec<String>,
}

/// Why a descriptor was skipped. Each message is complete on its own: the caller prefixes the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescriptorError {
    #[error("cannot read the file: {0}")]
    Unreadable(String),
    #[error("invalid JSON at line {line}, column {column}: {message}")]
    InvalidJson {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("expected a JSON object with \"handler\" and \"endpoint\", found {0}")]
    NotAnObject(&'static str),
    #[error("missing required field \"{0}\"")]
    MissingField(&'static str),
    #[error("field \"{field}\" must be {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("invalid endpoint {0:?}: use 1-255 characters of A-Z a-z 0-9 _ . -")]
    InvalidEndpoint(String),
    #[error("handler {handler:?} {reason}")]
    HandlerOutsideWorkspace { handler: String, reason: String },
    #[error("handler {handler:?} not found: tried {tried}")]
    HandlerNotFound { handler: String, tried: String },
}

/// Parses a descriptor's text and resolves its handler against `workspace_root` (canonical).
pub fn parse_descriptor(text: &str, workspace_root: &Path) -> Result<Descriptor, DescriptorError> {
    let value: Value = serde_json::from_str(text).map_err(|e| DescriptorError::InvalidJson {
        line: e.line(),
        column: e.column(),
        message: json_error_message(&e),
    })?;
    let object = match value {
        Value::Object(object) => object,
        other => return Err(DescriptorError::NotAnObject(json_kind(&other))),
    };
    let handler = required_string(&object, "handler")?;
    let endpoint = required_string(&object, "endpoint")?;
    if !is_valid_endpoint(&endpoint) {
        return Err(DescriptorError::InvalidEndpoint(endpoint));
    }
    let description = optional_string(&object, "description")?.unwrap_or_default();
    let engine = optional_string(&object, "engine")?;
    let warnings = object
        .keys()
        .filter(|key| !KNOWN_FIELDS.contains(&key.as_str()))
        .map(|key| format!("unknown field \"{key}\" ignored"))
        .collect();
    let handler_file = resolve_handler(&handler, workspace_root)?;
    Ok(Descriptor {
        endpoint,
        handler,
        handler_file,
        description,
        engine,
        warnings,
    })
}

/// Endpoint names become URL path segments, so they are restricted to a safe set.
pub fn is_valid_endpoint(name: &str) -> bool {
    (1..=255).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Resolves a workspace-relative module path (`project/dir/module`, extension optional) to a
/// canonical file inside the workspace.
pub fn resolve_handler(handler: &str, workspace_root: &Path) -> Result<PathBuf, DescriptorError> {
    let outside = |reason: &str| DescriptorError::HandlerOutsideWorkspace {
        handler: handler.to_string(),
        reason: reason.to_string(),
    };
    let relative = Path::new(handler);
    if handler.is_empty() {
        return Err(outside(
            "is empty: name a module such as \"my-project/handler\"",
        ));
    }
    if relative.is_absolute() || handler.starts_with('/') || handler.starts_with('\\') {
        return Err(outside(
            "is an absolute path: write it from the workspace root, starting with the project folder",
        ));
    }
    if relative
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(outside("uses \"..\": it may not leave the workspace"));
    }
    let base = workspace_root.join(relative);
    let mut candidates = vec![base.clone()];
    if relative.extension().is_none() {
        candidates.extend(
            HANDLER_EXTENSIONS
                .iter()
                .map(|ext| base.with_extension(ext)),
        );
    }
    for candidate in &candidates {
        if !candidate.is_file() {
            continue;
        }
        let canonical = candidate
            .canonicalize()
            .map_err(|e| outside(&format!("cannot be resolved: {e}")))?;
        if !canonical.starts_with(workspace_root) {
            return Err(outside(&format!(
                "resolves to {} through a symbolic link: it may not leave the workspace",
                canonical.display()
            )));
        }
        return Ok(canonical);
    }
    let tried = candidates
        .iter()
        .map(|c| {
            c.strip_prefix(workspace_root)
                .unwrap_or(c)
                .display()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join(", ");
    Err(DescriptorError::HandlerNotFound {
        handler: handler.to_string(),
        tried,
    })
}

/// What the `engine` field means here, logged once per distinct value.
pub fn engine_note(engine: &str) -> String {
    format!(
        "descriptor engine {engine:?} is accepted for compatibility: every handler runs on Switchboard's \
         JavaScript engine ({})",
        crate::isolate::ENGINE_NAME
    )
}

fn required_string(
    object: &Map<String, Value>,
    field: &'static str,
) -> Result<String, DescriptorError> {
    match object.get(field) {
        None | Some(Value::Null) => Err(DescriptorError::MissingField(field)),
        Some(Value::String(s)) if s.trim().is_empty() => Err(DescriptorError::WrongType {
            field,
            expected: "a non-empty string",
        }),
        Some(Value::String(s)) => Ok(s.trim().to_string()),
        Some(_) => Err(DescriptorError::WrongType {
            field,
            expected: "a string",
        }),
    }
}

fn optional_string(
    object: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, DescriptorError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(DescriptorError::WrongType {
            field,
            expected: "a string",
        }),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// serde_json appends " at line X column Y" to its messages; the position is reported separately.
fn json_error_message(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("p/lib")).unwrap();
        std::fs::write(dir.path().join("p/h.js"), "").unwrap();
        std::fs::write(dir.path().join("p/lib/m.mjs"), "").unwrap();
        let root = dir.path().canonicalize().unwrap();
        (dir, root)
    }

    #[test]
    fn resolves_handler_with_and_without_extension() {
        let (_dir, root) = workspace();
        let d = parse_descriptor(r#"{"handler":"p/h","endpoint":"e"}"#, &root).unwrap();
        assert_eq!(d.handler_file, root.join("p/h.js"));
        let d = parse_descriptor(r#"{"handler":"p/lib/m","endpoint":"e"}"#, &root).unwrap();
        assert_eq!(d.handler_file, root.join("p/lib/m.mjs"));
        let d = parse_descriptor(r#"{"handler":"p/h.js","endpoint":"e"}"#, &root).unwrap();
        assert_eq!(d.handler_file, root.join("p/h.js"));
    }

    #[test]
    fn reports_each_kind_of_error() {
        let (_dir, root) = workspace();
        let err = |text: &str| parse_descriptor(text, &root).unwrap_err().to_string();
        assert_eq!(
            err("{\"handler\": }"),
            "invalid JSON at line 1, column 13: expected value"
        );
        assert_eq!(
            err("[]"),
            "expected a JSON object with \"handler\" and \"endpoint\", found an array"
        );
        assert_eq!(
            err(r#"{"endpoint":"e"}"#),
            "missing required field \"handler\""
        );
        assert_eq!(
            err(r#"{"handler":"p/h"}"#),
            "missing required field \"endpoint\""
        );
        assert_eq!(
            err(r#"{"handler":1,"endpoint":"e"}"#),
            "field \"handler\" must be a string"
        );
        assert_eq!(
            err(r#"{"handler":"p/h","endpoint":"a/b"}"#),
            "invalid endpoint \"a/b\": use 1-255 characters of A-Z a-z 0-9 _ . -"
        );
        assert!(err(r#"{"handler":"../x","endpoint":"e"}"#).contains("may not leave the workspace"));
        assert!(err(r#"{"handler":"/etc/passwd","endpoint":"e"}"#).contains("absolute path"));
        assert_eq!(
            err(r#"{"handler":"p/nope","endpoint":"e"}"#),
            "handler \"p/nope\" not found: tried p/nope, p/nope.js, p/nope.mjs, p/nope.cjs"
        );
    }

    #[test]
    fn unknown_fields_are_warnings() {
        let (_dir, root) = workspace();
        let d =
            parse_descriptor(r#"{"handler":"p/h","endpoint":"e","colour":"red"}"#, &root).unwrap();
        assert_eq!(d.warnings, vec!["unknown field \"colour\" ignored"]);
    }

    #[test]
    fn endpoint_names() {
        assert!(is_valid_endpoint("my-endpoint_1.v2"));
        assert!(!is_valid_endpoint(""));
        assert!(!is_valid_endpoint(&"a".repeat(256)));
        assert!(is_valid_endpoint(&"a".repeat(255)));
        assert!(!is_valid_endpoint("a b"));
    }
}
