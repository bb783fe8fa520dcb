//! The workspace: project folders holding `*.websocket` descriptors and their handler modules.
//!
//! Scanning turns the folder tree into a [`WorkspaceScan`]: the endpoints to serve and the
//! problems found on the way. The [`EndpointRegistry`] holds the endpoints being served.

mod descriptor;
mod registry;
pub mod watch;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use descriptor::{
    engine_note, is_valid_endpoint, parse_descriptor, parse_interval, resolve_handler, Descriptor,
    DescriptorError, EndpointOptions, HANDLER_EXTENSIONS,
};
pub use registry::{EndpointRegistry, RegistryChange};

/// The file extension that marks a descriptor.
pub const DESCRIPTOR_EXTENSION: &str = "websocket";

/// One endpoint to serve, as a descriptor defined it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The endpoint's name, as in `/websockets/v4/service/{name}`.
    pub name: String,
    /// The top-level project folder the descriptor is in.
    pub project: String,
    /// The descriptor's path relative to the workspace root, for logs and listings.
    pub descriptor_file: String,
    /// The handler as the descriptor wrote it.
    pub handler: String,
    /// The handler module's canonical file.
    pub handler_file: PathBuf,
    /// The descriptor's description.
    pub description: String,
    /// Per-endpoint limits and services.
    pub options: EndpointOptions,
}

/// Something wrong with one file of the workspace; the file is skipped, the rest still serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Path relative to the workspace root.
    pub file: String,
    /// What is wrong, in words a user can act on.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file, self.message)
    }
}

/// The result of scanning a workspace.
#[derive(Debug, Default, Clone)]
pub struct WorkspaceScan {
    /// Endpoints by name, each defined by exactly one valid descriptor.
    pub endpoints: BTreeMap<String, Arc<Endpoint>>,
    /// Descriptors skipped, with the reason.
    pub problems: Vec<Problem>,
    /// Remarks that did not stop a descriptor from serving (unknown fields).
    pub warnings: Vec<Problem>,
    /// Distinct `engine` values seen, so their meaning can be logged once.
    pub engines: Vec<String>,
}

/// Errors that stop a scan as a whole (per-file trouble is a [`Problem`] instead).
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("workspace {path}: {source}")]
    Unreadable {
        path: String,
        source: std::io::Error,
    },
    #[error("workspace {0} is not a directory")]
    NotADirectory(String),
}

/// Canonicalises the workspace root so that every containment check compares like with like.
pub fn canonical_root(path: &Path) -> Result<PathBuf, WorkspaceError> {
    let canonical = path
        .canonicalize()
        .map_err(|source| WorkspaceError::Unreadable {
            path: path.display().to_string(),
            source,
        })?;
    if !canonical.is_dir() {
        return Err(WorkspaceError::NotADirectory(path.display().to_string()));
    }
    Ok(canonical)
}

/// Path of `file` relative to the workspace root, with `/` separators, for messages.
pub fn relative_display(root: &Path, file: &Path) -> String {
    file.strip_prefix(root)
        .unwrap_or(file)
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Finds every descriptor under `root` (canonical) and validates it.
pub fn scan(root: &Path) -> WorkspaceScan {
    let mut scan = WorkspaceScan::default();
    let mut defined_by: BTreeMap<String, String> = BTreeMap::new();
    let mut engines = HashSet::new();
    for file in descriptor_files(root, &mut scan.problems) {
        let shown = relative_display(root, &file);
        let Some(project) = project_of(root, &file) else {
            scan.problems.push(Problem {
                file: shown,
                message: "descriptor is not inside a project folder: move it into a top-level folder of the workspace"
                    .into(),
            });
            continue;
        };
        let parsed = std::fs::read_to_string(&file)
            .map_err(|e| DescriptorError::Unreadable(e.to_string()))
            .and_then(|text| parse_descriptor(&text, root));
        let descriptor = match parsed {
            Ok(descriptor) => descriptor,
            Err(error) => {
                scan.problems.push(Problem {
                    file: shown,
                    message: error.to_string(),
                });
                continue;
            }
        };
        for warning in &descriptor.warnings {
            scan.warnings.push(Problem {
                file: shown.clone(),
                message: warning.clone(),
            });
        }
        if let Some(first) = defined_by.get(&descriptor.endpoint) {
            scan.problems.push(Problem {
                file: shown.clone(),
                message: format!(
                    "duplicate endpoint \"{}\": already defined by {first}; this descriptor is skipped",
                    descriptor.endpoint
                ),
            });
            continue;
        }
        if let Some(engine) = &descriptor.engine {
            if engines.insert(engine.clone()) {
                scan.engines.push(engine.clone());
            }
        }
        defined_by.insert(descriptor.endpoint.clone(), shown.clone());
        scan.endpoints.insert(
            descriptor.endpoint.clone(),
            Arc::new(Endpoint {
                name: descriptor.endpoint,
                project,
                descriptor_file: shown,
                handler: descriptor.handler,
                handler_file: descriptor.handler_file,
                description: descriptor.description,
                options: descriptor.options,
            }),
        );
    }
    scan
}

/// Every `*.websocket` file below `root`, in a stable order, skipping hidden folders.
fn descriptor_files(root: &Path, problems: &mut Vec<Problem>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let walker = walkdir::WalkDir::new(root)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|entry| entry.depth() == 0 || !is_hidden(entry.file_name()));
    for entry in walker {
        match entry {
            Ok(entry) => {
                let path = entry.path();
                if entry.file_type().is_file()
                    && path
                        .extension()
                        .is_some_and(|ext| ext == DESCRIPTOR_EXTENSION)
                {
                    files.push(path.to_path_buf());
                }
            }
            Err(error) => problems.push(Problem {
                file: error
                    .path()
                    .map(|p| relative_display(root, p))
                    .unwrap_or_else(|| ".".into()),
                message: format!("cannot be read: {error}"),
            }),
        }
    }
    files
}

fn is_hidden(name: &std::ffi::OsStr) -> bool {
    name.to_str().is_some_and(|n| n.starts_with('.')) || name == "node_modules"
}

/// The top-level folder containing `file`, if `file` is below one.
pub fn project_of(root: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(root).ok()?;
    let mut components = relative.components();
    let first = components.next()?;
    components.next()?;
    Some(first.as_os_str().to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_reports_duplicates_naming_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::create_dir_all(root.join("b/deep")).unwrap();
        std::fs::write(root.join("a/h.js"), "").unwrap();
        std::fs::write(
            root.join("a/one.websocket"),
            r#"{"handler":"a/h","endpoint":"x"}"#,
        )
        .unwrap();
        std::fs::write(
            root.join("b/deep/two.websocket"),
            r#"{"handler":"a/h","endpoint":"x"}"#,
        )
        .unwrap();
        std::fs::write(
            root.join("stray.websocket"),
            r#"{"handler":"a/h","endpoint":"y"}"#,
        )
        .unwrap();
        let scan = scan(&root);
        assert_eq!(scan.endpoints.len(), 1);
        assert_eq!(scan.endpoints["x"].descriptor_file, "a/one.websocket");
        assert_eq!(scan.endpoints["x"].project, "a");
        let problems: Vec<String> = scan.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            problems,
            vec![
                "b/deep/two.websocket: duplicate endpoint \"x\": already defined by a/one.websocket; this descriptor is skipped",
                "stray.websocket: descriptor is not inside a project folder: move it into a top-level folder of the workspace",
            ]
        );
    }
}
